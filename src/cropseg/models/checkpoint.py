"""Loading self-describing checkpoints (no config file needed) and showing what they hold."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from cropseg.command import Command
from cropseg.errors import UserError

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict; a missing file or a non-cropseg checkpoint is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "cropseg" not in ckpt or "hyper_parameters" not in ckpt:
        raise UserError(f"{path}: not a cropseg checkpoint (no cropseg metadata)")
    return ckpt


def load_model(path: str | Path | dict[str, Any], map_location: str | torch.device = "cpu"):
    """The trained SegmentationModule in eval mode, from the checkpoint alone (a path, or one already read)."""
    from .module import SegmentationModule

    ckpt = path if isinstance(path, dict) else read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    hp["encoder_weights"] = None  # the weights come from the checkpoint; never download
    model = SegmentationModule(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval()


def init_weights(model, path: str | Path, data_bands: list[str]) -> None:
    """Fine-tuning: start ``model`` from the weights of checkpoint ``path`` (same bands, same network)."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    bands = list(hp.get("bands") or [])
    if bands != list(data_bands):
        raise UserError(f"init_from={path}: the checkpoint's bands {bands} differ from data.bands "
                        f"{list(data_bands)}")
    for key in ("arch", "encoder"):
        if str(hp.get(key)) != str(model.hparams[key]):
            raise UserError(f"init_from={path}: the checkpoint's model.{key}={hp.get(key)} differs from "
                            f"model.{key}={model.hparams[key]} (set model.{key}={hp.get(key)})")
    if hp.get("normalization", {}).get("min") != model.hparams.normalization["min"] or \
            hp.get("normalization", {}).get("max") != model.hparams.normalization["max"]:
        log.warning("init_from: the checkpoint was trained with another normalization than data.normalization")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"init_from={path}: weights do not fit model={model.hparams.arch} "
                        f"({str(err).splitlines()[0]})") from None
    log.info("init_from: weights from %s", path)


def summary(path: str | Path) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    keys = ("arch", "encoder", "bands", "patch_size", "threshold", "temperature", "loss", "normalization")
    out = {k: hp.get(k) for k in keys}
    out.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"), cropseg=ckpt["cropseg"])
    return out


def run_info(cfg: dict) -> int:
    print(json.dumps(summary(cfg["ckpt"]), indent=2, default=str))
    return 0


main = Command("cropseg info", "info", run_info, "Show what a cropseg checkpoint holds.", ("ckpt",)).main
