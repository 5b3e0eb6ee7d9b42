"""The sliding-window grid over a scene and the blending weights of a window.

Windows live on a virtual, padded grid: the scene is extended by ``margin`` pixels on
every side (filled by reflection when read), so that scene-edge pixels sit inside a
window rather than on its border, and windows start every ``stride`` pixels from
``-margin``; the last one is moved back so that it ends exactly at ``length + margin``.
A scene smaller than a window gets one window per axis, padded up to the window size.

Blending (how overlapping window predictions are combined, per pixel
``sum(w * p) / sum(w)``):

- ``mean``: every pixel of a window weighs 1 (the original workflow's average).
- ``cosine``: 1 in the middle, a raised-cosine taper over the overlap at each end
  (a Tukey window): neighbouring windows cross-fade smoothly, so little overlap is
  needed for seamless maps.
- ``gaussian``: a Gaussian bump (sigma = window / 4), as in nnU-Net.

Weights never reach 0 (floor ``1e-3``), so every covered pixel has a defined value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cropseg.errors import UserError

BLENDINGS = ("mean", "cosine", "gaussian")
WEIGHT_FLOOR = 1e-3


def resolve_stride(window: int, stride: int | None = None, overlap: float | None = None) -> int:
    """The stride from an explicit ``stride`` or an ``overlap`` (pixels if >= 1, else a fraction of the window)."""
    if window < 1:
        raise UserError(f"window={window}: must be a positive number of pixels")
    if stride is not None:
        stride = int(stride)
    elif overlap is not None:
        ov = float(overlap)
        if ov < 0:
            raise UserError(f"overlap={overlap}: must be >= 0")
        px = int(round(ov * window)) if ov < 1 else int(ov)
        stride = window - px
    else:
        stride = window
    if not 1 <= stride <= window:
        raise UserError(f"stride={stride}: must be between 1 and the window size {window} (overlap < window)")
    return stride


def window_starts(length: int, window: int, stride: int, margin: int = 0) -> np.ndarray:
    """Start offsets (scene coordinates, may be negative) of windows covering ``[-margin, length + margin)``."""
    if length < 1:
        raise UserError("a scene must have at least one row and one column")
    span = length + 2 * margin
    if span <= window:
        return np.asarray([-margin], dtype=np.int64)
    starts = list(range(-margin, length + margin - window + 1, stride))
    last = length + margin - window
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts, dtype=np.int64)


def weights_1d(window: int, blending: str, overlap: int) -> np.ndarray:
    t = np.arange(window, dtype=np.float64)
    if blending == "mean":
        w = np.ones(window)
    elif blending == "cosine":
        taper = max(1, min(int(overlap), window // 2))
        w = np.ones(window)
        ramp = np.sin(0.5 * np.pi * (np.arange(taper) + 0.5) / taper) ** 2
        w[:taper] = ramp
        w[window - taper:] = np.minimum(w[window - taper:], ramp[::-1])
    elif blending == "gaussian":
        sigma = window / 4.0
        c = (window - 1) / 2.0
        w = np.exp(-((t - c) ** 2) / (2 * sigma**2))
    else:
        raise UserError(f"blending={blending!r} is not known; choose one of: {', '.join(BLENDINGS)}")
    return np.maximum(w / w.max(), WEIGHT_FLOOR)


def blend_weights(window: int, blending: str = "cosine", overlap: int = 0) -> np.ndarray:
    """The (window, window) float32 weight of one window's prediction."""
    w = weights_1d(window, blending, overlap)
    return np.outer(w, w).astype(np.float32)


@dataclass(frozen=True)
class WindowGrid:
    """All windows of a scene: row starts ``ys`` and column starts ``xs`` (scene coordinates)."""

    height: int
    width: int
    window: int
    stride: int
    margin: int
    ys: np.ndarray
    xs: np.ndarray

    @classmethod
    def build(cls, height: int, width: int, window: int, stride: int, margin: int | None = None) -> "WindowGrid":
        if margin is None:
            margin = (window - stride) // 2
        margin = max(0, int(margin))
        return cls(height, width, window, stride, margin,
                   window_starts(height, window, stride, margin), window_starts(width, window, stride, margin))

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def pads_x(self) -> tuple[int, int]:
        """Columns to add left and right of the scene so that every window lies inside."""
        left = max(0, -int(self.xs[0]))
        right = max(0, int(self.xs[-1]) + self.window - self.width)
        return left, right

    def rows_final_after(self, i: int) -> int:
        """Scene rows below this index are complete once window row ``i`` has been added."""
        if i + 1 < len(self.ys):
            return int(min(max(self.ys[i + 1], 0), self.height))
        return self.height
