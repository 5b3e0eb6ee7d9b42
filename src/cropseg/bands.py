"""Band names, normalization and derived bands: the one source of truth.

Bands are named and travel with the data, the config and the checkpoint, so that
inference maps raster bands by name rather than by position.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cropseg.errors import UserError

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
#: Common alternative names of the same band in rasters (e.g. band descriptions). Numbered
#: Landsat names (``SR_B4``, ``B4``) are not here: their meaning depends on the sensor (SENSOR_BANDS).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B": ("blue", "b"),
    "G": ("green", "g"),
    "R": ("red", "r"),
    "NIR": ("nir", "near infrared", "nir08"),
    "SWIR1": ("swir1", "swir 1", "swir16"),
    "SWIR2": ("swir2", "swir 2", "swir22"),
    "NDVI": ("ndvi",),
    "Dem": ("dem", "elevation", "srtm"),
}
#: Landsat surface-reflectance band numbers by sensor, as USGS and Earth Engine name them
#: (Collection 2 Level-2 ``SR_Bn``; ``Bn`` in older products). TM (Landsat 4/5) and ETM+
#: (Landsat 7) share one numbering, OLI (Landsat 8/9) shifts it by one: ``SR_B4`` is NIR on
#: Landsat 5 and red on Landsat 8. Reading one as the other swaps every band silently.
SENSOR_BANDS: dict[str, dict[int, str]] = {
    "tm": {1: "B", 2: "G", 3: "R", 4: "NIR", 5: "SWIR1", 7: "SWIR2"},
    "etm": {1: "B", 2: "G", 3: "R", 4: "NIR", 5: "SWIR1", 7: "SWIR2"},
    "oli": {2: "B", 3: "G", 4: "R", 5: "NIR", 6: "SWIR1", 7: "SWIR2"},
}
#: Names users and metadata give a sensor (SPACECRAFT_ID, SENSOR_ID, product-id prefixes).
SENSOR_NAMES: dict[str, tuple[str, ...]] = {
    "tm": ("tm", "landsat4", "landsat5", "lt04", "lt05", "l4", "l5"),
    "etm": ("etm", "etm+", "landsat7", "le07", "l7"),
    "oli": ("oli", "oli_tirs", "landsat8", "landsat9", "lc08", "lc09", "lo08", "lo09", "l8", "l9"),
}
#: The original workflow mapped the years up to this one with its Landsat-5 model, later ones with Landsat-8.
LAST_TM_YEAR = 2011
#: What each band measures, so that a scene in other units (stored integers) is caught before it is mapped.
BAND_UNITS: dict[str, str] = {"B": "reflectance", "G": "reflectance", "R": "reflectance", "NIR": "reflectance",
                              "SWIR1": "reflectance", "SWIR2": "reflectance", "NDVI": "index", "Dem": "metres"}
#: Plausible medians of a scene's valid pixels per unit (reflectance medians of land, snow and water alike).
UNIT_MEDIAN_RANGE: dict[str, tuple[float, float]] = {"reflectance": (-0.1, 1.5), "index": (-1.0, 1.0),
                                                     "metres": (-500.0, 9000.0)}
_NUMBERED = re.compile(r"^(?:sr_)?b(?:and)?[ _]?0*(\d+)$")

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


def band_number(name: str) -> int | None:
    """The Landsat band number a description such as ``SR_B4``, ``B4`` or ``band 4`` names, else None."""
    m = _NUMBERED.match(name.strip().lower())
    return int(m.group(1)) if m else None


def resolve_sensor(name: str, key: str = "sensor") -> str:
    """``tm``, ``etm`` or ``oli`` for any of SENSOR_NAMES (``LANDSAT_5``, ``LC08``, ``OLI_TIRS`` ...)."""
    low = re.sub(r"[\s_-]", "", str(name).strip().lower())
    for sensor, names in SENSOR_NAMES.items():
        if low == sensor or low in {n.replace("_", "") for n in names}:
            return sensor
    raise UserError(f"{key}={name!r} is not a known sensor; choose one of: tm (Landsat 4/5), etm (Landsat 7), "
                    "oli (Landsat 8/9)")


def sensor_for_year(year: int) -> str:
    """The original workflow's choice: Landsat 5 TM up to 2011, Landsat 8 OLI from 2012."""
    return "tm" if int(year) <= LAST_TM_YEAR else "oli"


def sensor_codes(sensor: str, bands: Sequence[str]) -> tuple[str, ...]:
    """The Collection-2 band names (``SR_Bn``) of ``bands`` for ``sensor`` (Earth Engine selects by them)."""
    by_band = {b: n for n, b in SENSOR_BANDS[sensor].items()}
    return tuple(f"SR_B{by_band[b]}" for b in bands)


def canonical_band(name: str, bands: Sequence[str] = DEFAULT_BANDS, sensor: str | None = None) -> str | None:
    """The name in ``bands`` that ``name`` (a raster band description, say) stands for.

    A numbered Landsat name (``SR_B4``) is resolved only with its ``sensor``: without one it
    stands for nothing, and the caller decides whether that is an error.
    """
    low = name.strip().lower()
    number = band_number(name)
    if number is not None:
        band = SENSOR_BANDS[sensor].get(number) if sensor else None
        return band if band in bands else None
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

    def offset_span(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``min`` and ``max - min`` per band: the two numbers cropseg.models.preprocess scales by."""
        lo = np.asarray(self.min, dtype=np.float32)
        return lo, np.asarray(self.max, dtype=np.float32) - lo

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
