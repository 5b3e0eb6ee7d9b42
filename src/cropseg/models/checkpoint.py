"""Loading self-describing checkpoints (no config file needed) and showing what they hold."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from cropseg.errors import UserError, report_user_errors


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


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """The trained SegmentationModule in eval mode, from the checkpoint alone."""
    from .module import SegmentationModule

    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    hp["encoder_weights"] = None  # the weights come from the checkpoint; never download
    model = SegmentationModule(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval()


def summary(path: str | Path) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    keys = ("arch", "encoder", "bands", "patch_size", "threshold", "temperature", "loss", "normalization")
    out = {k: hp.get(k) for k in keys}
    out.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"), cropseg=ckpt["cropseg"])
    return out


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cropseg info", description="Show what a cropseg checkpoint holds.")
    p.add_argument("checkpoint")
    a = p.parse_args(argv)
    print(json.dumps(summary(a.checkpoint), indent=2, default=str))
    return 0
