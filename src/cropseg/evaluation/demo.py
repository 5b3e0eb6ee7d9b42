"""A small, deterministic evaluation demo: prediction maps for several years, validation
points, region polygons and a reference product, all georeferenced.

Six 1° × 1° map tiles (EPSG:4326, 1/128° pixels) near 46°N, years 2015–2020. Each tile
has a planted cropland trend (rising, falling, stable high, stable low) applied to
field layouts from ``cropseg.data.demo.render_scene``; maps are truth plus smooth and
pixel noise, written as inference writes them: ``{year}_{grid}_cropland.tif``, band 1
probability ×200 (uint8), band 2 class, nodata 255, tag ``probability_scale=200``.
Points are a stratified random sample by map class (Olofsson-style) with truth coded
10 = cropland / 20 = other, plus points outside every map and on nodata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from cropseg.data.demo import render_scene, smooth_noise
from cropseg.io import atomic_path, write_text_atomic

from cropseg.maps import NODATA, encode, encoding_tags, map_name
from .vector import point_wkb, polygon_wkb

YEARS = tuple(range(2015, 2021))
PIX = 128  # pixels per 1° tile side
WEST, NORTH = 30.0, 47.0
#: (column, row) -> (grid name, fraction in the first year, fraction in the last year)
TILES = {
    (0, 0): ("E030N46", 0.15, 0.60), (1, 0): ("E031N46", 0.70, 0.25), (2, 0): ("E032N46", 0.65, 0.65),
    (0, 1): ("E030N45", 0.15, 0.15), (1, 1): ("E031N45", 0.20, 0.55), (2, 1): ("E032N45", 0.60, 0.58),
}
PATTERN = {"E030N46": "rising", "E031N46": "falling", "E032N46": "stable high", "E030N45": "stable low",
           "E031N45": "rising", "E032N45": "stable high"}
REGIONS = {  # name -> polygon ring (lon, lat), overlapping several tiles
    "west": [(30.05, 45.05), (30.95, 45.05), (30.95, 46.95), (30.05, 46.95)],
    "centre-north": [(31.0, 46.0), (32.0, 46.0), (32.0, 47.0), (31.0, 47.0)],
    "centre-south": [(31.0, 45.0), (32.0, 45.0), (32.0, 46.0), (31.0, 46.0)],
    "east": [(32.0, 45.0), (33.0, 45.0), (33.0, 47.0), (32.5, 47.0), (32.0, 46.5)],
}
REFERENCE_YEAR = 2018


def _truth(col: int, row: int) -> dict[int, np.ndarray]:
    grid, f0, f1 = TILES[(col, row)]
    rng = np.random.default_rng(1000 + 10 * col + row)
    _, base = render_scene(PIX, PIX, rng, cropland_fraction=0.9)
    base = base > 0.5
    order = smooth_noise((PIX, PIX), 10, rng)
    out = {}
    for i, y in enumerate(YEARS):
        f = f0 + (f1 - f0) * i / (len(YEARS) - 1)
        share = min(1.0, f / max(base.mean(), 1e-6))
        cut = np.quantile(order[base], share) if base.any() else 0
        out[y] = base & (order <= cut)
    return out


def _prediction(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    err = smooth_noise(truth.shape, 6, rng) * 0.22 + rng.normal(0, 0.08, truth.shape)
    return np.clip(0.13 + 0.74 * truth + err, 0, 1).astype(np.float32)


def _write_map(path: Path, prob: np.ndarray, transform, year: int, grid: str, nodata_mask: np.ndarray) -> None:
    bands = encode(prob, ~nodata_mask, 0.5)
    profile = dict(driver="GTiff", width=prob.shape[1], height=prob.shape[0], count=2, dtype="uint8",
                   crs="EPSG:4326", transform=transform, nodata=NODATA, compress="lzw")
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(bands)
            dst.set_band_description(1, "cropland probability")
            dst.set_band_description(2, "cropland class")
            dst.update_tags(**encoding_tags(), threshold="0.5", year=str(year), grid=grid, source="cropseg demo")


def _write_vector(path: Path, geoms: list[bytes], fields: dict[str, np.ndarray], geometry_type: str) -> bool:
    try:
        from pyogrio.raw import write
    except ImportError:
        return False
    names = list(fields)
    tmp = path.with_name(f".{path.stem}-tmp{path.suffix}")
    tmp.unlink(missing_ok=True)
    write(str(tmp), np.array(geoms, dtype=object), [np.asarray(fields[n]) for n in names], names,
          crs="EPSG:4326", geometry_type=geometry_type, layer=path.stem, driver="GPKG")
    tmp.replace(path)
    return True


def generate(out: str | Path, points_per_year: tuple[int, int] = (45, 65), seed: int = 0) -> dict:
    """Write maps/, reference/, points.{csv,geojson,gpkg}, regions.{geojson,gpkg}; return a summary."""
    out = Path(out)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    truth_all: dict[tuple[int, int], dict[int, np.ndarray]] = {}
    for (col, row), (grid, _, _) in TILES.items():
        truth_all[(col, row)] = truth = _truth(col, row)
        transform = from_origin(WEST + col, NORTH - row, 1 / PIX, 1 / PIX)
        nodata = np.zeros((PIX, PIX), bool)
        if (col, row) == (2, 0):  # a scene-edge wedge without data
            yy, xx = np.mgrid[:PIX, :PIX]
            nodata = xx + yy < PIX // 3
        for y in YEARS:
            prob = _prediction(truth[y], np.random.default_rng([seed, y, col, row]))
            _write_map(out / "maps" / map_name(y, grid), prob, transform, y, grid, nodata)
            samples.append((y, grid, col, row, truth[y], prob >= 0.5, nodata))
    # Stratified sample per year by map class over all tiles.
    pts = []
    for y in YEARS:
        cells = []
        for (yy, grid, col, row, truth, mapped, nodata) in samples:
            if yy != y:
                continue
            rr, cc = np.nonzero(~nodata)
            cells.append(pd.DataFrame({"grid": grid, "col": col, "row": row, "r": rr, "c": cc,
                                       "mapped": mapped[rr, cc].astype(int), "truth": truth[rr, cc].astype(int)}))
        cells = pd.concat(cells, ignore_index=True)
        for cls, n in ((1, points_per_year[0]), (0, points_per_year[1])):
            pool = cells[cells["mapped"] == cls]
            pick = pool.iloc[rng.choice(len(pool), size=n, replace=False)]
            pts.append(pick.assign(year=y, stratum=cls))
    pts = pd.concat(pts, ignore_index=True)
    lon = WEST + pts["col"] + (pts["c"] + rng.uniform(0.1, 0.9, len(pts))) / PIX
    lat = NORTH - pts["row"] - (pts["r"] + rng.uniform(0.1, 0.9, len(pts))) / PIX
    table = pd.DataFrame({"ID": np.arange(1, len(pts) + 1), "lon": lon.round(6), "lat": lat.round(6),
                          "year": pts["year"], "class": np.where(pts["truth"] == 1, 10, 20), "grid": pts["grid"],
                          "region": [_region_of(a, b) for a, b in zip(lon, lat)], "stratum": pts["stratum"]})
    extra = pd.DataFrame({"ID": np.arange(len(table) + 1, len(table) + 7),
                          "lon": [34.5, 29.2, 31.5, 32.05, 32.08, 32.1], "lat": [46.5, 45.5, 44.5, 46.97, 46.95, 46.98],
                          "year": [2015, 2016, 2017, 2018, 2019, 2020], "class": [10, 20, 20, 10, 20, 20],
                          "grid": ["", "", "", "E032N46", "E032N46", "E032N46"],
                          "region": ["", "", "", "east", "east", "east"], "stratum": [-1] * 6})
    table = pd.concat([table, extra], ignore_index=True)  # 3 outside every map, 3 on nodata
    with atomic_path(out / "points.csv") as tmp:
        table.to_csv(tmp, index=False)
    feats = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(a), float(b)]},
              "properties": {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items() if k not in ("lon", "lat")}}
             for r, a, b in zip(table.to_dict(orient="records"), table["lon"], table["lat"])]
    write_text_atomic(out / "points.geojson", json.dumps({"type": "FeatureCollection", "features": feats}))
    fields = {k: table[k].to_numpy() for k in ("ID", "year", "class", "grid", "region", "stratum")}
    wrote_gpkg = _write_vector(out / "points.gpkg", [point_wkb(a, b) for a, b in zip(table["lon"], table["lat"])],
                               fields, "Point")
    rfeats = [{"type": "Feature", "properties": {"name": n},
               "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring + [ring[0]]]]}}
              for n, ring in REGIONS.items()]
    write_text_atomic(out / "regions.geojson", json.dumps({"type": "FeatureCollection", "features": rfeats}))
    _write_vector(out / "regions.gpkg", [polygon_wkb([ring + [ring[0]]]) for ring in REGIONS.values()],
                  {"name": np.array(list(REGIONS))}, "Polygon")
    _write_reference(out / "reference" / f"gfsad_{REFERENCE_YEAR}.tif", truth_all, rng)
    summary = {"root": str(out), "maps": len(list((out / "maps").glob("*.tif"))), "years": list(YEARS),
               "points": len(table), "regions": len(REGIONS), "gpkg": wrote_gpkg, "patterns": PATTERN}
    write_text_atomic(out / "demo.json", json.dumps(summary, indent=2))
    return summary


def _region_of(lon: float, lat: float) -> str:
    for name, ring in REGIONS.items():
        xs, ys = zip(*ring)
        if min(xs) <= lon < max(xs) and min(ys) <= lat < max(ys):
            return name
    return "none"


def _write_reference(path: Path, truth_all: dict, rng: np.random.Generator) -> None:
    """A GFSAD30-like product for one year: 1 non-cropland, 2 cropland, 0 nodata, in UTM 36N, coarser pixels."""
    mosaic = np.zeros((2 * PIX, 3 * PIX), np.uint8)
    for (col, row), truth in truth_all.items():
        t = truth[REFERENCE_YEAR].copy()
        flip = smooth_noise(t.shape, 5, rng) > 1.3  # the reference disagrees in a few blobs
        t ^= flip
        mosaic[row * PIX:(row + 1) * PIX, col * PIX:(col + 1) * PIX] = np.where(t, 2, 1)
    src_tr = from_origin(WEST, NORTH, 1 / PIX, 1 / PIX)
    dst_crs = "EPSG:32636"
    tr, w, h = calculate_default_transform("EPSG:4326", dst_crs, 3 * PIX, 2 * PIX, WEST, NORTH - 2, WEST + 3, NORTH,
                                           resolution=1000)
    dst = np.zeros((h, w), np.uint8)
    reproject(mosaic, dst, src_transform=src_tr, src_crs="EPSG:4326", dst_transform=tr, dst_crs=dst_crs,
              resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=dst_crs,
                           transform=tr, nodata=0, compress="lzw") as ds:
            ds.write(dst, 1)
            ds.set_band_description(1, "cropland class (1 other, 2 cropland)")
            ds.update_tags(year=str(REFERENCE_YEAR), source="cropseg demo, GFSAD30-like")
