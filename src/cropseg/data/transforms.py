"""Label-safe augmentation of batched tensors.

Every transform works on a batch (N, C, H, W) of images with labels (N, 1, H, W), drawing
its parameters per sample, so the same code runs per patch in DataLoader workers or per
batch on the GPU after transfer (where it is nearly free). Labels are moved only by
nearest-neighbour resampling; pixels that leave the patch become ``IGNORE`` in the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Label value of pixels that count for neither the loss nor the metrics (nodata, padding).
IGNORE = 255.0


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


def _coin(n: int, p: float, g: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device="cpu").to(device) < p


def augment(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch; images are normalized to [0, 1] (gamma assumes it)."""
    n, dev = image.shape[0], image.device
    image, label = image.clone(), label.clone()

    m = _coin(n, cfg.hflip, generator, dev)
    image[m], label[m] = image[m].flip(-1), label[m].flip(-1)
    m = _coin(n, cfg.vflip, generator, dev)
    image[m], label[m] = image[m].flip(-2), label[m].flip(-2)
    if image.shape[-1] == image.shape[-2]:
        m = _coin(n, cfg.rot90, generator, dev)
        k = int(torch.randint(1, 4, (1,), generator=generator))
        image[m], label[m] = image[m].rot90(k, (-2, -1)), label[m].rot90(k, (-2, -1))

    m = _coin(n, cfg.affine, generator, dev)
    if m.any():
        k = int(m.sum())
        angle = (torch.rand(k, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation)
        lo, hi = cfg.scale_range
        scale = lo + torch.rand(k, generator=generator) * (hi - lo)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(k)], 1),
                             torch.stack([sin, cos, torch.zeros(k)], 1)], 1).to(dev, image.dtype)
        grid = F.affine_grid(theta, list(image[m].shape), align_corners=False)
        image[m] = F.grid_sample(image[m], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        moved = F.grid_sample(label[m], grid.to(label.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
        inside = F.grid_sample(torch.ones_like(label[m]), grid.to(label.dtype), mode="nearest", padding_mode="zeros",
                               align_corners=False)
        label[m] = torch.where(inside > 0.5, moved, torch.full_like(moved, IGNORE))

    m = _coin(n, cfg.gamma, generator, dev)
    if m.any():
        lo, hi = cfg.gamma_range
        gam = (lo + torch.rand(int(m.sum()), generator=generator) * (hi - lo)).to(dev, image.dtype)
        image[m] = image[m].clamp_min(0).pow(gam.view(-1, 1, 1, 1))

    m = _coin(n, cfg.blur, generator, dev)
    if m.any():
        c = image.shape[1]
        kernel = torch.full((c, 1, 3, 3), 1 / 9, device=dev, dtype=image.dtype)
        image[m] = F.conv2d(F.pad(image[m], (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return image, label


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` × ``size`` window of a (C, H, W) image and its label."""
    h, w = image.shape[-2:]
    if size >= h and size >= w:
        return image, label
    y = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    x = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return image[..., y:y + size, x:x + size], label[..., y:y + size, x:x + size]
