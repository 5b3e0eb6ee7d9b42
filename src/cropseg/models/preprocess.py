"""The model-input contract: how raw band values become network input. Implemented once, here.

A map is only worth what its input handling is worth, so every path that feeds a network
goes through :class:`Preprocess` — training items in the loader workers, whole batches on
the GPU, scene prediction, calibration and the exported ONNX/TorchScript graph:

1. bands in the checkpoint's order and in physical units (reflectance 0..1, NDVI -1..1, Dem
   metres); stored integers are scaled before (``band_scale``/``band_offset``, see
   cropseg.inference.raster) and checked against :attr:`InputSpec.units`;
2. a pixel is **nodata** where any band is not finite (NaN or inf);
3. min/max normalization ``(x - min) / (max - min)``, clipped to [0, 1] when ``clip``;
4. nodata pixels become 0 in every band, *after* normalization (:data:`NODATA_RULE`): the
   network always saw that next to clouds and scene edges, so prediction gives it the same;
5. (:class:`cropseg.models.network.CroplandModel`) network, logits / temperature, sigmoid;
   the probability is NaN where the input was nodata.

The spec is stored in every checkpoint (``hyper_parameters.input_spec``), so that a
checkpoint alone says how to feed it. Only torch is needed here: no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cropseg.bands import BAND_UNITS, Normalization
from cropseg.errors import UserError

#: What a nodata pixel becomes: 0 in every band after normalization (what training always did).
NODATA_RULE = "zero-after-normalization"


@dataclass(frozen=True)
class InputSpec:
    """Bands, their units, normalization and nodata rule a network was trained with."""

    bands: tuple[str, ...]
    normalization: Normalization
    units: tuple[str, ...] = ()
    nodata: str = NODATA_RULE

    def __post_init__(self) -> None:
        if tuple(self.normalization.bands) != tuple(self.bands):
            object.__setattr__(self, "normalization", self.normalization.select(self.bands))
        if not self.units:
            object.__setattr__(self, "units", tuple(BAND_UNITS.get(b, "unknown") for b in self.bands))
        if len(self.units) != len(self.bands):
            raise UserError(f"input spec: {len(self.bands)} bands but {len(self.units)} units")
        if self.nodata != NODATA_RULE:
            raise UserError(f"input spec: nodata rule {self.nodata!r} is not known (this cropseg knows {NODATA_RULE!r})")

    @classmethod
    def build(cls, bands: Sequence[str], normalization: Normalization | None = None) -> "InputSpec":
        """The spec of ``bands`` with ``normalization`` (default: the original workflow's ranges)."""
        bands = tuple(bands)
        return cls(bands, normalization if normalization is not None else Normalization.default(bands))

    def to_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "units": list(self.units), "normalization": self.normalization.to_dict(),
                "nodata": self.nodata}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InputSpec":
        return cls(tuple(d["bands"]), Normalization.from_dict(d["normalization"]), tuple(d.get("units") or ()),
                   str(d.get("nodata", NODATA_RULE)))


class Preprocess(torch.nn.Module):
    """Raw bands (N, C, H, W) float32, NaN = nodata → network input and nodata mask (N, 1, H, W).

    ``forward`` is out of place (for export and inference); ``finish_`` does the same float32
    operations in place (for loaders that own a fresh buffer): the results are bit-identical.
    Its buffers are not saved in the state dict: the spec, in the hyperparameters, rebuilds them.
    """

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        lo, span = spec.normalization.offset_span()
        self.register_buffer("lo", torch.from_numpy(lo).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("span", torch.from_numpy(span).view(1, -1, 1, 1), persistent=False)
        self.clip = bool(spec.normalization.clip)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """min and span on ``device``, copied there once (loaders' datasets are not moved by Lightning)."""
        if device == self.lo.device:
            return self.lo, self.span
        if device not in self._on_device:
            self._on_device[device] = (self.lo.to(device), self.span.to(device))
        return self._on_device[device]

    @staticmethod
    def nodata_mask(raw: torch.Tensor) -> torch.Tensor:
        """Pixels where any band is NaN or inf: the band sum is not finite exactly there (barring
        float32 overflow of raw values > 1e37), at a seventh of the cost of ``isfinite().all()``."""
        return ~torch.isfinite(raw.sum(dim=1, keepdim=True))

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodata = self.nodata_mask(raw)
        x = (raw - self.lo) / self.span
        if self.clip:
            x = x.clamp(0.0, 1.0)
        return torch.where(nodata, torch.zeros_like(x), x), nodata

    def finish_(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` in place on a float32 (N, C, H, W) tensor; returns the nodata mask."""
        if x.device.type == "cpu":
            # Loader workers finish every training item here, one small tensor at a time: numpy's
            # ufuncs carry less per-call overhead than torch's (a loader ~10 % faster), and float32
            # subtraction, division and clipping are exact IEEE operations in both, so the result
            # is bit-identical to ``forward`` (the parity test compares them).
            a = x.numpy()
            lo, span = self.lo.numpy(), self.span.numpy()
            nodata_np = ~np.isfinite(a.sum(axis=1, keepdims=True))
            np.subtract(a, lo, out=a)
            np.divide(a, span, out=a)
            if self.clip:
                np.clip(a, 0.0, 1.0, out=a)
            if nodata_np.any():
                np.copyto(a, 0.0, where=nodata_np)
            return torch.from_numpy(nodata_np)
        nodata = self.nodata_mask(x)
        lo, span = self._constants(x.device)
        x.sub_(lo).div_(span)
        if self.clip:
            x.clamp_(0.0, 1.0)
        x.masked_fill_(nodata, 0.0)  # no host sync on a GPU
        return nodata
