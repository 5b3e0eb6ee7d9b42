"""Test-time augmentation: average the probabilities of flipped and rotated inputs.

Cropland has no preferred orientation, so a network trained with flips and 90° rotations
should answer the same for every view of a patch; averaging the views cancels part of its
errors. Each view is undone on the output before averaging, so the average is taken pixel by
pixel on the original grid. Probabilities are averaged, not logits: a view that is very sure
cannot outvote the others.

One home for the set of views: prediction (``tta=`` in ``conf/predict.yaml``, through
``Runner``) and the accuracy benchmark use :func:`with_tta`.
"""

from __future__ import annotations

from typing import Callable

import torch

from cropseg.errors import UserError

#: A view: (transform of the input, its inverse on the output), both on (N, C, H, W) tensors.
View = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _flip(dims: tuple[int, ...]) -> View:
    f = lambda t: t.flip(dims)  # noqa: E731 - a flip is its own inverse
    return f, f


def _rot(k: int, flip: bool) -> View:
    """Rotate by k·90° after an optional horizontal flip; the inverse undoes both in reverse order."""
    def fwd(t: torch.Tensor) -> torch.Tensor:
        return (t.flip(-1) if flip else t).rot90(k, (-2, -1))

    def inv(t: torch.Tensor) -> torch.Tensor:
        t = t.rot90(-k, (-2, -1))
        return t.flip(-1) if flip else t

    return fwd, inv


#: Views per mode; the cost of prediction grows with their number.
MODES: dict[str, list[View]] = {
    "none": [(_identity, _identity)],
    "hflip": [(_identity, _identity), _flip((-1,))],
    "flips": [(_identity, _identity), _flip((-1,)), _flip((-2,)), _flip((-2, -1))],
    "d4": [_rot(k, flip) for flip in (False, True) for k in range(4)],  # the 8 symmetries of a square
}


def check_mode(mode: str, key: str = "tta") -> str:
    """``mode`` if known, else a UserError naming ``key`` and the choices."""
    if mode not in MODES:
        raise UserError(f"{key}={mode!r} is not known; choose one of: {', '.join(MODES)}")
    return mode


def views(mode: str) -> int:
    """How many network passes ``mode`` costs per batch."""
    return len(MODES[check_mode(mode)])


def with_tta(proba: Callable[[torch.Tensor], torch.Tensor], mode: str = "flips") -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``proba`` (images (N, C, H, W) -> probabilities (N, 1, H, W)) to average its views.

    Views run one after another (one batch in memory at a time, not N × views). Square inputs
    are needed for 90° rotations (``d4``) unless the network accepts the swapped shape.
    """
    chosen = MODES[check_mode(mode)]
    if len(chosen) == 1:
        return proba

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = None
        for fwd, inv in chosen:
            p = inv(proba(fwd(x)).float())
            total = p if total is None else total + p  # not in place: a view's output may be a view of its input
        return total / len(chosen)

    return averaged
