"""Annual Landsat Collection 2 Level-2 composites and the label image, as ``ee.Image`` graphs.

A composite for a year is the median of every clear pixel of the sensors configured for
that year within ``year ± window``: surface reflectance scaled by 0.0000275 and offset
by −0.2, masked with QA_PIXEL (fill, dilated cloud, cirrus, cloud, cloud shadow, snow),
bands renamed to cropseg's names (``cropseg.bands``), plus NDVI and a DEM, as float.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cropseg.bands import C2_SR_OFFSET, C2_SR_SCALE, DEFAULT_BANDS, DERIVED_BANDS, LABEL_BAND, sensor_codes
from cropseg.errors import UserError

#: QA_PIXEL bit numbers (Collection 2).
QA_BITS = {"fill": 0, "dilated": 1, "cirrus": 2, "cloud": 3, "shadow": 4, "snow": 5}
#: Reflectance bands every sensor is harmonised to (cropseg names).
REFLECTANCE_BANDS = ("B", "G", "R", "NIR", "SWIR1", "SWIR2")
# Band numbers per sensor live in cropseg.bands (SENSOR_BANDS): prediction reads them the same way.
_TM_BANDS = sensor_codes("tm", REFLECTANCE_BANDS)
_ETM_BANDS = sensor_codes("etm", REFLECTANCE_BANDS)
_OLI_BANDS = sensor_codes("oli", REFLECTANCE_BANDS)


@dataclass(frozen=True)
class Sensor:
    name: str
    collection: str
    first_year: int
    last_year: int | None  # None: still acquiring
    sr_bands: tuple[str, ...]  # in the order of REFLECTANCE_BANDS
    has_cirrus: bool

    def years(self) -> tuple[int, int]:
        return self.first_year, self.last_year or _dt.date.today().year


#: Landsat Collection 2 Tier 1 Level-2 collections and the years they hold data.
SENSORS: dict[str, Sensor] = {
    "LT05": Sensor("LT05", "LANDSAT/LT05/C02/T1_L2", 1984, 2012, _TM_BANDS, False),
    "LE07": Sensor("LE07", "LANDSAT/LE07/C02/T1_L2", 1999, 2024, _ETM_BANDS, False),
    "LC08": Sensor("LC08", "LANDSAT/LC08/C02/T1_L2", 2013, None, _OLI_BANDS, True),
    "LC09": Sensor("LC09", "LANDSAT/LC09/C02/T1_L2", 2021, None, _OLI_BANDS, True),
}
_SENSOR_ALIASES = {"L5": "LT05", "L7": "LE07", "L8": "LC08", "L9": "LC09", "LANDSAT5": "LT05",
                   "LANDSAT7": "LE07", "LANDSAT8": "LC08", "LANDSAT9": "LC09"}
#: Bands a composite can hold.
AVAILABLE_BANDS = (*REFLECTANCE_BANDS, *DERIVED_BANDS, "Dem")


def sensor(name: str) -> Sensor:
    key = str(name).upper().replace("-", "").replace("_", "")
    key = _SENSOR_ALIASES.get(key, key)
    if key not in SENSORS:
        raise UserError(f"gee: sensor {name!r} is not known; choose among {', '.join(SENSORS)}")
    return SENSORS[key]


def check_bands(bands: Sequence[str] | None, key: str = "composite.bands") -> list[str]:
    """The composite bands asked for (default ``cropseg.bands.DEFAULT_BANDS``), each checked."""
    bands = list(DEFAULT_BANDS if bands is None else bands)
    if not bands:
        raise UserError(f"{key} is empty; give at least one of {', '.join(AVAILABLE_BANDS)}")
    for band in bands:
        if band not in AVAILABLE_BANDS:
            raise UserError(f"{key}: band {band!r} does not exist; choose among {', '.join(AVAILABLE_BANDS)}")
    if len(set(bands)) != len(bands):
        raise UserError(f"{key}: a band is listed twice in {bands}")
    return bands


def sensors_for_year(year: int, rules: Sequence[Mapping[str, Any]], window: int) -> list[Sensor]:
    """The sensors of the first rule whose ``[from, to]`` holds ``year``, each checked to
    have data within ``year ± window``."""
    year = int(year)
    for rule in rules:
        lo, hi = rule.get("from"), rule.get("to")
        if (lo is None or year >= int(lo)) and (hi is None or year <= int(hi)):
            names = rule.get("sensors") or []
            if not names:
                raise UserError(f"gee: sensors.rules entry {dict(rule)} lists no sensors")
            chosen = [sensor(n) for n in names]
            for s in chosen:
                first, last = s.years()
                if year + window < first or year - window > last:
                    raise UserError(
                        f"gee: year {year} (window ±{window}) is outside the {s.name} archive ({first}–{last})"
                    )
            return chosen
    raise UserError(f"gee: no sensors.rules entry covers year {year}")


def year_window(year: int, window: int, months: Sequence[int] | None = None) -> tuple[str, str]:
    """Start (inclusive) and end (exclusive) dates of ``year ± window``."""
    return f"{int(year) - window}-01-01", f"{int(year) + window + 1}-01-01"


def qa_mask(image, s: Sensor, mask_cfg: Mapping[str, bool]):
    """1 where no masked QA_PIXEL bit is set."""
    import ee

    bits = 0
    for name, bit in QA_BITS.items():
        if mask_cfg.get(name, True) and (name != "cirrus" or s.has_cirrus):
            bits |= 1 << bit
    qa = image.select("QA_PIXEL")
    return qa.bitwiseAnd(ee.Number(bits)).eq(0)


def prepare_image(image, s: Sensor, mask_cfg: Mapping[str, bool]):
    """One scene: scaled, masked, renamed to :data:`REFLECTANCE_BANDS`."""
    sr = image.select(list(s.sr_bands), list(REFLECTANCE_BANDS)).multiply(C2_SR_SCALE).add(C2_SR_OFFSET)
    return sr.updateMask(qa_mask(image, s, mask_cfg)).copyProperties(image, ["system:time_start"])


def landsat_collection(year: int, cfg: Mapping[str, Any], region=None):
    """The merged, prepared scenes of every sensor configured for ``year``."""
    import ee

    window = int(cfg["sensors"].get("window", 1))
    chosen = sensors_for_year(year, cfg["sensors"]["rules"], window)
    comp = cfg["composite"]
    start, end = year_window(year, window)
    merged = None
    for s in chosen:
        col = ee.ImageCollection(s.collection).filterDate(start, end)
        if region is not None:
            col = col.filterBounds(region)
        if comp.get("max_cloud_cover") is not None:
            col = col.filter(ee.Filter.lt("CLOUD_COVER", float(comp["max_cloud_cover"])))
        months = comp.get("months")
        if months:
            col = col.filter(ee.Filter.calendarRange(int(min(months)), int(max(months)), "month"))
        col = col.map(lambda img, s=s: ee.Image(prepare_image(ee.Image(img), s, comp.get("mask", {}))))
        merged = col if merged is None else merged.merge(col)
    return merged


def dem_image(cfg: Mapping[str, Any]):
    import ee

    dem = cfg["composite"].get("dem") or {}
    if not dem.get("asset"):
        raise UserError("composite.dem.asset is required (e.g. composite.dem.asset=USGS/SRTMGL1_003)")
    return ee.Image(dem["asset"]).select(dem.get("band", "elevation")).rename("Dem")


def composite(year: int, cfg: Mapping[str, Any], region=None, bands: Sequence[str] | None = None):
    """The annual composite for ``year``: the configured bands, in order, as float."""
    import ee

    comp = cfg["composite"]
    bands = check_bands(bands if bands is not None else comp.get("bands"))
    reducer = str(comp.get("reducer", "median"))
    if reducer not in {"median", "mean"}:
        raise UserError(f"composite.reducer={reducer!r} is not known; choose median or mean")
    col = landsat_collection(year, cfg, region)
    image = col.median() if reducer == "median" else col.mean()
    parts = [image.select([b for b in bands if b in REFLECTANCE_BANDS])] if any(
        b in REFLECTANCE_BANDS for b in bands) else []
    for derived, (a, b) in DERIVED_BANDS.items():
        if derived in bands:
            parts.append(image.normalizedDifference([a, b]).rename(derived))
    if "Dem" in bands:
        parts.append(dem_image(cfg))
    out = ee.Image.cat(parts).select(bands).toFloat()
    return out.set({"year": int(year), "sensors": ",".join(s.name for s in sensors_for_year(
        year, cfg["sensors"]["rules"], int(cfg["sensors"].get("window", 1))))})


def label_image(cfg: Mapping[str, Any]):
    """The label image: ``label.expression`` on the label asset, one band named LABEL_BAND."""
    import ee

    lab = cfg["label"]
    if not lab.get("asset"):
        raise UserError("label.asset is required (the Earth Engine id of the cropland reference)")
    kind = str(lab.get("kind", "image"))
    if kind == "collection":
        src = ee.ImageCollection(lab["asset"]).mosaic()
    elif kind == "image":
        src = ee.Image(lab["asset"])
    else:
        raise UserError(f"label.kind={kind!r} is not known; choose image or collection")
    img = src.expression(str(lab.get("expression", "b(0)")))
    if lab.get("unmask") is not None:
        img = img.unmask(lab["unmask"])
    return img.rename(LABEL_BAND).toFloat()
