"""GeoTIFF input and output for inference: band mapping by name, row-block reading, map writing.

Band mapping: each band the checkpoint needs is found, in this order, in

1. ``band_map`` (config): ``{band: 1-based index or band description}``;
2. the raster's band descriptions, matched with :func:`cropseg.bands.canonical_band`
   (``Blue`` → ``B``, ...); numbered Landsat names (``SR_B4``) by the scene's sensor
   (:func:`scene_sensor`: ``sensor=``, metadata such as ``SPACECRAFT_ID``, a USGS product
   name, or the year), refused when no sensor can be told;
3. ``extra_bands`` (config): ``{band: constant}`` or ``{band: path/to/raster.tif}``
   (or ``{band: {raster: path, band: 1}}``), an other raster read through a
   ``WarpedVRT`` onto the scene's grid (bilinear);
4. :data:`cropseg.bands.DERIVED_BANDS`: NDVI from NIR and Red.

Values become physical (``stored * scale + offset``), a nodata value or NaN in any band
makes the pixel nodata (NaN), and :func:`check_units` compares a sample of the scene with
the units the model was trained on. Normalization is not done here: the checkpoint's model
does it (cropseg.models.preprocess), as in training.

Output maps: band 1 is the cropland probability as uint8, ``DN = round(200 * p)``
(0..200, ``p = DN / 200``, GDAL scale 0.005), band 2 (optional) the class
(1 cropland, 0 other, threshold applied to the float probability); 255 is nodata in both.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cropseg.bands import (BAND_ALIASES, BAND_UNITS, C2_SR_OFFSET, C2_SR_SCALE, DERIVED_BANDS, UNIT_MEDIAN_RANGE,
                           band_number, canonical_band, ndvi, resolve_sensor, sensor_for_year)
from cropseg.errors import UserError

from cropseg.maps import NODATA as NODATA_OUT, PROB_SCALE  # noqa: F401 (the map encoding lives in cropseg.maps)
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


def _rasterio():
    import rasterio  # noqa: PLC0415 (keeps `import cropseg.inference` light)

    return rasterio


def open_raster(path: str | Path):
    """Open a raster or raise a one-line UserError (missing file, not a raster)."""
    rasterio = _rasterio()
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a readable raster ({msg})") from None


@dataclass
class AuxBand:
    """A band taken from another raster, resampled onto the scene's grid."""

    path: str
    band: int | None = None  # None: the only band, or the band described as the one needed
    name: str = ""


@dataclass
class BandPlan:
    """How to assemble the model's bands from one scene."""

    bands: list[str]
    read: list[int]  # 1-based indexes of the scene bands read
    sources: list[tuple]  # per model band: ("read", k) | ("derived", k1, k2) | ("const", v) | ("aux", j)
    aux: list[AuxBand] = field(default_factory=list)
    nodata: list[float | None] = field(default_factory=list)  # nodata value of each read band
    scale: list[float] = field(default_factory=list)  # of each read band: value = stored * scale + offset
    offset: list[float] = field(default_factory=list)
    read_names: list[str] = field(default_factory=list)  # the band each read band is (model or derivation input)
    sensor: str | None = None  # how numbered band names were read, and why
    sensor_reason: str = ""

    def describe(self) -> dict[str, str]:
        def scaled(k: int) -> str:
            s, o = self.scale[k], self.offset[k]
            return f"band {self.read[k]}" + ("" if (s, o) == (1.0, 0.0) else f" * {s:g} {'+' if o >= 0 else '-'} {abs(o):g}")

        out = {}
        for band, src in zip(self.bands, self.sources):
            if src[0] == "read":
                out[band] = scaled(src[1])
            elif src[0] == "derived":
                ks = src[1:]
                plain = all((self.scale[k], self.offset[k]) == (1.0, 0.0) for k in ks)
                out[band] = ("derived from bands " + ",".join(str(self.read[k]) for k in ks) if plain
                             else "derived from " + ", ".join(scaled(k) for k in ks))
            elif src[0] == "const":
                out[band] = f"constant {src[1]}"
            else:
                out[band] = f"{self.aux[src[1]].path} band {self.aux[src[1]].band or band}"
        return out

    def sensor_note(self) -> str:
        return f"{self.sensor} ({self.sensor_reason})" if self.sensor else "not needed"


def _extra_source(band: str, spec: Any) -> tuple[str, Any]:
    if isinstance(spec, Mapping):
        if "constant" in spec:
            return "const", float(spec["constant"])
        if "raster" in spec:
            b = spec.get("band")
            return "aux", AuxBand(str(spec["raster"]), int(b) if b is not None else None, band)
        raise UserError(f"extra_bands.{band}: give a constant, a raster path or {{raster: path, band: n}}")
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return "const", float(spec)
    if isinstance(spec, str):
        try:
            return "const", float(spec)
        except ValueError:
            return "aux", AuxBand(spec, None, band)
    raise UserError(f"extra_bands.{band}={spec!r}: give a constant or a raster path")


def plan_bands(src, path: str | Path, bands: Sequence[str], band_map: Mapping[str, Any] | None = None,
               extra_bands: Mapping[str, Any] | None = None, assume_order: bool = False,
               band_scale: Mapping[str, Any] | None = None, band_offset: Mapping[str, Any] | None = None,
               sensor: str | None = None) -> BandPlan:
    """Map the checkpoint's ``bands`` onto the bands of the open raster ``src``.

    Numbered Landsat descriptions (``SR_B4``) are read by the scene's sensor (:func:`scene_sensor`,
    ``sensor`` overrides it); when one is needed and none can be told, that is a UserError.

    Stored values become physical ones as ``stored * scale + offset``: ``band_scale`` /
    ``band_offset`` by band name (e.g. Collection-2 integers), else the raster's own per-band
    scale/offset metadata (GDAL's convention; 1 and 0 when absent).
    """
    band_map = {k: v for k, v in (band_map or {}).items() if v is not None}
    factors = {}
    for key, given in (("band_scale", band_scale), ("band_offset", band_offset)):
        given = {k: v for k, v in (given or {}).items() if v is not None}
        usable = set(bands) | set(BAND_ALIASES) | {b for pair in DERIVED_BANDS.values() for b in pair}
        for name, value in given.items():
            if name not in usable:
                raise UserError(f"{key}.{name}: the model has no band {name!r} (its bands: {list(bands)})")
            try:
                given[name] = float(value)
            except (TypeError, ValueError):
                raise UserError(f"{key}.{name}={value!r}: expected a number") from None
        factors[key] = given
    extra_bands = {k: v for k, v in (extra_bands or {}).items() if v is not None}
    descriptions = list(src.descriptions or [None] * src.count)
    known = list(dict.fromkeys([*bands, *BAND_ALIASES, *(b for pair in DERIVED_BANDS.values() for b in pair)]))
    numbered = [d for d in descriptions if d and band_number(d) is not None]
    sensor, sensor_reason = scene_sensor(src, path, sensor) if numbered else (sensor, "sensor setting" if sensor else "")
    by_name: dict[str, int] = {}
    for i, desc in enumerate(descriptions, start=1):
        if desc:
            canon = canonical_band(desc, known, sensor)
            if canon is not None and canon not in by_name:
                by_name[canon] = i
    if not by_name and not band_map and not numbered:
        if assume_order and src.count >= len(bands):
            by_name = {b: i for i, b in enumerate(bands, start=1)}
        else:
            raise UserError(f"{path}: its {src.count} bands have no descriptions, so they cannot be matched to the "
                            f"model's bands {list(bands)} by name; give band_map={{B: 1, ...}} or assume_order=true")

    def lookup(name: str) -> int | None:
        if name in band_map:
            ref = band_map[name]
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                idx = int(ref)
                if not 1 <= idx <= src.count:
                    raise UserError(f"band_map.{name}={ref}: {path} has bands 1..{src.count}")
                return idx
            for i, desc in enumerate(descriptions, start=1):
                if desc and desc.strip().lower() == str(ref).strip().lower():
                    return i
            raise UserError(f"band_map.{name}={ref!r}: {path} has no band described so; it has {_band_list(descriptions)}")
        return by_name.get(name)

    read: list[int] = []
    read_names: list[str] = []
    sources: list[tuple] = []
    aux: list[AuxBand] = []

    def slot(idx: int, name: str) -> int:
        if idx not in read:
            read.append(idx)
            read_names.append(name)
        return read.index(idx)

    missing = []
    for band in bands:
        idx = lookup(band)
        if idx is not None:
            sources.append(("read", slot(idx, band)))
            continue
        if band in extra_bands and extra_bands[band] is not None:
            kind, value = _extra_source(band, extra_bands[band])
            if kind == "aux":
                aux.append(value)
                sources.append(("aux", len(aux) - 1))
            else:
                sources.append(("const", value))
            continue
        if band in DERIVED_BANDS:
            parts = [lookup(b) for b in DERIVED_BANDS[band]]
            if all(p is not None for p in parts):
                sources.append(("derived", *(slot(p, n) for p, n in zip(parts, DERIVED_BANDS[band]))))
                continue
        missing.append(band)
        sources.append(("missing",))
    if missing and numbered and sensor is None:
        raise UserError(f"{path}: band(s) {', '.join(missing)} would come from numbered band names "
                        f"({', '.join(numbered)}), which Landsat 4/5/7 and 8/9 number differently, and the scene's "
                        "sensor is not known; give sensor=tm (Landsat 4/5), sensor=etm (Landsat 7) or sensor=oli "
                        "(Landsat 8/9), or a {year}_ file name, or band_map.<band>=<index>")
    if missing:
        hint = "; give extra_bands.<band>=<constant or raster path> or band_map.<band>=<index or description>"
        raise UserError(f"{path}: band(s) {', '.join(missing)} needed by the model not found; the raster has "
                        f"{_band_list(descriptions)}{hint}")
    nodatavals = list(src.nodatavals or [None] * src.count)
    scales, offsets = list(src.scales or [1.0] * src.count), list(src.offsets or [0.0] * src.count)
    scale = [factors["band_scale"].get(n, scales[i - 1]) for i, n in zip(read, read_names)]
    offset = [factors["band_offset"].get(n, offsets[i - 1]) for i, n in zip(read, read_names)]
    return BandPlan(list(bands), read, sources, aux, [nodatavals[i - 1] for i in read],
                    [float(v) for v in scale], [float(v) for v in offset], read_names, sensor, sensor_reason)


#: Raster tags that name the sensor (USGS / Earth Engine metadata), checked in this order.
SENSOR_TAGS = ("SENSOR", "SPACECRAFT_ID", "SENSOR_ID", "LANDSAT_PRODUCT_ID", "LANDSAT_SCENE_ID", "PRODUCT_ID")


def _sensor_in(text: str) -> str | None:
    text = str(text).strip()
    for candidate in (text, text.split("_")[0], text[:4]):
        try:
            return resolve_sensor(candidate)
        except UserError:
            continue
    return None


def scene_sensor(src, path: str | Path, given: str | None = None) -> tuple[str | None, str]:
    """The scene's sensor (tm, etm, oli) and how it was told: ``given``, a sensor tag, a USGS
    product name (``LT05_…``, ``LC08_…``) or the year (``{year}_{grid}.tif`` or a year tag: the
    original workflow's Landsat 5 up to 2011, Landsat 8 from 2012). (None, "") when nothing tells."""
    from cropseg.maps import scene_year

    if given:
        return resolve_sensor(given), "sensor setting"
    tags = {k.upper(): v for k, v in (src.tags() or {}).items()}
    for key in SENSOR_TAGS:
        if tags.get(key) and (found := _sensor_in(tags[key])):
            return found, f"{key}={tags[key]}"
    if found := _sensor_in(Path(path).name):
        return found, f"file name {Path(path).name}"
    year = scene_year(Path(path))
    if year is None:
        for key in ("YEAR", "DATE_ACQUIRED", "ACQUISITION_DATE"):
            text = str(tags.get(key, ""))[:4]
            if text.isdigit():
                year = int(text)
                break
    if year is not None:
        return sensor_for_year(year), f"year {year}: Landsat 5 TM up to 2011, Landsat 8 OLI from 2012"
    return None, ""


def to_physical_(raw: np.ndarray, plan: Any) -> np.ndarray:
    """Stored values of ``plan.read`` bands (k, h, w) float32 → physical values, in place: a band's
    nodata value becomes NaN (tested on the stored values, before scaling), then scale and offset."""
    for k, (nd, s, o) in enumerate(zip(plan.nodata, plan.scale, plan.offset)):
        if nd is not None and np.isfinite(nd):
            raw[k][raw[k] == np.float32(nd)] = np.nan
        if (s, o) != (1.0, 0.0):
            raw[k] *= np.float32(s)
            raw[k] += np.float32(o)
    return raw


def check_units(src, path: str | Path, plan: BandPlan, spec: Any, samples: int = 3, size: int = 64) -> None:
    """Stop a scene whose values are clearly not in the units the model was trained on.

    A few small windows spread over the scene are read (cheap at any scene size) and the
    median of the valid values of each unit (reflectance, index, metres) is compared with
    its plausible range; stored integers (Collection-2 DN, reflectance × 10,000) or values
    scaled twice give one line naming the preset or ``band_scale`` that fixes it.
    """
    from rasterio.windows import Window

    units = dict(zip(spec.bands, spec.units)) | {n: BAND_UNITS.get(n, "unknown") for n in plan.read_names
                                                 if n not in spec.bands}
    h, w = min(size, src.height), min(size, src.width)
    rows = np.linspace(0, src.height - h, samples).astype(int)
    cols = np.linspace(0, src.width - w, samples).astype(int)
    values: dict[str, list[np.ndarray]] = {}
    for r in sorted(set(rows)):
        for c in sorted(set(cols)):
            raw = to_physical_(src.read(plan.read, window=Window(int(c), int(r), w, h), out_dtype="float32"), plan)
            for k, name in enumerate(plan.read_names):
                values.setdefault(units.get(name, "unknown"), []).append(raw[k][np.isfinite(raw[k])])
    for unit, parts in values.items():
        if unit not in UNIT_MEDIAN_RANGE:
            continue
        v = np.concatenate(parts)
        if not v.size:
            continue
        med = float(np.median(v))
        lo, hi = UNIT_MEDIAN_RANGE[unit]
        if lo <= med <= hi:
            continue
        names = [n for n in plan.read_names if units.get(n) == unit]
        scaled = [k for k, n in enumerate(plan.read_names) if n in names and (plan.scale[k], plan.offset[k]) != (1.0, 0.0)]
        got = f"{path}: bands {', '.join(names)} have median {med:,.4g}"
        if unit == "reflectance" and med < lo and scaled:
            k = scaled[0]
            raise UserError(f"{got} after scaling by {plan.scale[k]:g} and {plan.offset[k]:+g}: they look like "
                            "reflectance scaled twice; drop predict=c2_dn / band_scale / band_offset for a composite "
                            "already in reflectance 0..1 (check_units=false skips this check)")
        if unit == "reflectance" and 5000 <= med <= 65535:
            raise UserError(f"{got}: they look like Landsat Collection-2 Level-2 integers, not the reflectance 0..1 the "
                            f"model was trained on; use predict=c2_dn (DN * {C2_SR_SCALE} {C2_SR_OFFSET:+g}) "
                            "(check_units=false skips this check)")
        if unit == "reflectance" and hi < med < 5000:
            raise UserError(f"{got}: they look like reflectance * 10,000, not the reflectance 0..1 the model was "
                            "trained on; give band_scale.<band>=0.0001 for each of them (check_units=false skips this check)")
        raise UserError(f"{got}, outside the {lo:g}..{hi:g} expected of {unit} by the model; give band_scale.<band> / "
                        "band_offset.<band> that turn them into it (check_units=false skips this check)")


def _band_list(descriptions: Sequence[str | None]) -> str:
    return ", ".join(f"{i}:{d or '(no description)'}" for i, d in enumerate(descriptions, start=1))


def check_georeferenced(src, path: str | Path) -> None:
    if src.crs is None:
        raise UserError(f"{path}: the raster has no CRS (it is not georeferenced); assign one, e.g. "
                        "gdal_edit.py -a_srs EPSG:xxxx")


class SceneReader:
    """Reads windows of a scene as the model's raw bands plus a validity mask.

    ``read_window(row0, col0, h, w)`` returns ``(x, valid)``: ``x`` float32 (C, h, w), the
    checkpoint's bands in order and in physical units, NaN where a band has no data;
    ``valid`` bool (h, w): every band has data there. ``read_rows(r0, r1)`` is the window of
    whole rows (prediction); training chips (cropseg.data.chips) read square windows, so both
    go through the same band mapping. Normalization and the nodata rule are the model's
    (cropseg.models.preprocess). Rasterio reads only the blocks the window touches; nothing
    else of the scene is held.
    """

    def __init__(self, src, plan: BandPlan):
        rasterio = _rasterio()
        from rasterio.vrt import WarpedVRT

        self.src = src
        self.plan = plan
        self.width, self.height = src.width, src.height
        self._stack = contextlib.ExitStack()
        self.aux = []
        for a in plan.aux:
            aux_src = self._stack.enter_context(open_raster(a.path))
            band = a.band
            if band is None:
                if aux_src.count == 1:
                    band = 1
                else:
                    names = [canonical_band(d, [a.name]) if d else None for d in aux_src.descriptions]
                    if a.name not in names:
                        raise UserError(f"{a.path}: {aux_src.count} bands and none described as {a.name!r}; "
                                        f"give extra_bands.{a.name}={{raster: {a.path}, band: n}}")
                    band = names.index(a.name) + 1
            if not 1 <= band <= aux_src.count:
                raise UserError(f"{a.path}: has bands 1..{aux_src.count}, not {band}")
            if aux_src.crs is None:
                check_georeferenced(aux_src, a.path)
            vrt = self._stack.enter_context(WarpedVRT(
                aux_src, crs=src.crs, transform=src.transform, width=src.width, height=src.height,
                resampling=rasterio.enums.Resampling.bilinear, src_nodata=aux_src.nodata, nodata=np.nan,
                dtype="float32"))
            self.aux.append((vrt, band))

    def close(self) -> None:
        self._stack.close()

    def read_rows(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``r0`` to ``r1`` (exclusive), the scene's full width."""
        return self.read_window(r0, 0, r1 - r0, self.width)

    def read_window(self, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``h`` x ``w`` window at (``row0``, ``col0``), inside the scene."""
        from rasterio.windows import Window

        if row0 < 0 or col0 < 0 or h < 0 or w < 0 or row0 + h > self.height or col0 + w > self.width:
            raise ValueError(f"window rows {row0}..{row0 + h}, cols {col0}..{col0 + w} is not inside the "
                             f"{self.height} x {self.width} scene")
        win = Window(col0, row0, w, h)
        raw = to_physical_(self.src.read(self.plan.read, window=win, out_dtype="float32"), self.plan)
        out = np.empty((len(self.plan.bands), h, w), np.float32)
        for c, s in enumerate(self.plan.sources):
            if s[0] == "read":
                out[c] = raw[s[1]]
            elif s[0] == "derived":
                out[c] = ndvi(raw[s[1]], raw[s[2]])
            elif s[0] == "const":
                out[c] = s[1]
            else:
                vrt, band = self.aux[s[1]]
                out[c] = vrt.read(band, window=win, out_dtype="float32")  # NaN outside its coverage
        return out, np.isfinite(out.sum(axis=0))


def output_profile(src, class_band: bool, cog: bool = False, blocksize: int = 256) -> dict[str, Any]:
    profile = {
        "driver": "GTiff", "width": src.width, "height": src.height, "count": 2 if class_band else 1,
        "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": NODATA_OUT,
        "tiled": True, "blockxsize": blocksize, "blockysize": blocksize, "compress": "lzw",
        "predictor": 2, "interleave": "band", "BIGTIFF": "IF_SAFER",
    }
    if src.width < blocksize or src.height < blocksize:  # GDAL needs blocks of multiples of 16
        profile["blockxsize"] = profile["blockysize"] = max(16, min(blocksize, 16 * ((min(src.width, src.height) + 15) // 16)))
    return profile


class MapWriter:
    """Writes finished output rows, buffering them so that writes align with the tile rows."""

    def __init__(self, path: str | Path, profile: dict[str, Any], tags: Mapping[str, str],
                 descriptions: Sequence[str]):
        rasterio = _rasterio()
        self.path = Path(path)
        self.block = int(profile["blockysize"])
        self.dst = rasterio.open(self.path, "w", **profile)
        self.dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, d in enumerate(descriptions, start=1):
            self.dst.set_band_description(i, d)
        self.dst.scales = tuple([1.0 / PROB_SCALE] + [1.0] * (profile["count"] - 1))
        self.dst.offsets = tuple([0.0] * profile["count"])
        self.row = 0  # next scene row to write
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def write(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.pending_rows += rows.shape[1]
        if self.pending_rows >= self.block:
            self._flush(whole_blocks=True)

    def _flush(self, whole_blocks: bool) -> None:
        from rasterio.windows import Window

        if not self.pending:
            return
        data = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        n = (data.shape[1] // self.block) * self.block if whole_blocks else data.shape[1]
        if n:
            self.dst.write(data[:, :n], window=Window(0, self.row, data.shape[2], n))
            self.row += n
        rest = data[:, n:]
        self.pending = [rest] if rest.shape[1] else []
        self.pending_rows = rest.shape[1]

    def close(self) -> None:
        self._flush(whole_blocks=False)
        self.dst.close()


def finish_output(tmp: Path, overviews: bool, cog: bool) -> Path:
    """Add overviews to, or convert to a COG, the finished temporary map; returns the file to rename."""
    rasterio = _rasterio()
    from rasterio.enums import Resampling

    if cog:
        from rasterio.shutil import copy as rio_copy

        cog_tmp = tmp.with_name(tmp.name + ".cog")
        rio_copy(tmp, cog_tmp, driver="COG", compress="LZW", predictor=2, overview_resampling="average",
                 blocksize=512, BIGTIFF="IF_SAFER")
        os.replace(cog_tmp, tmp)
        return tmp
    if overviews:
        with rasterio.open(tmp, "r+") as dst:
            size = max(dst.width, dst.height)
            factors = [f for f in (2, 4, 8, 16, 32, 64) if size // f >= 128] or [2]
            dst.build_overviews(factors, Resampling.average)
            dst.update_tags(ns="rio_overview", resampling="average")
    return tmp
