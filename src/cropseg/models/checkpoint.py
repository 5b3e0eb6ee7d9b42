"""Self-describing, versioned checkpoints: reading, upgrading, loading without Lightning.

A checkpoint holds ``cropseg.format``. Readers accept every older format and upgrade its
hyperparameters in :func:`upgrade` — the one place that knows old layouts — so that a
renamed argument never breaks old checkpoints; a newer format is refused with one line.
Loading for prediction, export and calibration (:func:`load_cropland_model`) builds the
network from the hyperparameters with SMP and torch alone (no Lightning import), and reads
the file with ``weights_only=True`` (no arbitrary code from a downloaded checkpoint).

Formats:
  0/1  ``bands`` and ``normalization`` as separate hyperparameters (format 0: no ``cropseg.format``)
  2    ``input_spec`` (cropseg.models.preprocess.InputSpec): bands, units, normalization, nodata rule
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cropseg.command import Command
from cropseg.errors import UserError

log = logging.getLogger(__name__)

#: The format this cropseg writes (and the newest it reads).
CHECKPOINT_FORMAT = 2


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, its hyperparameters upgraded to :data:`CHECKPOINT_FORMAT`.

    A missing file, a file that is not a cropseg checkpoint, or one of a newer format is a UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a (safe) checkpoint
        msg = str(err).strip().splitlines()
        why = f"{type(err).__name__}: {msg[0][:160]}" if msg else type(err).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or "cropseg" not in ckpt or "hyper_parameters" not in ckpt:
        raise UserError(f"{path}: not a cropseg checkpoint (no cropseg metadata)")
    return upgrade(ckpt, path)


def checkpoint_format(ckpt: dict[str, Any]) -> int:
    meta = ckpt.get("cropseg") or {}
    return int(meta.get("format", 0)) if isinstance(meta, dict) else 0


def upgrade(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """Bring ``ckpt``'s hyperparameters to the current format, in place; refuse newer formats."""
    from cropseg.bands import DEFAULT_BANDS, Normalization

    from .preprocess import InputSpec

    fmt = checkpoint_format(ckpt)
    if fmt > CHECKPOINT_FORMAT:
        version = (ckpt.get("cropseg") or {}).get("version", "?")
        raise UserError(f"{path}: checkpoint format {fmt} (written by cropseg {version}) is newer than this cropseg "
                        f"reads (up to {CHECKPOINT_FORMAT}); upgrade cropseg")
    hp = dict(ckpt["hyper_parameters"])
    if fmt < 2:  # bands and normalization became one input spec
        bands = tuple(hp.pop("bands", None) or DEFAULT_BANDS)
        norm = hp.pop("normalization", None)
        normalization = Normalization.from_dict(norm) if norm else Normalization.default(bands)
        hp["input_spec"] = InputSpec.build(bands, normalization).to_dict()
    ckpt["hyper_parameters"] = hp
    ckpt["cropseg"] = {**(ckpt.get("cropseg") or {}), "format": CHECKPOINT_FORMAT, "read_from_format": fmt}
    return ckpt


@dataclass
class ModelCard:
    """What a checkpoint says about its model, beside the weights."""

    arch: str
    encoder: str
    patch_size: int
    threshold: float
    temperature: float
    name: str

    @property
    def description(self) -> str:
        return f"{self.arch}-{self.encoder} ({self.name})"


def load_cropland_model(path: str | Path | dict[str, Any], map_location: str | torch.device = "cpu",
                        name: str | None = None):
    """The model (raw bands → probability) in eval mode and its card, from the checkpoint alone.

    ``path`` may be a checkpoint already read (:func:`read_checkpoint`). Needs torch and SMP, not Lightning.
    """
    from .network import CroplandModel, build_network
    from .preprocess import InputSpec

    ckpt = path if isinstance(path, dict) else read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    spec = InputSpec.from_dict(hp["input_spec"])
    net = build_network(hp["arch"], hp["encoder"], None, len(spec.bands), hp.get("arch_kwargs"))
    weights = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    where = name or (str(path) if not isinstance(path, dict) else "checkpoint")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{where}: its weights do not fit {hp['arch']}-{hp['encoder']} "
                        f"({str(err).strip().splitlines()[0]})") from None
    model = CroplandModel(spec, net, float(hp.get("temperature", 1.0))).to(map_location).eval()
    card = ModelCard(str(hp["arch"]), str(hp["encoder"]), int(hp["patch_size"]), float(hp.get("threshold", 0.5)),
                     float(hp.get("temperature", 1.0)), Path(where).name)
    return model, card


def init_weights(model, path: str | Path, data_bands: list[str]) -> None:
    """Fine-tuning: start ``model`` from the weights of checkpoint ``path`` (same bands, same network)."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    spec = hp["input_spec"]
    bands = list(spec["bands"])
    if bands != list(data_bands):
        raise UserError(f"init_from={path}: the checkpoint's bands {bands} differ from data.bands "
                        f"{list(data_bands)}")
    for key in ("arch", "encoder"):
        if str(hp.get(key)) != str(model.hparams[key]):
            raise UserError(f"init_from={path}: the checkpoint's model.{key}={hp.get(key)} differs from "
                            f"model.{key}={model.hparams[key]} (set model.{key}={hp.get(key)})")
    ours = model.hparams.input_spec["normalization"]
    if spec["normalization"]["min"] != ours["min"] or spec["normalization"]["max"] != ours["max"]:
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
    keys = ("arch", "encoder", "input_spec", "patch_size", "threshold", "temperature", "loss")
    out = {k: hp.get(k) for k in keys}
    out.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"), cropseg=ckpt["cropseg"])
    return out


def run_info(cfg: dict) -> int:
    print(json.dumps(summary(cfg["ckpt"]), indent=2, default=str))
    return 0


main = Command("cropseg info", "info", run_info, "Show what a cropseg checkpoint holds.", ("ckpt",)).main
