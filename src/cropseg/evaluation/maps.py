"""Cropland maps as the evaluation reads them: discovery, naming, and pixel interpretation.

A map is a GeoTIFF named ``{year}_{grid}_cropland.tif`` (the naming rule lives in
``MAP_NAME``). Band 1 is either a cropland probability (uint8 0..scale, scale from the
``probability_scale`` tag, else 200 for integers, 1 for floats) or a class (0/1, or the
values given as ``class_values``); an optional band 2 holds the class (0/1). Nodata
(``cropseg.maps.NODATA`` for uint8 maps without a declared one, or the file's nodata, or NaN) is never cropland and never counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from cropseg.errors import UserError
from cropseg.inputs import expand_inputs
from cropseg.maps import MAP_GLOB, MAP_NAME, NODATA, PROB_SCALE

KINDS = ("auto", "probability", "class")


#: Maps inside a folder: cropseg's maps, else any GeoTIFF (another product).
MAP_PATTERNS = (MAP_GLOB, ("*.tif", "*.tiff"))


@dataclass
class MapSpec:
    """How to turn pixels into cropland: kind, probability scale, threshold, class values."""

    kind: str = "auto"
    scale: float | None = None
    threshold: float | None = None
    class_values: Sequence[float] | None = None  # values meaning cropland for class rasters (default: 1)


@dataclass
class MapRaster:
    path: Path
    year: int | None
    grid: str
    crs: object
    transform: object
    width: int
    height: int
    bounds: object
    nodata: float | None
    kind: str  # "probability" or "class"
    scale: float
    threshold: float
    class_band: int | None  # 1-based band index of a class band next to a probability band
    class_values: tuple = (1,)
    tags: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- pixels
    def interpret(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(cropland bool, valid bool, probability float32 or None) from band rows read as (bands, ...)."""
        b1 = data[0]
        valid = np.ones(b1.shape, bool)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= b1 != self.nodata
        if np.issubdtype(b1.dtype, np.floating):
            valid &= ~np.isnan(b1)
        if self.kind == "class":
            crop = np.isin(b1, self.class_values) & valid
            return crop, valid, None
        prob = b1.astype(np.float32) / np.float32(self.scale)
        prob[~valid] = np.nan
        if self.class_band is not None and self.threshold_from_class:
            cls = data[1]
            crop = (cls == 1) & valid
        else:
            crop = (prob >= self.threshold) & valid
        return crop, valid, prob

    threshold_from_class: bool = False

    def bands_to_read(self) -> list[int]:
        return [1, self.class_band] if (self.kind == "probability" and self.class_band and self.threshold_from_class) else [1]

    def blocks(self, ds, rows: int = 1024) -> Iterator[tuple[Window, np.ndarray, np.ndarray, np.ndarray | None]]:
        """Stream the map in strips of ``rows`` rows: (window, cropland, valid, probability)."""
        for r0 in range(0, self.height, rows):
            win = Window(0, r0, self.width, min(rows, self.height - r0))
            data = ds.read(self.bands_to_read(), window=win)
            yield (win, *self.interpret(data))

    def sample(self, ds, xs: np.ndarray, ys: np.ndarray):
        """Values at points already in the map's CRS: (cropland, valid, probability) arrays."""
        data = np.array(list(ds.sample(zip(xs, ys), indexes=self.bands_to_read(), masked=False)))
        if data.size == 0:
            data = np.zeros((0, len(self.bands_to_read())), ds.dtypes[0])
        return self.interpret(data.T.reshape(len(self.bands_to_read()), -1))

    def contains(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        b = self.bounds
        return (xs >= b.left) & (xs < b.right) & (ys > b.bottom) & (ys <= b.top)

    def describe(self) -> str:
        how = (f"class band {self.class_band}" if self.threshold_from_class
               else f"probability/{self.scale:g} >= {self.threshold:g}") if self.kind == "probability" \
            else f"class values {list(self.class_values)}"
        return f"{self.path.name}: year {self.year}, {self.kind} ({how})"


def _year_from(path: Path, tags: dict) -> tuple[int | None, str]:
    m = MAP_NAME.match(path.name)
    if m:
        return int(m["year"]), m["grid"]
    year = tags.get("year") or tags.get("YEAR")
    m2 = re.search(r"(?<!\d)(19[7-9]\d|20\d\d)(?!\d)", path.stem)
    if year is None and m2:
        year = m2.group(1)
    try:
        year = int(year) if year is not None else None
    except ValueError:
        year = None
    return year, path.stem


def _peek_max(ds, nodata) -> float:
    """Largest valid value of band 1 on a decimated read (cheap on large rasters)."""
    h, w = max(1, min(ds.height, 512)), max(1, min(ds.width, 512))
    a = ds.read(1, out_shape=(h, w), resampling=rasterio.enums.Resampling.nearest).astype(np.float64)
    ok = ~np.isnan(a)
    if nodata is not None and not np.isnan(nodata):
        ok &= a != nodata
    return float(a[ok].max()) if ok.any() else 0.0


def open_map(path: str | Path, spec: MapSpec | None = None, year: int | None = None) -> MapRaster:
    """Inspect a map raster and decide how to read it; a raster without CRS is a user error."""
    spec = spec or MapSpec()
    path = Path(path)
    if spec.kind not in KINDS:
        raise UserError(f"kind={spec.kind!r}: choose one of {', '.join(KINDS)}")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as err:
        raise UserError(f"{path}: cannot open as a raster ({str(err).splitlines()[0]})") from None
    with ds:
        if ds.crs is None:
            raise UserError(f"{path}: raster has no CRS (georeference it, e.g. gdal_edit.py -a_srs EPSG:4326)")
        if ds.transform.b != 0 or ds.transform.d != 0:
            raise UserError(f"{path}: rotated rasters are not supported (warp it north-up first)")
        tags = ds.tags()
        band_tags = ds.tags(1)
        desc = [(d or "").lower() for d in ds.descriptions]
        y, grid = _year_from(path, tags)
        nodata = ds.nodata
        is_float = np.issubdtype(np.dtype(ds.dtypes[0]), np.floating)
        if nodata is None and ds.dtypes[0] == "uint8" and spec.kind != "class" and not is_float:
            nodata = float(NODATA)
        scale_tag = tags.get("probability_scale") or band_tags.get("probability_scale")
        kind = spec.kind
        if kind == "auto":
            if scale_tag or "prob" in desc[0]:
                kind = "probability"
            elif "class" in desc[0]:
                kind = "class"
            elif is_float:
                kind = "probability"
            else:
                kind = "class" if _peek_max(ds, nodata) <= 1 else "probability"
        if spec.scale is not None:
            scale = float(spec.scale)
        elif scale_tag:
            scale = float(scale_tag)
        else:
            scale = 1.0 if is_float else float(PROB_SCALE)
        if scale <= 0:
            raise UserError(f"{path}: probability scale must be positive (got {scale})")
        class_band = None
        if ds.count >= 2 and kind == "probability":
            class_band = 2
        threshold = spec.threshold
        from_class = False
        if threshold is None:
            if class_band is not None:
                from_class = True
            threshold = float(tags.get("threshold", 0.5))
        if not 0 <= threshold <= 1:
            raise UserError(f"threshold={threshold}: must be between 0 and 1")
        if kind == "class" and nodata is None and ds.dtypes[0] == "uint8":
            nodata = float(NODATA)
        m = MapRaster(path=path, year=year if year is not None else y, grid=grid, crs=ds.crs,
                      transform=ds.transform, width=ds.width, height=ds.height, bounds=ds.bounds,
                      nodata=nodata, kind=kind, scale=scale, threshold=threshold, class_band=class_band,
                      class_values=tuple(spec.class_values or (1,)), tags=tags)
        m.threshold_from_class = from_class
        return m


def open_maps(inputs: Sequence[str | Path], spec: MapSpec | None = None, year: int | None = None,
              need_year: bool = False, what: str = "maps", key: str = "maps") -> list[MapRaster]:
    """The maps named by ``inputs``, inspected. With ``year``: only maps of that year, and maps
    whose name and tags carry no year are taken as that year."""
    maps = [open_map(p, spec) for p in expand_inputs(inputs, MAP_PATTERNS, key=key, what=what)]
    if year is not None:
        for m in maps:
            if m.year is None:
                m.year = int(year)
        kept = [m for m in maps if m.year == int(year)]
        if not kept:
            years = ", ".join(sorted({str(m.year) for m in maps}))
            raise UserError(f"year={year}: none of the {len(maps)} {what} is of that year (they are of {years})")
        maps = kept
    if need_year:
        missing = [m.path.name for m in maps if m.year is None]
        if missing:
            raise UserError(f"{missing[0]}: cannot tell the map's year (name it {{year}}_{{grid}}_cropland.tif, "
                            "tag it 'year', or pass year=YEAR)")
    return maps


def maps_by_year(maps: Sequence[MapRaster]) -> dict[int | None, list[MapRaster]]:
    out: dict[int | None, list[MapRaster]] = {}
    for m in maps:
        out.setdefault(m.year, []).append(m)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
