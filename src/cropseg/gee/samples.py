"""Training samples: patches around points, sampled from composite + label as arrays.

For each grid cell: the points (from an asset, or ``points.per_cell`` random points with a
seed, at least ``points.min_distance_km`` apart), each with properties ``ID`` and ``GridID``; the composite and label stacked and
turned into ``(2r+1)×(2r+1)`` arrays by ``neighborhoodToArray`` with a square kernel of
radius ``r`` pixels; ``sampleRegions`` at the sampling scale (30 m). The TFRecord export
keeps ``ID, GridID, <bands>, <label>`` — what ``cropseg prepare convert`` reads.
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping

from cropseg.bands import LABEL_BAND
from cropseg.errors import UserError
from cropseg.gee.composites import check_bands, composite, label_image
from cropseg.gee.grid import Cell

ID, GRID_ID = "ID", "GridID"


def check_kernel(radius: Any, patch_size: Any) -> int:
    """The kernel radius, checked against the configured patch size.

    ``neighborhoodToArray`` with radius r gives (2r+1)-pixel patches; the patch size may be
    that, or 2r when the converter crops one pixel (the original: 96 → 193 → 192).
    """
    try:
        r = int(radius)
    except (TypeError, ValueError):
        raise UserError(f"samples.kernel_radius={radius!r} must be a whole number of pixels") from None
    if r < 1:
        raise UserError(f"samples.kernel_radius={r} must be at least 1")
    if patch_size is not None and int(patch_size) not in (2 * r + 1, 2 * r):
        raise UserError(
            f"samples.kernel_radius={r} gives {2 * r + 1}×{2 * r + 1} patches but samples.patch_size={patch_size}; "
            f"use kernel_radius={int(patch_size) // 2} or patch_size={2 * r + 1} (or {2 * r}, cropped on conversion)"
        )
    return r


#: km per degree of latitude at the equator (the fewest anywhere) and of longitude on the equator.
_KM_PER_DEG_LAT, _KM_PER_DEG_LON = 110.574, 111.320


def lattice_step(south: float, north: float, min_distance_km: float) -> tuple[float, float]:
    """(lon, lat) degrees between lattice points that are >= ``min_distance_km`` apart anywhere
    between latitudes ``south`` and ``north``: the longitude step is sized at the poleward edge,
    where meridians are closest (on the ellipsoid a degree is never shorter than these values)."""
    poleward = min(89.0, max(abs(south), abs(north)))
    return (min_distance_km / (_KM_PER_DEG_LON * math.cos(math.radians(poleward))),
            min_distance_km / _KM_PER_DEG_LAT)


def spaced_points(cell: Cell, geom, n: int, min_distance_km: float, seed: int, max_abs_lat: float = 60.0):
    """``n`` points of ``cell`` at least ``min_distance_km`` apart: a random subset of the centres of a
    lattice with that spacing, its origin shifted at random (seeded) so cells and seeds differ."""
    import ee

    west, south, east, north = cell.bounds if cell.bounds is not None else (-180, -max_abs_lat, 180, max_abs_lat)
    dlon, dlat = lattice_step(south, north, min_distance_km)
    if cell.bounds is not None:
        fit = int((east - west) // dlon) * int((north - south) // dlat)
        if fit < n:
            raise UserError(f"points.per_cell={n} points at least points.min_distance_km={min_distance_km:g} apart do "
                            f"not fit in grid cell {cell.id} (about {fit} do); lower one of them")
    rng = random.Random(seed)
    # The lattice as a pixel grid: [x scale, shear, x origin, shear, y scale, y origin], in degrees.
    proj = ee.Projection("EPSG:4326", [dlon, 0, rng.random() * dlon, 0, -dlat, rng.random() * dlat])
    centres = ee.Image.pixelLonLat().sample(region=geom, projection=proj, geometries=True)
    return centres.randomColumn("random", seed).sort("random").limit(n)


def points(cell: Cell, cfg: Mapping[str, Any], grid_cfg: Mapping[str, Any]):
    """The sample points of ``cell`` with ``ID`` and ``GridID`` set."""
    import ee

    pts_cfg = cfg["points"]
    source = str(pts_cfg.get("source", "random"))
    geom = cell.geometry(grid_cfg)
    if source == "random":
        n = int(pts_cfg.get("per_cell", 50))
        if n < 1:
            raise UserError(f"points.per_cell={n} must be at least 1")
        seed = int(pts_cfg.get("seed", 0)) + cell.id  # per-cell seed: cells differ, reruns repeat
        spacing = float(pts_cfg.get("min_distance_km") or 0)
        if spacing < 0:
            raise UserError(f"points.min_distance_km={spacing:g} must be >= 0 (0: no minimum)")
        if spacing == 0:
            fc = ee.FeatureCollection.randomPoints(geom, n, seed, float(pts_cfg.get("max_error", 1)))
            return fc.map(lambda f: ee.Feature(f).set(
                {ID: ee.Number.parse(ee.Feature(f).get("system:index")), GRID_ID: cell.id}))
        chosen = spaced_points(cell, geom, n, spacing, seed, float(grid_cfg.get("max_abs_lat", 60))).toList(n)
        return ee.FeatureCollection(ee.List.sequence(0, chosen.size().subtract(1)).map(
            lambda i: ee.Feature(ee.Feature(chosen.get(i)).geometry(), {ID: i, GRID_ID: cell.id})))
    if source == "asset":
        if not pts_cfg.get("asset"):
            raise UserError("points.asset is required when points.source=asset (an Earth Engine FeatureCollection id)")
        fc = ee.FeatureCollection(pts_cfg["asset"]).filterBounds(geom)
        id_prop = pts_cfg.get("id_property", ID)
        return fc.map(lambda f: ee.Feature(f).set({ID: ee.Feature(f).get(id_prop), GRID_ID: cell.id}))
    raise UserError(f"points.source={source!r} is not known; choose random or asset")


def selectors(cfg: Mapping[str, Any]) -> list[str]:
    return [ID, GRID_ID, *check_bands(cfg["composite"].get("bands")), LABEL_BAND]


def sample_collection(cell: Cell, year: int, cfg: Mapping[str, Any]):
    """The FeatureCollection exported for ``cell``: one feature per point, one array per band."""
    import ee

    s = cfg["samples"]
    radius = check_kernel(s.get("kernel_radius", 96), s.get("patch_size"))
    geom = cell.geometry(cfg["grid"])
    stack = composite(year, cfg, region=geom).addBands(label_image(cfg)).toFloat()
    kernel = ee.Kernel.rectangle(radius, radius, "pixels")
    arrays = stack.neighborhoodToArray(kernel)
    kwargs: dict[str, Any] = {"collection": points(cell, cfg, cfg["grid"]), "properties": [ID, GRID_ID],
                              "scale": float(s.get("scale", 30)), "geometries": False}
    if s.get("tile_scale"):
        kwargs["tileScale"] = float(s["tile_scale"])
    return arrays.sampleRegions(**kwargs)
