"""Losses by name, from segmentation-models-pytorch, with nodata pixels ignored.

A loss spec is a name (``"bce"``), a ``+``-joined weighted sum (``"bce+0.5*dice"``) or a
mapping of names to weights (``{bce: 1.0, dice: 0.5}``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import segmentation_models_pytorch as smp
import torch
from torch import nn

from cropseg.data.transforms import IGNORE
from cropseg.errors import UserError

_IGN = int(IGNORE)


class MaskedBCE(nn.Module):
    """SMP's soft BCE averaged over valid pixels only (SMP's own mean also counts ignored ones)."""

    def __init__(self, smooth_factor: float | None = None) -> None:
        super().__init__()
        self.bce = smp.losses.SoftBCEWithLogitsLoss(ignore_index=_IGN, reduction="none", smooth_factor=smooth_factor)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE
        return self.bce(logits, target).sum() / valid.sum().clamp_min(1)


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": MaskedBCE,
    "dice": lambda: smp.losses.DiceLoss("binary", from_logits=True, ignore_index=_IGN),
    "jaccard": lambda: smp.losses.JaccardLoss("binary", from_logits=True, ignore_index=_IGN),
    "focal": lambda: smp.losses.FocalLoss("binary", ignore_index=_IGN),
    "lovasz": lambda: smp.losses.LovaszLoss("binary", ignore_index=_IGN),
    "tversky": lambda: smp.losses.TverskyLoss("binary", from_logits=True, ignore_index=_IGN, alpha=0.3, beta=0.7),
}


def parse_loss_spec(spec: str | Mapping[str, float]) -> dict[str, float]:
    if isinstance(spec, str):
        terms = {}
        for part in (p.strip() for p in spec.split("+")):
            if not part:
                continue
            weight, _, name = part.rpartition("*")
            try:
                terms[name.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise UserError(f"loss.terms={spec!r}: bad weight {weight!r} (write e.g. bce+0.5*dice)") from None
    else:
        terms = {str(k): float(v) for k, v in dict(spec).items()}
    if not terms:
        raise UserError("loss: no loss term given")
    for name in terms:
        if name.lower() not in LOSSES:
            raise UserError(f"loss term {name!r} is not known; choose from: {', '.join(LOSSES)} "
                            "(combine as loss.terms=bce+0.5*dice)")
    return {k.lower(): w for k, w in terms.items()}


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; remembers the terms so each can be logged."""

    def __init__(self, spec: str | Mapping[str, float]) -> None:
        super().__init__()
        self.weights = parse_loss_spec(spec)
        self.terms = nn.ModuleDict({name: LOSSES[name]() for name in self.weights})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(logits, target) for name, fn in self.terms.items()}
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, parts
