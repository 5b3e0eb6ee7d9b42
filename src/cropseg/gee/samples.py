"""Training samples: patches around points, sampled from composite + label as arrays.

For each grid cell: the points (from an asset, or ``points.per_cell`` random points with a
seed), each with properties ``ID`` and ``GridID``; the composite and label stacked and
turned into ``(2r+1)×(2r+1)`` arrays by ``neighborhoodToArray`` with a square kernel of
radius ``r`` pixels; ``sampleRegions`` at the sampling scale (30 m). The TFRecord export
keeps ``ID, GridID, <bands>, <label>`` — what ``cropseg prepare convert`` reads.
"""

from __future__ import annotations

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
        fc = ee.FeatureCollection.randomPoints(geom, n, seed, float(pts_cfg.get("max_error", 1)))
        return fc.map(lambda f: ee.Feature(f).set(
            {ID: ee.Number.parse(ee.Feature(f).get("system:index")), GRID_ID: cell.id}))
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
