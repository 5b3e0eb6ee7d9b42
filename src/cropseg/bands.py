"""Band names, normalization and derived bands: the one source of truth.

Bands are named and travel with the data, the config and the checkpoint, so that
inference maps raster bands by name rather than by position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cropseg.errors import UserError

if TYPE_CHECKING:  # torch stays optional for band arithmetic
    import torch

#: The original workflow's feature bands, in file order.
DEFAULT_BANDS: tuple[str, ...] = ("B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem")
#: Name of the label band in Earth Engine exports.
LABEL_BAND = "Cropland"
#: The original workflow's per-band normalization range.
DEFAULT_MIN: dict[str, float] = {"B": 0, "G": 0, "R": 0, "NIR": 0, "SWIR1": 0, "NDVI": -1, "Dem": -400}
DEFAULT_MAX: dict[str, float] = {"B": 1, "G": 1, "R": 1, "NIR": 1, "SWIR1": 1, "NDVI": 1, "Dem": 2000}
#: Landsat Collection 2 Level-2 surface reflectance from its stored integers: DN * scale + offset.
C2_SR_SCALE = 0.0000275
C2_SR_OFFSET = -0.2
#: Bands that inference can compute from others when a raster lacks them.
DERIVED_BANDS: dict[str, tuple[str, str]] = {"NDVI": ("NIR", "R")}
#: Common alternative names of the same band in rasters (e.g. Landsat band descriptions).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B": ("blue", "b", "sr_b2", "b2"),
    "G": ("green", "g", "sr_b3", "b3"),
    "R": ("red", "r", "sr_b4", "b4"),
    "NIR": ("nir", "near infrared", "nir08", "sr_b5", "b5"),
    "SWIR1": ("swir1", "swir 1", "swir16", "sr_b6", "b6"),
    "SWIR2": ("swir2", "swir 2", "swir22", "sr_b7", "b7"),
    "NDVI": ("ndvi",),
    "Dem": ("dem", "elevation", "srtm"),
}


def ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Normalized difference (NIR - R) / (NIR + R), as Earth Engine's normalizedDifference.

    Where NIR + R is 0 the result is 0 (Earth Engine masks it; a network needs a number).
    """
    nir = np.asarray(nir, dtype=np.float32)
    red = np.asarray(red, dtype=np.float32)
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(total != 0, (nir - red) / total, 0.0)
    out[~(np.isfinite(nir) & np.isfinite(red))] = np.nan
    return out.astype(np.float32)


def canonical_band(name: str, bands: Sequence[str] = DEFAULT_BANDS) -> str | None:
    """The name in ``bands`` that ``name`` (a raster band description, say) stands for."""
    low = name.strip().lower()
    for band in bands:
        if low == band.lower() or low in BAND_ALIASES.get(band, ()):
            return band
    return None


@dataclass(frozen=True)
class Normalization:
    """Per-band linear scaling to [0, 1]: ``(x - min) / (max - min)``, optionally clipped.

    Stored in every checkpoint so that prediction scales exactly as training did.
    """

    bands: tuple[str, ...] = DEFAULT_BANDS
    min: tuple[float, ...] = tuple(DEFAULT_MIN[b] for b in DEFAULT_BANDS)
    max: tuple[float, ...] = tuple(DEFAULT_MAX[b] for b in DEFAULT_BANDS)
    clip: bool = True
    source: str = field(default="original-workflow", compare=False)

    def __post_init__(self) -> None:
        if not (len(self.bands) == len(self.min) == len(self.max)):
            raise UserError(
                f"normalization: {len(self.bands)} bands but {len(self.min)} min and {len(self.max)} max values"
            )
        for band, lo, hi in zip(self.bands, self.min, self.max):
            if not hi > lo:
                raise UserError(f"normalization: band {band!r} has max {hi} <= min {lo}")

    def apply(self, data: np.ndarray, channel_axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
        """Scale ``data`` (any layout; ``channel_axis`` holds the bands) to float32.

        ``out`` (float32, may be ``data`` itself) receives the result: loaders that already hold a
        fresh float32 buffer scale it in place instead of allocating one per patch.
        """
        lo, span = self._offset_span(data.ndim, channel_axis)
        out = np.subtract(data, lo, out=out, dtype=np.float32)
        np.divide(out, span, out=out)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def apply_tensor_(self, x: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """``apply`` for a float32 torch tensor, in place, on its device: the same float32 operations,
        so the result is bit-identical to ``apply`` (workers that only read leave this to the GPU)."""
        lo, span = self._offset_span(x.ndim, channel_dim)
        x.sub_(x.new_tensor(lo)).div_(x.new_tensor(span))
        return x.clamp_(0.0, 1.0) if self.clip else x

    def _offset_span(self, ndim: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``min`` and ``max - min``, shaped to broadcast along ``channel_axis`` of ``ndim`` axes."""
        shape = [1] * ndim
        shape[channel_axis] = len(self.bands)
        lo = np.asarray(self.min, dtype=np.float32)
        return lo.reshape(shape), (np.asarray(self.max, dtype=np.float32) - lo).reshape(shape)

    def select(self, bands: Sequence[str]) -> "Normalization":
        """The same scaling for a subset or reordering of bands."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise UserError(f"normalization has no range for band(s) {missing}; it knows {list(self.bands)}")
        idx = [self.bands.index(b) for b in bands]
        return Normalization(tuple(bands), tuple(self.min[i] for i in idx), tuple(self.max[i] for i in idx), self.clip, self.source)

    def to_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "min": list(map(float, self.min)), "max": list(map(float, self.max)),
                "clip": self.clip, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        return cls(tuple(d["bands"]), tuple(map(float, d["min"])), tuple(map(float, d["max"])),
                   bool(d.get("clip", True)), str(d.get("source", "checkpoint")))

    @classmethod
    def default(cls, bands: Sequence[str] = DEFAULT_BANDS) -> "Normalization":
        """The original workflow's ranges for ``bands``."""
        unknown = [b for b in bands if b not in DEFAULT_MIN]
        if unknown:
            raise UserError(
                f"data.normalization: no default range for band(s) {unknown}; give data.normalization.min/max "
                "or a statistics file"
            )
        return cls(tuple(bands), tuple(float(DEFAULT_MIN[b]) for b in bands), tuple(float(DEFAULT_MAX[b]) for b in bands))

    @classmethod
    def from_stats(cls, path: str | Path, bands: Sequence[str], low: str = "p02", high: str = "p98",
                   clip: bool = True) -> "Normalization":
        """Ranges from a band-statistics JSON (``{band: {min, max, mean, std, p02, p98}}``)."""
        path = Path(path)
        try:
            stats = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: statistics file not found") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        stats = stats.get("bands", stats)
        lo, hi = [], []
        for band in bands:
            entry = stats.get(band)
            if entry is None or low not in entry or high not in entry:
                raise UserError(f"{path}: no {low}/{high} statistics for band {band!r}")
            lo.append(float(entry[low]))
            hi.append(float(entry[high]))
        return cls(tuple(bands), tuple(lo), tuple(hi), clip, f"stats:{path.name}:{low}-{high}")


def normalization_from_config(cfg: Any, bands: Sequence[str]) -> Normalization:
    """Build the normalization a data config asks for.

    ``cfg`` may be None or ``{kind: default}`` (the original workflow's ranges),
    ``{kind: minmax, min: [...], max: [...]}`` or ``{kind: stats, path: ..., low: p02, high: p98}``.
    """
    if cfg is None:
        return Normalization.default(bands)
    kind = str(cfg.get("kind", "default"))
    clip = bool(cfg.get("clip", True))
    if kind == "default":
        norm = Normalization.default(bands)
        return Normalization(norm.bands, norm.min, norm.max, clip)
    if kind == "minmax":
        return Normalization(tuple(bands), tuple(map(float, cfg["min"])), tuple(map(float, cfg["max"])), clip, "config")
    if kind == "stats":
        return Normalization.from_stats(cfg["path"], bands, cfg.get("low", "p02"), cfg.get("high", "p98"), clip)
    raise UserError(f"data.normalization.kind={kind!r} is not known; choose one of: default, minmax, stats")
