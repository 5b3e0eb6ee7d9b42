"""Grid cells: the unit of every export (one TFRecord or GeoTIFF per cell).

Cells come from an Earth Engine asset (a FeatureCollection with an id property) or are
generated here: ``size``° squares whose centre lies within ±``max_abs_lat``°, numbered
row by row from the north-west (id = row × columns + column), optionally restricted to
a bounding box or to a list of ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cropseg.errors import UserError


@dataclass(frozen=True)
class Cell:
    id: int
    bounds: tuple[float, float, float, float] | None  # west, south, east, north; None: from asset

    def geometry(self, cfg: Mapping[str, Any] | None = None):
        import ee

        if self.bounds is not None:
            return ee.Geometry.Rectangle(list(self.bounds), "EPSG:4326", False)
        if cfg is None:
            raise ValueError("an asset cell needs the grid config for its geometry")
        return asset_cells(cfg).filter(ee.Filter.eq(cfg.get("id_property", "GridID"), self.id)).geometry()


def generated_cells(size: float, max_abs_lat: float = 60.0,
                    region: Sequence[float] | None = None) -> list[Cell]:
    size = float(size)
    if not 0 < size <= 90 or (360 / size) % 1 > 1e-9:
        raise UserError(f"grid.size={size} must divide 360 (e.g. 5 or 2.5)")
    ncols, nrows = round(360 / size), round(180 / size)
    if region is not None:
        if len(region) != 4 or not (region[0] < region[2] and region[1] < region[3]):
            raise UserError(f"grid.region={list(region)} must be [west, south, east, north]")
    cells = []
    for row in range(nrows):
        north = 90 - row * size
        south = north - size
        if abs((north + south) / 2) > max_abs_lat:
            continue
        for col in range(ncols):
            west = -180 + col * size
            east = west + size
            if region is not None and (east <= region[0] or west >= region[2] or north <= region[1]
                                       or south >= region[3]):
                continue
            cells.append(Cell(row * ncols + col, (west, south, east, north)))
    return cells


def asset_cells(cfg: Mapping[str, Any]):
    import ee

    if not cfg.get("asset"):
        raise UserError("grid.asset is required when grid.source=asset (an Earth Engine FeatureCollection id)")
    return ee.FeatureCollection(cfg["asset"])


def cells(cfg: Mapping[str, Any], dry_run: bool, key: str = "grid") -> list[Cell]:
    """The cells to export. An asset grid's ids are read from Earth Engine on a real run;
    a dry run cannot read them and needs ``grid.ids``."""
    source = str(cfg.get("source", "generate"))
    ids = cfg.get("ids")
    ids = None if ids is None else [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]
    if source == "generate":
        found = generated_cells(cfg.get("size", 5), cfg.get("max_abs_lat", 60), cfg.get("region"))
        if ids is not None:
            known = {c.id for c in found}
            missing = [i for i in ids if i not in known]
            if missing:
                raise UserError(f"{key}.ids: cell(s) {missing} are not in the generated grid "
                                f"(size {cfg.get('size', 5)}°, |lat| ≤ {cfg.get('max_abs_lat', 60)})")
            wanted = set(ids)
            found = [c for c in found if c.id in wanted]
    elif source == "asset":
        fc = asset_cells(cfg)
        if ids is None:
            if dry_run:
                raise UserError(f"{key}.ids=[...] is required with {key}.source=asset with dry_run=true "
                                "(the cell ids of an asset cannot be read offline)")
            ids = [int(i) for i in fc.aggregate_array(cfg.get("id_property", "GridID")).getInfo()]
        found = [Cell(i, None) for i in ids]
    else:
        raise UserError(f"{key}.source={source!r} is not known; choose generate or asset")
    if cfg.get("limit"):
        found = found[: int(cfg["limit"])]
    if not found:
        raise UserError(f"{key}: no grid cells selected (check {key}.region / {key}.ids)")
    return found

