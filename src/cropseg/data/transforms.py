"""Label-safe augmentation of batched tensors.

Every transform works on a batch (N, C, H, W) of images with labels (N, 1, H, W), drawing
its parameters per sample, so the same code runs per patch in DataLoader workers or per
batch on the GPU after transfer (where it is nearly free). Labels are moved only by
nearest-neighbour resampling; pixels that leave the patch become ``IGNORE`` in the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cropseg.maps import NODATA

#: Label value of pixels that count for neither the loss nor the metrics (nodata, padding): the one
#: nodata value of cropseg (``cropseg.maps.NODATA``, 255), as a float for the float labels the losses see.
IGNORE = float(NODATA)


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5
    affine: float = 0.5  # small rotation and scale
    max_rotation: float = 20.0  # degrees
    scale_range: tuple[float, float] = (0.8, 1.2)
    gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur: float = 0.1

    @classmethod
    def from_config(cls, cfg) -> "AugmentConfig | None":
        if cfg is None or cfg is False or (hasattr(cfg, "get") and not cfg.get("enabled", True)):
            return None
        fields = {k: tuple(v) if k.endswith("_range") else v for k, v in dict(cfg).items() if k != "enabled"}
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            from cropseg.errors import UserError

            raise UserError(f"data.augment: unknown option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**fields)


def _coin(n: int, p: float, g: torch.Generator | None) -> torch.Tensor:
    """One draw per sample, on the CPU: deciding what to run never waits for the GPU."""
    return torch.rand(n, generator=g) < p


class _Batch:
    """The image and label being augmented. The caller's tensors are never written: the first
    partial update clones, later ones write in place (one copy per batch, not one per transform).

    ``gather``: apply a transform to the selected samples at once through index gathers/scatters
    (the default off the CPU) instead of one sample view at a time (cheaper on the CPU).
    """

    def __init__(self, image: torch.Tensor, label: torch.Tensor, gather: bool | None = None) -> None:
        self.image, self.label = image, label
        self._inputs = (image, label)
        self.gather = image.device.type != "cpu" if gather is None else gather

    def apply(self, m: torch.Tensor, fn) -> None:
        """``fn(image, label, samples) -> (image, label)`` on the samples selected by ``m`` (a CPU bool
        per sample); ``samples`` are their positions in the batch (CPU), for per-sample parameters
        drawn beforehand; ``fn`` returns the label it was given when it leaves labels alone."""
        if not bool(m.any()):
            return
        idx = m.nonzero().squeeze(1)
        if bool(m.all()):
            self.image, self.label = fn(self.image, self.label, idx)
        elif self.gather:
            self._write(idx.to(self.image.device), idx, fn)
        else:
            for i in idx.tolist():
                self._write(slice(i, i + 1), torch.tensor([i]), fn)

    def _write(self, where, samples: torch.Tensor, fn) -> None:
        lab_in = self.label[where]
        image, label = fn(self.image[where], lab_in, samples)
        if self.image is self._inputs[0]:
            self.image = self.image.clone()
        self.image[where] = image
        if label is not lab_in:
            if self.label is self._inputs[1]:
                self.label = self.label.clone()
            self.label[where] = label


def _flip(dim: int):
    return lambda image, label, _: (image.flip(dim), label.flip(dim))


def _gamma(t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``t ** gamma`` per sample. On the CPU through numpy, whose SIMD ``power`` is ~4x torch's there."""
    t = t.clamp_min(0)
    if t.device.type == "cpu":
        return torch.from_numpy(np.power(t.numpy(), gamma.numpy().reshape(-1, 1, 1, 1)))
    return t.pow(gamma.to(t.device, t.dtype).view(-1, 1, 1, 1))


def _box_blur3(t: torch.Tensor) -> torch.Tensor:
    """3x3 mean with replicated edges, as two 3-tap sums (~5x ``avg_pool2d`` on the CPU)."""
    p = F.pad(t, (1, 1, 1, 1), mode="replicate")
    h = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    return (h[..., :-2, :] + h[..., 1:-1, :] + h[..., 2:, :]).mul_(1.0 / 9.0)


def _affine(image: torch.Tensor, label: torch.Tensor, angle: torch.Tensor,
            scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by ``angle`` (radians) and zoom by ``scale``, per sample; label pixels from outside
    the patch → IGNORE."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(image.device, image.dtype), list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # label + 1 is 0 only where the nearest source pixel lies outside the patch.
    moved = F.grid_sample(label + 1, grid.to(label.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
    label = torch.where(moved > 0.5, moved - 1, torch.full_like(moved, IGNORE))
    return image, label


def augment(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None, gather: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch; images are normalized to [0, 1] (gamma assumes it). Inputs are not modified.

    Random draws come from ``generator`` on the CPU whatever the device, so a batch augments the
    same on any device; ``gather`` is ``_Batch``'s (None: by device).
    """
    n = image.shape[0]
    b = _Batch(image, label, gather)
    b.apply(_coin(n, cfg.hflip, generator), _flip(-1))
    b.apply(_coin(n, cfg.vflip, generator), _flip(-2))
    if image.shape[-1] == image.shape[-2]:
        m = _coin(n, cfg.rot90, generator)
        k = int(torch.randint(1, 4, (1,), generator=generator))
        b.apply(m, lambda im, lb, _: (im.rot90(k, (-2, -1)), lb.rot90(k, (-2, -1))))
    # Per-sample parameters are drawn for the whole batch first: the same draws however the
    # selected samples are then processed (gathered on a GPU, one by one on the CPU).
    m = _coin(n, cfg.affine, generator)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation)
    lo, hi = cfg.scale_range
    scale = lo + torch.rand(n, generator=generator) * (hi - lo)
    b.apply(m, lambda im, lb, i: _affine(im, lb, angle[i], scale[i]))
    m = _coin(n, cfg.gamma, generator)
    lo, hi = cfg.gamma_range
    gammas = lo + torch.rand(n, generator=generator) * (hi - lo)
    b.apply(m, lambda im, lb, i: (_gamma(im, gammas[i]), lb))
    b.apply(_coin(n, cfg.blur, generator), lambda im, lb, _: (_box_blur3(im), lb))
    return b.image, b.label


def crop_window(height: int, width: int, size: int,
                generator: torch.Generator | None = None) -> tuple[slice, slice] | None:
    """Rows and columns of a random ``size`` × ``size`` window (None: the patch is not larger)."""
    if size >= height and size >= width:
        return None
    y = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    x = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return slice(y, y + size), slice(x, x + size)


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` × ``size`` window of a (C, H, W) image and its label."""
    window = crop_window(image.shape[-2], image.shape[-1], size, generator)
    if window is None:
        return image, label
    return image[(..., *window)], label[(..., *window)]
