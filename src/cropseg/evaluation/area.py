"""Cropland area per region (polygons, regular lon/lat cells, or map tiles) and year.

Pixel areas are true areas on the ellipsoid of the map's CRS: exact per row in a
geographic CRS, the map-plane area over the projection's areal scale factor in a
projected one (see ``geodesy``). Maps are streamed in strips, so a map never has to fit
in memory; each strip is labelled with its zones once and summed per zone in one
``bincount`` pass (not one mask per zone). A region's area sums every map of the year
that overlaps it (tiles of one year are assumed not to overlap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import rasterio
from rasterio.features import rasterize
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from cropseg.errors import UserError
from cropseg.io import ensure_output_dir
from cropseg.maps import NODATA

from .geodesy import pixel_areas
from .maps import MapRaster, MapSpec, maps_by_year, open_maps
from .vector import WGS84, geometry_bounds, read_regions


def _strip_areas(m: MapRaster, win: Window) -> np.ndarray:
    """True pixel areas (m²) of a strip, broadcastable to (rows, width)."""
    return pixel_areas(m.transform, m.crs, int(win.row_off), int(win.height), 0, m.width)


def map_class_areas(m: MapRaster, rows: int = 1024) -> tuple[float, float]:
    """(cropland m², mapped m²) of one map."""
    crop = valid_total = 0.0
    with rasterio.open(m.path) as ds:
        for win, c, v, _ in m.blocks(ds, rows):
            a = _strip_areas(m, win)
            crop += float((a * c).sum())
            valid_total += float((a * v).sum())
    return crop, valid_total


@dataclass
class Regions:
    """Zones to sum over: polygon regions, or None for lon/lat cells / map tiles."""

    ids: list[str]
    geometries: list[dict] | None = None  # in ``crs``
    crs: object = None
    cell_size: float | None = None  # degrees, for lon/lat cells
    bbox: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # lon/lat


def load_regions(path: str | Path, id_column: str | None = None) -> Regions:
    ids, geoms, crs = read_regions(path, id_column)
    bbox = {}
    for i, g in zip(ids, geoms):
        b = geometry_bounds(g)
        bbox[i] = b if crs == WGS84 else transform_bounds(crs, WGS84, *b)
    return Regions(ids=ids, geometries=geoms, crs=crs, bbox=bbox)


def cell_id(lon: float, lat: float, size: float) -> str:
    return f"{'E' if lon >= 0 else 'W'}{abs(lon):06.2f}{'N' if lat >= 0 else 'S'}{abs(lat):05.2f}"


def _accumulate(m: MapRaster, zones_for_strip, rows: int) -> dict:
    """Per zone id: [cropland m², mapped m², nodata m²] over one map.

    ``zones_for_strip(win)`` labels the strip's pixels: (int array, -1 outside every zone; ids
    of the labels 0..K-1). Each sum is one weighted ``bincount`` over the labelled pixels.
    """
    acc: dict = {}
    with rasterio.open(m.path) as ds:
        for win, crop, valid, _ in m.blocks(ds, rows):
            label, ids = zones_for_strip(win)
            if not ids:
                continue
            inside = label >= 0
            lab = label[inside]
            a = np.broadcast_to(_strip_areas(m, win), label.shape)[inside]
            v = valid[inside]
            k = len(ids)
            sums = np.stack([np.bincount(lab, weights=a * crop[inside], minlength=k),
                             np.bincount(lab, weights=a * v, minlength=k),
                             np.bincount(lab, weights=a * ~v, minlength=k)], axis=1)
            present = np.bincount(lab, minlength=k) > 0
            for j in np.flatnonzero(present):
                acc.setdefault(ids[j], np.zeros(3))
                acc[ids[j]] += sums[j]
    return acc


def _region_zones(m: MapRaster, regions: Regions):
    b = m.bounds
    geoms, idx = [], []
    for k, g in enumerate(regions.geometries or []):
        gm = g if regions.crs == m.crs else transform_geom(regions.crs, m.crs, g)
        x0, y0, x1, y1 = geometry_bounds(gm)
        if x1 < b.left or x0 > b.right or y1 < b.bottom or y0 > b.top:
            continue
        geoms.append(gm)
        idx.append(k)

    ids = [regions.ids[k] for k in idx]

    def zones(win: Window):
        if not geoms:
            return np.full((int(win.height), int(win.width)), -1), []
        label = rasterize([(g, i) for i, g in enumerate(geoms)], out_shape=(int(win.height), int(win.width)),
                          transform=window_transform(win, m.transform), fill=-1, dtype="int32")
        return label, ids

    return zones


def _cell_zones(m: MapRaster, size: float):
    cols = np.arange(m.width) + 0.5

    def zones(win: Window):
        rws = np.arange(int(win.row_off), int(win.row_off + win.height)) + 0.5
        if m.crs == WGS84 or (m.crs.is_geographic and m.crs.to_epsg() == 4326):
            lon = m.transform.c + m.transform.a * cols
            lat = m.transform.f + m.transform.e * rws
            lon, lat = np.broadcast_to(lon[None, :], (len(rws), len(cols))), np.broadcast_to(lat[:, None], (len(rws), len(cols)))
        else:
            xx = m.transform.c + m.transform.a * cols[None, :] + 0 * rws[:, None]
            yy = m.transform.f + m.transform.e * rws[:, None] + 0 * cols[None, :]
            tx, ty = warp_transform(m.crs, WGS84, xx.ravel().tolist(), yy.ravel().tolist())
            lon, lat = np.asarray(tx).reshape(xx.shape), np.asarray(ty).reshape(xx.shape)
        ci = np.floor(lon / size).astype(np.int64)
        cj = np.floor(lat / size).astype(np.int64)
        pairs, inverse = np.unique(np.stack([ci.ravel(), cj.ravel()], 1), axis=0, return_inverse=True)
        return inverse.reshape(ci.shape), [(int(i), int(j)) for i, j in pairs]

    return zones


def area_table(maps: Sequence[MapRaster], regions: Regions | None = None, cell_size: float | None = None,
               rows: int = 512) -> tuple[pd.DataFrame, dict]:
    """Rows (region, year, cropland_km2, mapped_km2, nodata_km2, fraction, west, south, east, north)."""
    records: dict = {}
    bbox: dict = dict(regions.bbox) if regions else {}
    for m in maps:
        if regions is not None:
            acc = _accumulate(m, _region_zones(m, regions), rows)
        elif cell_size:
            acc = {}
            for (i, j), v in _accumulate(m, _cell_zones(m, cell_size), rows).items():
                cid = cell_id(i * cell_size, j * cell_size, cell_size)
                bbox[cid] = (i * cell_size, j * cell_size, (i + 1) * cell_size, (j + 1) * cell_size)
                acc[cid] = v
        else:
            acc = _accumulate(m, lambda win: (np.zeros((int(win.height), m.width), np.int64), [m.grid]), rows)
            bbox[m.grid] = transform_bounds(m.crs, WGS84, *m.bounds) if m.crs != WGS84 else tuple(m.bounds)
        for zid, v in acc.items():
            records.setdefault((zid, m.year), np.zeros(3))
            records[(zid, m.year)] += v
    ids = list(regions.ids) if regions else sorted({z for z, _ in records})
    years = sorted({m.year for m in maps}, key=lambda y: (y is None, y or 0))
    if regions is not None and not any(v[1] + v[2] > 0 for v in records.values()):
        raise UserError("no region overlaps any map (check the regions' CRS and extent against the maps)")
    rows_out = []
    for zid in ids:
        for y in years:
            crop, mapped, nodata = records.get((zid, y), np.zeros(3))
            b = bbox.get(zid, (np.nan,) * 4)
            rows_out.append({"region": zid, "year": y, "cropland_km2": crop / 1e6, "mapped_km2": mapped / 1e6,
                             "nodata_km2": nodata / 1e6,
                             "cropland_fraction": crop / mapped if mapped > 0 else np.nan,
                             "west": b[0], "south": b[1], "east": b[2], "north": b[3]})
    return pd.DataFrame(rows_out), {"years": years}


def change_rasters(maps: Sequence[MapRaster], first: int, last: int, out_dir: Path) -> list[Path]:
    """Per map tile present in both years with the same grid: 0 stable non-cropland, 1 stable cropland,
    2 gain, 3 loss, ``cropseg.maps.NODATA`` nodata (uint8 GeoTIFF)."""
    from cropseg.io import atomic_path

    by_year = maps_by_year(maps)
    a = {m.grid: m for m in by_year.get(first, [])}
    b = {m.grid: m for m in by_year.get(last, [])}
    written = []
    for grid in sorted(set(a) & set(b)):
        ma, mb = a[grid], b[grid]
        if (ma.width, ma.height, ma.transform, ma.crs) != (mb.width, mb.height, mb.transform, mb.crs):
            continue
        path = out_dir / f"change_{first}_{last}_{grid}.tif"
        profile = dict(driver="GTiff", width=ma.width, height=ma.height, count=1, dtype="uint8", crs=ma.crs,
                       transform=ma.transform, nodata=NODATA, compress="lzw")
        with rasterio.open(ma.path) as da, rasterio.open(mb.path) as db, atomic_path(path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write_colormap(1, {0: (230, 230, 230, 255), 1: (120, 170, 90, 255), 2: (30, 90, 200, 255),
                                       3: (210, 60, 40, 255)})
                dst.update_tags(1, classes="0 stable non-cropland, 1 stable cropland, 2 gain, 3 loss",
                                years=f"{first}->{last}")
                for (win, ca, va, _), (_, cb, vb, _) in zip(ma.blocks(da), mb.blocks(db)):
                    code = np.where(ca & cb, 1, np.where(~ca & cb, 2, np.where(ca & ~cb, 3, 0))).astype(np.uint8)
                    code[~(va & vb)] = NODATA
                    dst.write(code, 1, window=win)
        written.append(path)
    return written


@dataclass
class AreaConfig:
    maps: Sequence[str]
    out: str = "evaluation/area"
    regions: str | None = None
    region_id: str | None = None
    cell_size: float | None = None
    spec: MapSpec = field(default_factory=MapSpec)
    plots: bool = True
    year: int | None = None  # only maps of this year; maps without a year in name or tags are this year's


def evaluate_area(cfg: AreaConfig) -> dict:
    from .points import _write_csv

    if cfg.regions and cfg.cell_size:
        raise UserError("give either regions= or cell_size=, not both")
    if cfg.cell_size is not None and not cfg.cell_size > 0:
        raise UserError(f"cell_size={cfg.cell_size}: must be a positive number of degrees")
    out = ensure_output_dir(cfg.out, "out")
    regions = load_regions(cfg.regions, cfg.region_id) if cfg.regions else None
    maps = open_maps(cfg.maps, cfg.spec, year=cfg.year, need_year=True)
    table, info = area_table(maps, regions, cfg.cell_size)
    _write_csv(table, out / "area.csv")
    years = info["years"]
    files = [str(out / "area.csv")]
    warnings = []
    tiles = {y: len(ms) for y, ms in maps_by_year(maps).items()}
    if len(set(tiles.values())) > 1:
        warnings.append("maps cover different numbers of tiles per year (" +
                        ", ".join(f"{y}: {n}" for y, n in tiles.items()) + "); compare fractions, not areas")
    change = []
    if len(years) > 1:
        change = change_rasters(maps, years[0], years[-1], out)
        files += [str(p) for p in change]
    if cfg.plots:
        from .plots import area_change_map, area_timeseries

        files.append(str(area_timeseries(table, out / "area_timeseries.png")))
        if len(years) > 1:
            files.append(str(area_change_map(table, change, regions, out / "change_map.png", years[0], years[-1])))
    totals = table.groupby("year")[["cropland_km2", "mapped_km2"]].sum()
    return {"table": table, "totals": totals, "files": files, "warnings": warnings, "maps": len(maps),
            "regions": table["region"].nunique()}
