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


def _where(m: torch.Tensor, t: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` applied to the samples of ``t`` selected by ``m`` (no copies when all or none are)."""
    if bool(m.all()):
        return fn(t)
    if not bool(m.any()):
        return t
    t = t.clone()
    t[m] = fn(t[m])
    return t


def augment(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch; images are normalized to [0, 1] (gamma assumes it). Inputs are not modified."""
    n, dev = image.shape[0], image.device

    m = _coin(n, cfg.hflip, generator, dev)
    image, label = _where(m, image, lambda t: t.flip(-1)), _where(m, label, lambda t: t.flip(-1))
    m = _coin(n, cfg.vflip, generator, dev)
    image, label = _where(m, image, lambda t: t.flip(-2)), _where(m, label, lambda t: t.flip(-2))
    if image.shape[-1] == image.shape[-2]:
        m = _coin(n, cfg.rot90, generator, dev)
        k = int(torch.randint(1, 4, (1,), generator=generator))
        image, label = _where(m, image, lambda t: t.rot90(k, (-2, -1))), _where(m, label, lambda t: t.rot90(k, (-2, -1)))

    m = _coin(n, cfg.affine, generator, dev)
    if m.any():
        k = int(m.sum())
        angle = (torch.rand(k, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation)
        lo, hi = cfg.scale_range
        scale = lo + torch.rand(k, generator=generator) * (hi - lo)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(k)], 1),
                             torch.stack([sin, cos, torch.zeros(k)], 1)], 1).to(dev, image.dtype)
        sel = m if k < n else slice(None)
        img_m, lab_m = image[sel], label[sel]
        grid = F.affine_grid(theta, list(img_m.shape), align_corners=False)
        img_m = F.grid_sample(img_m, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        # Pixels brought in from outside the patch have no label: mark them ignored (label + 1 = 0 there).
        moved = F.grid_sample(lab_m + 1, grid.to(label.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
        lab_m = torch.where(moved > 0.5, moved - 1, torch.full_like(moved, IGNORE))
        image, label = _where(m, image, lambda t: img_m), _where(m, label, lambda t: lab_m)

    m = _coin(n, cfg.gamma, generator, dev)
    if m.any():
        lo, hi = cfg.gamma_range
        gam = (lo + torch.rand(int(m.sum()), generator=generator) * (hi - lo)).to(dev, image.dtype)
        image = _where(m, image, lambda t: t.clamp_min(0).pow(gam.view(-1, 1, 1, 1)))

    m = _coin(n, cfg.blur, generator, dev)
    image = _where(m, image, lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1))
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
