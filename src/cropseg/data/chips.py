"""Training chips from your own rasters and labels: ``cropseg prepare chips``.

Earth Engine exports are one way into training; a GeoTIFF of imagery plus a reference (a
crop mask or land-cover raster such as USDA CDL, or field polygons) is the other. This
module cuts such rasters into patches of the usual format (cropseg.data.patches,
``{grid}-{id}.h5``), so that describe, plots, split, pack and training take them unchanged.

- **Bands** come through prediction's input contract, not a second one:
  :func:`cropseg.inference.raster.plan_bands` finds them by name (aliases, sensor-numbered
  Landsat names, ``band_map``), derives NDVI, takes ``extra_bands`` (a constant or another
  raster through a WarpedVRT) and applies ``band_scale``/``band_offset`` (``preset=c2_dn``);
  :func:`~cropseg.inference.raster.check_units` checks the units and
  :class:`~cropseg.inference.raster.SceneReader` reads each window. Chips hold the **raw
  physical values** with NaN for nodata, as Earth Engine patches do: training's Preprocess
  normalizes them.
- **Labels** are a raster of class codes (``label_values``: the codes that mean cropland,
  ranges allowed, e.g. CDL ``1-61,66-77,204-254``; ``label_nodata``) read through a
  WarpedVRT (nearest) when its grid is not the imagery's, or polygons (GeoPackage,
  Shapefile, GeoJSON; read by cropseg.evaluation.vector) reprojected to the raster's CRS
  and burnt per window with ``rasterio.features.rasterize`` (``all_touched``). Chips' labels
  are 1 cropland, 0 other, NaN unknown (ignored by training).
- **Windows**: a regular grid (``stride``) or ``count`` random windows at least
  ``min_distance`` apart, optionally **stratified** by the class
  ``c = floor((rp + 0.05) * 10)`` (cropseg.data.index.patch_class) so that rare classes are
  kept; a window with more than ``max_nodata`` nodata pixels (imagery or label) is dropped.
- **Streaming**: every process reads one window at a time through a bounded GDAL cache,
  so memory does not grow with the raster. Windows are cut by a pool of processes in a
  fixed order: the chips chosen never depend on timing, chips are written atomically and a
  rerun skips those already there.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from cropseg.bands import BAND_UNITS, DEFAULT_BANDS
from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_dir

from .index import patch_class
from .patches import patch_name, patch_path, read_patch, write_patch

GDAL_CACHE_MB = 64  # per process: chips are read once each, a small cache keeps memory flat
SAMPLINGS = ("grid", "random")
OUTSIDE = ("other", "nodata")
CHUNK = 8  # windows per task handed to a worker
_LABEL_NODATA = 255  # the burn value of "no label" in a rasterized window


# --------------------------------------------------------------------------- label values


def parse_label_values(values: str | int | float | Sequence[Any] | None, key: str = "label_values") -> tuple:
    """Cropland codes as a tuple of inclusive ``(low, high)`` ranges, or of strings for text classes.

    ``"1-61,66-77,204-254"``, ``[1, 2, "5-7"]``, ``2`` or ``"maize,wheat"`` (names: a text
    attribute of polygons). Negative numbers are written as they are (``-1``, ``-5--2``).
    """
    if values is None:
        values = (1,)
    if isinstance(values, (str, int, float)):
        values = [values]
    items = [v.strip() if isinstance(v, str) else v for part in values
             for v in (part.split(",") if isinstance(part, str) else [part])]
    items = [v for v in items if v != ""]
    if not items:
        raise UserError(f"{key}: give at least one value meaning cropland (e.g. {key}=1 or {key}=1-61,66-77)")
    ranges: list[tuple[float, float]] = []
    names: list[str] = []
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ranges.append((float(v), float(v)))
            continue
        m = re.fullmatch(r"(-?\d+(?:\.\d*)?)(?:\s*-\s*(-?\d+(?:\.\d*)?))?", str(v))
        if m:
            lo = float(m.group(1))
            hi = float(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise UserError(f"{key}: range {v!r} runs backwards (write low-high)")
            ranges.append((lo, hi))
        else:
            names.append(str(v))
    if ranges and names:
        raise UserError(f"{key}: mixes numbers and names ({', '.join(names)}); give codes or class names, not both")
    return tuple(names) if names else tuple(ranges)


def is_cropland(codes: np.ndarray, values: tuple) -> np.ndarray:
    """Boolean mask of ``codes`` that are cropland under ``values`` (from :func:`parse_label_values`)."""
    codes = np.asarray(codes)
    if values and isinstance(values[0], str):
        return np.isin(codes.astype(str), list(values))
    out = np.zeros(codes.shape, bool)
    for lo, hi in values:
        out |= (codes >= lo) & (codes <= hi)
    return out


def format_values(values: tuple) -> str:
    if values and isinstance(values[0], str):
        return ",".join(values)
    return ",".join(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in values)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ChipSettings:
    """Everything a worker needs to cut chips (plain data: sent to each worker process once)."""

    out: str
    labels: str
    bands: tuple[str, ...] = DEFAULT_BANDS
    size: int = 192
    max_nodata: float = 0.5
    label_values: tuple = ((1.0, 1.0),)
    label_nodata: float | None = None
    label_band: int = 1
    label_field: str | None = None
    all_touched: bool = False
    outside: str = "other"
    band_map: dict = field(default_factory=dict)
    extra_bands: dict = field(default_factory=dict)
    band_scale: dict = field(default_factory=dict)
    band_offset: dict = field(default_factory=dict)
    assume_order: bool = False
    sensor: str | None = None
    year: int | None = None
    compression: str | None = "gzip"
    level: int = 4


@dataclass(frozen=True)
class _UnitSpec:
    """What check_units needs of a model spec: the chip bands and their units."""

    bands: tuple[str, ...]
    units: tuple[str, ...]


def preset_factors(name: str | None) -> tuple[dict, dict]:
    """``band_scale``/``band_offset`` of a prediction preset (``conf/predict/<name>.yaml``, e.g. c2_dn).

    The presets are prediction's own files: chips and maps of one composite scale it alike.
    """
    if not name:
        return {}, {}
    from omegaconf import OmegaConf

    from cropseg.config import CONFIG_DIR

    folder = CONFIG_DIR / "predict"
    known = sorted(p.stem for p in folder.glob("*.yaml") if {"band_scale", "band_offset"} & set(OmegaConf.load(p)))
    if name not in known:
        raise UserError(f"preset={name!r} is not a known band scaling preset; choose one of: {', '.join(known)}")
    cfg = OmegaConf.to_container(OmegaConf.load(folder / f"{name}.yaml"))
    return dict(cfg.get("band_scale") or {}), dict(cfg.get("band_offset") or {})


# --------------------------------------------------------------------------- labels


class RasterLabels:
    """Class codes of a label raster on the imagery's grid: 1 cropland, 0 other, NaN no data.

    A raster on another grid (CRS, pixel size or extent) is read through a WarpedVRT
    (nearest neighbour: codes are not numbers to average) with an alpha band, so that
    pixels beyond its coverage are no data whatever its values.
    """

    def __init__(self, path: str | Path, src, settings: ChipSettings, image_path: str | Path = ""):
        import rasterio
        from rasterio.vrt import WarpedVRT

        from cropseg.inference.raster import check_georeferenced, open_raster

        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        lab = self._stack.enter_context(open_raster(self.path))
        band = int(settings.label_band)
        if not 1 <= band <= lab.count:
            self.close()
            raise UserError(f"label_band={band}: {self.path} has bands 1..{lab.count}")
        check_georeferenced(lab, self.path)
        self.values = settings.label_values
        if self.values and isinstance(self.values[0], str):
            self.close()
            raise UserError(f"label_values={format_values(self.values)}: {self.path} is a raster of codes; "
                            "give numbers (e.g. label_values=1 or label_values=1-61,66-77)")
        nd = settings.label_nodata if settings.label_nodata is not None else lab.nodatavals[band - 1]
        self.nodata = None if nd is None or (isinstance(nd, float) and math.isnan(nd)) else float(nd)
        self.band = band
        same = (lab.crs == src.crs and lab.transform == src.transform
                and (lab.width, lab.height) == (src.width, src.height))
        if same:
            self.ds, self.alpha = lab, None
        else:
            from rasterio.warp import transform_bounds

            try:
                left, bottom, right, top = transform_bounds(lab.crs, src.crs, *lab.bounds)
            except Exception:  # noqa: BLE001 - a CRS pair PROJ cannot relate: judged by the reads
                left, bottom, right, top = src.bounds
            b = src.bounds
            if left >= b.right or right <= b.left or bottom >= b.top or top <= b.bottom:
                self.close()
                raise UserError(f"labels={self.path} does not overlap {image_path or 'the imagery'} "
                                f"(after reprojection from {lab.crs.to_string()} to {src.crs.to_string()})")
            vrt = self._stack.enter_context(WarpedVRT(
                lab, crs=src.crs, transform=src.transform, width=src.width, height=src.height,
                resampling=rasterio.enums.Resampling.nearest, add_alpha=True,
                src_nodata=self.nodata))
            self.ds, self.alpha = vrt, vrt.count
        self.describe = (f"{self.path.name} band {band}, cropland = {format_values(self.values)}"
                         + (f", nodata {self.nodata:g}" if self.nodata is not None else "")
                         + ("" if same else " (warped onto the imagery grid, nearest)"))

    def read(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        from rasterio.windows import Window

        win = Window(col, row, w, h)
        if self.alpha is None:
            codes = self.ds.read(self.band, window=win)
            missing = np.zeros(codes.shape, bool)
        else:
            both = self.ds.read([self.band, self.alpha], window=win)
            codes, missing = both[0], both[1] == 0
        if codes.dtype.kind == "f":
            missing |= ~np.isfinite(codes)
        if self.nodata is not None:
            missing |= codes == self.nodata
        out = is_cropland(codes, self.values).astype(np.float32)
        out[missing] = np.nan
        return out

    def close(self) -> None:
        self._stack.close()


class PolygonLabels:
    """Field polygons burnt onto each window of the imagery's grid: 1 cropland, 0 other, NaN unknown.

    Without ``label_field`` every polygon is cropland; with it, a polygon is cropland when
    its attribute is in ``label_values`` (codes or names) and other otherwise. Pixels outside
    every polygon are ``outside``: other (polygons map all cropland there) or nodata (polygons
    of both classes, the rest unknown). Where polygons overlap, cropland wins. Geometries are
    reprojected to the raster's CRS once; each window burns only the polygons whose bounds
    meet it.
    """

    def __init__(self, path: str | Path, src, settings: ChipSettings, image_path: str | Path = ""):
        from rasterio.warp import transform_geom

        from cropseg.evaluation.vector import geometry_bounds, read_layer

        self.path = Path(path)
        layer = read_layer(self.path)
        keep = [i for i, g in enumerate(layer.geometries) if g is not None and "Polygon" in g["type"]]
        if not keep:
            raise UserError(f"labels={self.path}: no polygons in the file")
        if settings.label_field is None:
            crop = np.ones(len(keep), bool)
        else:
            if settings.label_field not in layer.attributes.columns:
                raise UserError(f"label_field={settings.label_field!r}: {self.path} has no such attribute; it has "
                                f"{', '.join(map(str, layer.attributes.columns)) or 'none'}")
            col = layer.attributes[settings.label_field].iloc[keep].to_numpy()
            numeric = not (settings.label_values and isinstance(settings.label_values[0], str))
            if numeric:
                import pandas as pd

                try:
                    col = pd.to_numeric(pd.Series(col)).to_numpy(float)  # empty values: NaN, never cropland
                except (TypeError, ValueError):
                    raise UserError(f"label_field={settings.label_field!r} of {self.path} holds text; give "
                                    f"label_values as class names (e.g. label_values={col[0]})") from None
            crop = is_cropland(col, settings.label_values)
        geoms = [layer.geometries[i] for i in keep]
        if src.crs is not None and layer.crs != src.crs:
            geoms = transform_geom(layer.crs, src.crs, geoms)
        self.geoms = geoms
        self.crop = crop
        self.bounds = np.array([geometry_bounds(g) for g in geoms], float).reshape(-1, 4)
        b = src.bounds
        meets = ((self.bounds[:, 0] < b.right) & (self.bounds[:, 2] > b.left)
                 & (self.bounds[:, 1] < b.top) & (self.bounds[:, 3] > b.bottom))
        if not meets.any():
            raise UserError(f"labels={self.path}: none of its {len(geoms)} polygons lies within "
                            f"{image_path or 'the imagery'} (layer CRS {layer.crs.to_string()}, raster "
                            f"{src.crs.to_string()}); check the layer's CRS")
        self.transform = src.transform
        self.all_touched = bool(settings.all_touched)
        self.fill = 0 if settings.outside == "other" else _LABEL_NODATA
        what = ("every polygon cropland" if settings.label_field is None
                else f"cropland where {settings.label_field} in {format_values(settings.label_values)}")
        self.describe = (f"{self.path.name}: {len(geoms)} polygons, {what}, outside = {settings.outside}"
                         + (", all_touched" if self.all_touched else ""))

    def read(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        from rasterio.features import rasterize
        from rasterio.windows import Window, bounds as window_bounds, transform as window_transform

        win = Window(col, row, w, h)
        left, bottom, right, top = window_bounds(win, self.transform)
        hit = np.flatnonzero((self.bounds[:, 0] <= right) & (self.bounds[:, 2] >= left)
                             & (self.bounds[:, 1] <= top) & (self.bounds[:, 3] >= bottom))
        burnt = np.full((h, w), self.fill, np.uint8)
        if hit.size:
            order = hit[np.argsort(self.crop[hit], kind="stable")]  # cropland drawn last: it wins overlaps
            shapes = [(self.geoms[i], 1 if self.crop[i] else 0) for i in order]
            burnt = rasterize(shapes, out_shape=(h, w), transform=window_transform(win, self.transform),
                              fill=self.fill, all_touched=self.all_touched, dtype="uint8")
        out = burnt.astype(np.float32)
        out[burnt == _LABEL_NODATA] = np.nan
        return out

    def close(self) -> None:
        pass


def open_labels(path: str | Path, src, settings: ChipSettings, image_path: str | Path = ""):
    """A label source for the raster ``src``: polygons for vector files, else a label raster."""
    from cropseg.evaluation.vector import VECTOR_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise UserError(f"labels={path}: file not found")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return PolygonLabels(path, src, settings, image_path)
    return RasterLabels(path, src, settings, image_path)


# --------------------------------------------------------------------------- one raster


@dataclass
class ChipResult:
    """What became of one window."""

    id: int
    row: int
    col: int
    status: str  # written | existing | dropped | surplus
    rp: float = float("nan")
    nodata: float = float("nan")

    @property
    def c(self) -> int | None:
        return None if math.isnan(self.rp) else int(patch_class(self.rp))


class ChipSource:
    """One imagery raster opened for cutting: its bands through SceneReader, its labels on its grid."""

    def __init__(self, path: str | Path, grid: str, settings: ChipSettings, check: bool = False):
        from cropseg.inference.raster import (SceneReader, check_georeferenced, check_units, open_raster,
                                              plan_bands)

        self.path, self.grid, self.s = Path(path), grid, settings
        self._stack = contextlib.ExitStack()
        try:
            self.src = self._stack.enter_context(open_raster(self.path))
            check_georeferenced(self.src, self.path)
            size = settings.size
            if self.src.height < size or self.src.width < size:
                raise UserError(f"{self.path}: {self.src.height} x {self.src.width} pixels, smaller than one "
                                f"{size} x {size} chip; give a smaller size=")
            self.plan = plan_bands(self.src, self.path, settings.bands, settings.band_map, settings.extra_bands,
                                   settings.assume_order, settings.band_scale, settings.band_offset, settings.sensor)
            if check:
                units = _UnitSpec(settings.bands, tuple(BAND_UNITS.get(b, "unknown") for b in settings.bands))
                check_units(self.src, self.path, self.plan, units)
            self.reader = SceneReader(self.src, self.plan)
            self._stack.callback(self.reader.close)
            self.labels = open_labels(settings.labels, self.src, settings, self.path)
            self._stack.callback(self.labels.close)
        except BaseException:
            self._stack.close()
            raise
        from cropseg.maps import scene_year

        self.year = settings.year if settings.year is not None else scene_year(self.path)
        self.attrs = {  # provenance common to every chip of this raster (window and transform added per chip)
            "source_raster": str(self.path.resolve()),
            "crs": self.src.crs.to_wkt(),
            "labels": str(Path(settings.labels).resolve()),
            "label_rule": self.labels.describe,
            "band_sources": "; ".join(f"{k}={v}" for k, v in self.plan.describe().items()),
        }

    @property
    def height(self) -> int:
        return self.src.height

    @property
    def width(self) -> int:
        return self.src.width

    def close(self) -> None:
        self._stack.close()

    def screen(self, row: int, col: int) -> float:
        """The cropland fraction of the labelled pixels of a window (NaN: none labelled); labels only."""
        lab = self.labels.read(row, col, self.s.size, self.s.size)
        ok = np.isfinite(lab)
        return float(lab[ok].mean()) if ok.any() else float("nan")

    def cut(self, cid: int, row: int, col: int) -> ChipResult:
        """Write chip ``cid`` (the window at row, col), unless it is there already or has too much nodata."""
        from rasterio.windows import Window, transform as window_transform

        size = self.s.size
        target = patch_path(self.s.out, patch_name(self.grid, cid))
        if target.exists():
            p = read_patch(target)
            valid = np.isfinite(p.data).all(axis=2) & np.isfinite(p.label[..., 0])
            rp = float(p.label[..., 0][valid].mean()) if valid.any() else float("nan")
            return ChipResult(cid, row, col, "existing", rp, float(1 - valid.mean()))
        x, valid = self.reader.read_window(row, col, size, size)
        label = self.labels.read(row, col, size, size)
        valid &= np.isfinite(label)
        nodata = float(1.0 - valid.mean())
        rp = float(label[valid].mean()) if valid.any() else float("nan")
        if nodata > self.s.max_nodata:
            return ChipResult(cid, row, col, "dropped", rp, nodata)
        t = window_transform(Window(col, row, size, size), self.src.transform)
        attrs = {
            **self.attrs,
            "window": np.array([row, col, size, size], np.int64),  # row_off, col_off, height, width
            "transform": np.array([t.a, t.b, t.c, t.d, t.e, t.f], np.float64),  # the chip's affine (a, b, c, d, e, f)
        }
        write_patch(target, np.ascontiguousarray(x.transpose(1, 2, 0)), label[..., None], self.s.bands,
                    grid_id=self.grid, point_id=cid, year=self.year, source=self.path.name,
                    compression=self.s.compression,
                    compression_opts=self.s.level if self.s.compression == "gzip" else None, extra_attrs=attrs)
        return ChipResult(cid, row, col, "written", rp, nodata)


# --------------------------------------------------------------------------- windows


def grid_windows(height: int, width: int, size: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(id, row, col)`` of a regular grid of whole windows, row by row; id = row index * columns + column index."""
    rows = range(0, height - size + 1, stride)
    cols = range(0, width - size + 1, stride)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            yield i * len(cols) + j, r, c


def random_windows(height: int, width: int, size: int, n: int, min_distance: float, seed: int,
                   max_tries: int | None = None) -> list[tuple[int, int]]:
    """Up to ``n`` random windows ``(row, col)`` whose centres are at least ``min_distance`` pixels apart.

    Dart throwing on a hash grid (cells of ``min_distance / sqrt 2``, so a cell holds at most
    one centre and only the 5 x 5 cells around a dart need checking). Deterministic in ``seed``;
    fewer than ``n`` when the raster holds no more.
    """
    rng = np.random.default_rng(seed)
    rmax, cmax = height - size, width - size
    tries = max_tries if max_tries is not None else 30 * n + 1000
    if min_distance <= 0:
        rows = rng.integers(0, rmax + 1, n)
        cols = rng.integers(0, cmax + 1, n)
        return list(zip(rows.tolist(), cols.tolist()))
    cell = min_distance / math.sqrt(2)
    grid: dict[tuple[int, int], tuple[int, int]] = {}
    out: list[tuple[int, int]] = []
    d2 = min_distance * min_distance
    batch = 4096
    while len(out) < n and tries > 0:
        k = min(batch, tries)
        tries -= k
        rows = rng.integers(0, rmax + 1, k).tolist()
        cols = rng.integers(0, cmax + 1, k).tolist()
        for r, c in zip(rows, cols):
            gi, gj = int(r // cell), int(c // cell)
            ok = True
            for di in range(-2, 3):
                for dj in range(-2, 3):
                    other = grid.get((gi + di, gj + dj))
                    if other is not None and (other[0] - r) ** 2 + (other[1] - c) ** 2 < d2:
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                grid[(gi, gj)] = (r, c)
                out.append((r, c))
                if len(out) >= n:
                    break
    return out


def stratified_order(ids: Sequence[int], rps: Sequence[float]) -> list[int]:
    """``ids`` taken in turn from each class c (in each its given order): the first N hold the classes equally.

    Windows without any labelled pixel (rp NaN) are left out.
    """
    by_class: dict[int, deque] = {}
    for i, rp in zip(ids, rps):
        if not math.isnan(rp):
            by_class.setdefault(int(patch_class(rp)), deque()).append(i)
    order = []
    while by_class:
        for c in sorted(by_class):
            order.append(by_class[c].popleft())
        by_class = {c: q for c, q in by_class.items() if q}
    return order


# --------------------------------------------------------------------------- workers

_SETTINGS: ChipSettings | None = None
_SOURCES: dict[str, ChipSource] = {}


def _init_worker(settings: ChipSettings) -> None:
    global _SETTINGS
    _SETTINGS = settings
    _SOURCES.clear()  # a forked worker must not share the parent's open files (the parent closes them)


def _source(path: str, grid: str) -> ChipSource:
    """This process's open source for ``path`` (kept while jobs of that raster come; one raster at a time)."""
    key = f"{path}\0{grid}"
    if key not in _SOURCES:
        for other in list(_SOURCES):
            _SOURCES.pop(other).close()
        _SOURCES[key] = ChipSource(path, grid, _SETTINGS)
    return _SOURCES[key]


def _close_sources() -> None:
    for key in list(_SOURCES):
        _SOURCES.pop(key).close()


def _job(task: tuple[str, str, str, list[tuple[int, int, int]]]) -> list:
    import rasterio

    kind, path, grid, windows = task
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024):
        src = _source(path, grid)
        if kind == "screen":
            return [src.screen(r, c) for _, r, c in windows]
        return [src.cut(i, r, c) for i, r, c in windows]


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for it in items:
        chunk.append(it)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ordered(tasks: Iterable, settings: ChipSettings, workers: int, stop=lambda: False) -> Iterator[list]:
    """Results of ``tasks`` in order (cropseg.parallel.parallel_map); once ``stop()`` is true no new
    task starts, and those running finish and are returned (the caller counts them as surplus)."""
    from cropseg.parallel import parallel_map

    return parallel_map(_job, itertools.takewhile(lambda _: not stop(), tasks), workers,
                        initializer=_init_worker, initargs=(settings,))


# --------------------------------------------------------------------------- the command


@dataclass
class RasterSummary:
    path: str
    grid: str
    windows: int = 0  # windows tried
    written: int = 0
    existing: int = 0
    dropped: int = 0  # more than max_nodata nodata
    unlabelled: int = 0  # stratified: candidates without any labelled pixel
    surplus: int = 0  # beyond count (random), cut by workers still running: removed
    classes: dict[int, int] = field(default_factory=dict)
    quicklook: str | None = None

    @property
    def chips(self) -> int:
        return self.written + self.existing


@dataclass
class ChipSummary:
    out: str
    size: int
    sampling: str
    rasters: list[RasterSummary] = field(default_factory=list)
    seconds: float = 0.0
    csv: str | None = None

    def total(self, key: str) -> int:
        return sum(getattr(r, key) for r in self.rasters)

    @property
    def chips(self) -> int:
        return self.total("chips")

    @property
    def classes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.rasters:
            for c, n in r.classes.items():
                out[c] = out.get(c, 0) + n
        return dict(sorted(out.items()))


def format_summary(s: ChipSummary, max_nodata: float | None = None) -> str:
    """The one-screen summary printed by ``cropseg prepare chips``."""
    rate = s.chips / s.seconds if s.seconds > 0 else 0.0
    lines = [f"cut {s.chips} chip(s) of {s.size}x{s.size} from {len(s.rasters)} raster(s) in {s.seconds:.1f}s "
             f"({rate:.1f} chips/s, {s.sampling} sampling) -> {s.out}",
             f"  written {s.total('written')}, already there {s.total('existing')}, dropped {s.total('dropped')} "
             f"(more than {'max_nodata' if max_nodata is None else f'max_nodata={max_nodata:g}'} nodata)"
             + (f", {s.total('unlabelled')} candidate(s) without labels" if s.total("unlabelled") else "")]
    if s.classes:
        lines.append("  chips per class c: " + ", ".join(f"{c}:{n}" for c, n in s.classes.items()))
    for r in s.rasters:
        if r.quicklook:
            lines.append(f"  {Path(r.path).name}: {r.chips} chip(s) ({r.grid}-*.h5), where: {r.quicklook}")
    if s.csv:
        lines.append(f"  chip list (raster, window, rp, class, status): {s.csv}")
    lines.append(f"  next: cropseg prepare split root={s.out}  (then python -m cropseg.train data=h5 data.root={s.out} ...)")
    return "\n".join(lines)


def _given(by_band: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The bands a per-band option sets (the config lists every band, null where not set)."""
    if by_band is not None and not isinstance(by_band, Mapping):
        raise UserError(f"{key}: give one value per band, e.g. {key}.Dem=250 (not {key}={by_band})")
    return {k: v for k, v in (by_band or {}).items() if v is not None}


def grid_name(path: str | Path) -> str:
    """A raster's grid id in chip names: its stem with ``-`` as ``_`` (``{grid}-{id}`` splits at the first ``-``)."""
    return Path(path).stem.replace("-", "_")


def make_chips(
    input: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    labels: str | Path,
    bands: Sequence[str] = DEFAULT_BANDS,
    size: int = 192,
    sampling: str = "grid",
    stride: int | None = None,
    count: int = 100,
    candidates: int | None = None,
    min_distance: float | None = None,
    stratify: bool = False,
    max_nodata: float = 0.5,
    label_values: Any = (1,),
    label_nodata: float | None = None,
    label_band: int = 1,
    label_field: str | None = None,
    all_touched: bool = False,
    outside: str = "other",
    band_map: Mapping[str, Any] | None = None,
    extra_bands: Mapping[str, Any] | None = None,
    band_scale: Mapping[str, Any] | None = None,
    band_offset: Mapping[str, Any] | None = None,
    preset: str | None = None,
    sensor: str | None = None,
    assume_order: bool = False,
    check_units: bool = True,
    grid_id: str | None = None,
    year: int | None = None,
    compression: str | None = "gzip",
    level: int = 4,
    workers: int = 0,
    seed: int = 0,
    quicklook: bool = True,
    progress: bool = False,
) -> ChipSummary:
    """Cut training chips from imagery rasters and labels into ``out/{grid}-{id}.h5``.

    ``input``: a raster, a glob, a folder (its ``*.tif``) or a list file, as prediction takes.
    ``sampling="grid"``: every whole window of a grid with ``stride`` (default ``size``: tiles
    that touch); ``"random"``: ``count`` windows per raster, centres at least ``min_distance``
    pixels apart (default ``size``), drawn from ``candidates`` (default 4 x count) random
    positions; ``stratify``: candidates are screened by their label and taken from each class
    c in turn. Band and label options: see the module docstring and docs/prepare.md.
    """
    from cropseg.bands import resolve_sensor
    from cropseg.inputs import expand_inputs
    from cropseg.maps import SCENE_GLOBS

    t0 = time.time()
    size, count = int(size), int(count)
    if size < 1:
        raise UserError(f"size={size}: must be >= 1")
    if sampling not in SAMPLINGS:
        raise UserError(f"sampling={sampling!r} is not known; choose one of: {', '.join(SAMPLINGS)}")
    stride = int(stride) if stride is not None else size
    if stride < 1:
        raise UserError(f"stride={stride}: must be >= 1")
    if sampling == "random" and count < 1:
        raise UserError(f"count={count}: must be >= 1")
    if not 0.0 <= float(max_nodata) <= 1.0:
        raise UserError(f"max_nodata={max_nodata}: must be in [0, 1]")
    if outside not in OUTSIDE:
        raise UserError(f"outside={outside!r} is not known; choose one of: {', '.join(OUTSIDE)}")
    if compression not in (None, "gzip", "lzf"):
        raise UserError(f"compression={compression!r} is not known; choose one of: gzip, lzf, none")
    if compression == "gzip" and not 0 <= int(level) <= 9:
        raise UserError(f"level={level}: gzip levels are 0..9")
    if not labels:
        raise UserError("labels= is required: a label raster (class codes) or a polygon file (GeoPackage, "
                        "Shapefile, GeoJSON)")
    if not bands:
        raise UserError("bands: give at least one band")
    if grid_id is not None and ("-" in str(grid_id) or not str(grid_id).strip()):
        raise UserError(f"grid_id={grid_id!r}: must be non-empty and without '-' (chips are named {{grid}}-{{id}})")
    if sensor is not None and str(sensor).lower() not in ("auto", "none", "null", ""):
        sensor = resolve_sensor(sensor)
    else:
        sensor = None
    scale_p, offset_p = preset_factors(preset)
    rasters = expand_inputs(input, SCENE_GLOBS, key="input", what="rasters")
    if grid_id is not None and len(rasters) > 1:
        raise UserError(f"grid_id={grid_id}: names the chips of one raster, but input gives {len(rasters)}; "
                        "leave it unset (each raster's file name is its grid id)")
    grids = [str(grid_id) if grid_id is not None else grid_name(p) for p in rasters]
    seen: dict[str, Path] = {}
    for p, g in zip(rasters, grids):
        if g in seen:
            raise UserError(f"{p} and {seen[g]} would both name their chips {g}-*.h5; rename one")
        seen[g] = p
    settings = ChipSettings(
        out=str(out), labels=str(labels), bands=tuple(bands), size=size, max_nodata=float(max_nodata),
        label_values=parse_label_values(label_values), label_nodata=None if label_nodata is None else float(label_nodata),
        label_band=int(label_band), label_field=label_field, all_touched=bool(all_touched), outside=outside,
        band_map=_given(band_map, "band_map"), extra_bands=_given(extra_bands, "extra_bands"),
        band_scale={**scale_p, **_given(band_scale, "band_scale")},
        band_offset={**offset_p, **_given(band_offset, "band_offset")},
        assume_order=bool(assume_order), sensor=sensor, year=year, compression=compression, level=int(level))
    out = ensure_output_dir(out, "out")

    # Every raster is opened here first: a bad band, unit or label stops the run before any work.
    import rasterio

    shapes = {}
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024):
        for p, g in zip(rasters, grids):
            src = ChipSource(p, g, settings, check=check_units)
            shapes[str(p)] = (src.height, src.width)
            src.close()

    summary = ChipSummary(str(out), size, sampling)
    rows: list[list] = []
    from tqdm.auto import tqdm

    try:
        for k, (p, g) in enumerate(zip(rasters, grids)):
            h, w = shapes[str(p)]
            rs = RasterSummary(str(p), g)
            limit = None
            if sampling == "grid":
                n_win = len(range(0, h - size + 1, stride)) * len(range(0, w - size + 1, stride))
                order: Iterable[tuple[int, int, int]] = grid_windows(h, w, size, stride)
            else:
                dist = float(size if min_distance is None else min_distance)
                pool_n = int(candidates) if candidates is not None else 4 * count
                pos = random_windows(h, w, size, max(pool_n, count), dist, seed + 1000003 * k)
                cands = [(i, r, c) for i, (r, c) in enumerate(pos)]
                if stratify:
                    rps = [rp for res in _ordered((("screen", str(p), g, ch) for ch in _chunks(cands, CHUNK)),
                                                  settings, workers) for rp in res]
                    _close_sources()
                    keep = stratified_order([i for i, _, _ in cands], rps)
                    rs.unlabelled = len(cands) - len(keep)
                    cands = [cands[i] for i in keep]
                order, n_win, limit = cands, min(count, len(cands)), count
            bar = tqdm(total=n_win, desc=f"chips {Path(p).name}", unit="chip", disable=not progress)
            done = 0
            first_row = len(rows)
            for res in _ordered((("cut", str(p), g, ch) for ch in _chunks(order, CHUNK)), settings, workers,
                                stop=lambda: limit is not None and done >= limit):
                for r in res:
                    rs.windows += 1
                    if r.status in ("written", "existing") and limit is not None and done >= limit:
                        if r.status == "written":  # cut by a worker after the quota was met in order
                            with contextlib.suppress(FileNotFoundError):
                                patch_path(out, patch_name(g, r.id)).unlink()
                            rs.surplus += 1
                        r.status = "surplus"
                        continue
                    if r.status in ("written", "existing"):
                        done += 1
                        setattr(rs, r.status, getattr(rs, r.status) + 1)
                        rs.classes[r.c or 0] = rs.classes.get(r.c or 0, 0) + 1
                    else:
                        rs.dropped += 1
                    if limit is None or r.status != "dropped":  # grid: windows; random: chips of count
                        bar.update(1)
                    rows.append([patch_name(g, r.id), Path(p).name, r.row, r.col, size, size,
                                 "" if math.isnan(r.rp) else f"{r.rp:.4f}", "" if r.c is None else r.c,
                                 f"{r.nodata:.4f}", r.status])
            bar.close()
            rs.classes = dict(sorted(rs.classes.items()))
            if quicklook:
                rs.quicklook = str(_raster_quicklook(out, p, g, settings, rows[first_row:], rs))
            summary.rasters.append(rs)
    finally:
        _close_sources()  # those opened here when workers=1
    csv_path = out / "chips.csv"
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["name", "raster", "row", "col", "height", "width", "rp", "c", "nodata_frac", "status"])
            wr.writerows(rows)
    summary.csv = str(csv_path)
    summary.seconds = time.time() - t0
    return summary


def _raster_quicklook(out: Path, path: Path, grid: str, settings: ChipSettings, rows: list[list],
                      rs: RasterSummary) -> Path:
    """``out/chips_{grid}.png``: the raster (decimated) with a box per chip, coloured by class c."""
    import rasterio

    from cropseg.inference.quicklook import chip_quicklook
    from cropseg.inference.raster import plan_bands

    name = Path(path).name
    wins = [(r[2], r[3], r[4], r[5], r[9], r[7] if r[7] != "" else None) for r in rows]
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024), rasterio.open(path) as src:
        try:
            plan = plan_bands(src, path, settings.bands, settings.band_map, settings.extra_bands,
                              settings.assume_order, settings.band_scale, settings.band_offset, settings.sensor)
        except UserError:
            plan = None
        title = (f"{name}: {rs.chips} chip(s) of {settings.size}x{settings.size}"
                 + (f", {rs.dropped} dropped" if rs.dropped else ""))
        return chip_quicklook(out / f"chips_{grid}.png", src, wins, title, plan)
