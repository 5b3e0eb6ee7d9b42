"""Reading validation points and region polygons: CSV, GeoJSON, GeoPackage, Shapefile.

GeoJSON is read with the standard library; GeoPackage, Shapefile and any other OGR
format through ``pyogrio``, whose WKB geometries shapely decodes (ISO and extended WKB,
Z and M, curves that OGR linearizes). Everything comes back as plain data: a DataFrame
of attributes plus x/y (points) or GeoJSON-like geometry dicts (regions), with the
layer's CRS. A CSV's columns are kept as the text it holds, so writing them back
changes nothing (a northing keeps its decimetres).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS
from rasterio.errors import CRSError

from cropseg.errors import UserError

WGS84 = CRS.from_epsg(4326)
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".zip"}


def parse_crs(value: Any, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError) as err:
        raise UserError(f"{what}: {value!r} is not a CRS rasterio understands ({str(err).splitlines()[0]})") from None


# --------------------------------------------------------------------------- WKB

def wkb_to_geojson(wkb: bytes | None) -> dict | None:
    """A GeoJSON-like geometry dict from WKB (ISO or extended, with Z/M: only x and y are kept)."""
    import shapely
    from shapely.geometry import mapping

    if wkb is None:
        return None
    geom = shapely.force_2d(shapely.from_wkb(bytes(wkb)))
    return mapping(geom) if not geom.is_empty else None


def geometry_bounds(geom: dict) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a GeoJSON-like geometry: to skip those outside a window cheaply."""
    from shapely.geometry import shape

    return tuple(float(v) for v in shape(geom).bounds)  # type: ignore[return-value]


def point_wkb(x: float, y: float) -> bytes:
    import shapely

    return shapely.to_wkb(shapely.Point(float(x), float(y)))


def polygon_wkb(rings: list[list[tuple[float, float]]]) -> bytes:
    import shapely

    return shapely.to_wkb(shapely.Polygon(rings[0], rings[1:]))


# --------------------------------------------------------------------------- layers

@dataclass
class Layer:
    attributes: pd.DataFrame
    geometries: list[dict | None]
    crs: CRS
    path: Path


def _read_geojson(path: Path) -> Layer:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid GeoJSON ({err})") from None
    if doc.get("type") == "Feature":
        feats = [doc]
    elif doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    else:
        raise UserError(f"{path}: GeoJSON must be a FeatureCollection or a Feature")
    crs = WGS84
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if name:
        crs = parse_crs(name, f"{path} crs")
    attrs = pd.DataFrame([f.get("properties") or {} for f in feats])
    return Layer(attrs, [f.get("geometry") for f in feats], crs, path)


def _read_ogr(path: Path) -> Layer:
    try:
        import pyogrio
        from pyogrio.raw import read
    except ImportError:
        raise UserError(f"{path}: reading {path.suffix} files needs pyogrio (pip install pyogrio); "
                        "GeoJSON and CSV work without it") from None
    try:
        meta, _fids, geometry, field_data = read(str(path))
    except pyogrio.errors.DataSourceError as err:
        raise UserError(f"{path}: cannot open ({str(err).splitlines()[0]})") from None
    except pyogrio.errors.DataLayerError as err:
        raise UserError(f"{path}: {str(err).splitlines()[0]}") from None
    attrs = pd.DataFrame({name: col for name, col in zip(meta["fields"], field_data)})
    crs = parse_crs(meta["crs"], f"{path} crs") if meta.get("crs") else WGS84
    try:
        geoms = [wkb_to_geojson(g) for g in geometry] if geometry is not None else [None] * len(attrs)
    except Exception as err:  # noqa: BLE001 - shapely.errors.GEOSException and kin: a geometry GEOS cannot read
        raise UserError(f"{path}: a geometry cannot be read ({str(err).splitlines()[0]})") from None
    return Layer(attrs, geoms, crs, path)


def read_layer(path: str | Path) -> Layer:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix.lower() in {".geojson", ".json"}:
        return _read_geojson(path)
    return _read_ogr(path)


# --------------------------------------------------------------------------- points

_XY_NAMES = [("lon", "lat"), ("longitude", "latitude"), ("x", "y"), ("X", "Y"), ("LON", "LAT"), ("Lon", "Lat")]


@dataclass
class Points:
    table: pd.DataFrame  # attributes + columns "_x", "_y" in ``crs``
    crs: CRS
    path: Path
    coordinate_columns: tuple[str, str] | None = None  # a CSV's x and y columns (vector files: None)


def read_points(path: str | Path, x: str | None = None, y: str | None = None, crs: str | None = None) -> Points:
    """Points from a CSV (``x``/``y`` columns, guessed among lon/lat, x/y; ``crs`` default EPSG:4326) or a vector file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: points file not found")
    if path.suffix.lower() in {".csv", ".txt", ".tsv"}:
        try:
            table = pd.read_csv(path, sep=None, engine="python", dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: cannot read as CSV ({str(err).splitlines()[0]})") from None
        if x is None or y is None:
            for cx, cy in _XY_NAMES:
                if cx in table.columns and cy in table.columns:
                    x, y = x or cx, y or cy
                    break
        if x is None or y is None or x not in table.columns or y not in table.columns:
            raise UserError(f"{path}: no coordinate columns (looked for {x or 'lon/longitude/x'} and "
                            f"{y or 'lat/latitude/y'}; columns are {', '.join(map(str, table.columns))}); "
                            "pass x_column= and y_column=")
        xs = pd.to_numeric(table[x], errors="coerce")
        ys = pd.to_numeric(table[y], errors="coerce")
        if xs.isna().any() or ys.isna().any():
            bad = int((xs.isna() | ys.isna()).sum())
            raise UserError(f"{path}: {bad} rows have missing or non-numeric coordinates in {x}/{y}")
        table = table.assign(_x=xs.to_numpy(float), _y=ys.to_numpy(float))
        return Points(table, parse_crs(crs or "EPSG:4326", "crs"), path, (x, y))
    layer = read_layer(path)
    xs, ys = [], []
    for i, g in enumerate(layer.geometries):
        if g is None or g["type"] not in ("Point", "MultiPoint"):
            raise UserError(f"{path}: feature {i} is not a point ({g and g['type']})")
        c = g["coordinates"] if g["type"] == "Point" else g["coordinates"][0]
        xs.append(c[0])
        ys.append(c[1])
    table = layer.attributes.assign(_x=np.asarray(xs, float), _y=np.asarray(ys, float))
    return Points(table, parse_crs(crs, "crs") if crs else layer.crs, path)


def read_regions(path: str | Path, id_column: str | None = None) -> tuple[list[str], list[dict], CRS]:
    """Region polygons: (ids, geometries, crs). ``id_column`` default: first of id/name/region or the row number."""
    layer = read_layer(path)
    keep = [i for i, g in enumerate(layer.geometries) if g is not None and "Polygon" in g["type"]]
    if not keep:
        raise UserError(f"{layer.path}: no polygon regions in the file (empty region set)")
    attrs = layer.attributes.iloc[keep].reset_index(drop=True)
    if id_column is None:
        id_column = next((c for c in ("id", "ID", "name", "NAME", "region", "GridID") if c in attrs.columns), None)
    if id_column is not None and id_column not in attrs.columns:
        raise UserError(f"{layer.path}: no column {id_column!r} for region ids (columns: {', '.join(attrs.columns)})")
    ids = [str(v) for v in attrs[id_column]] if id_column else [str(i) for i in range(len(keep))]
    if len(set(ids)) != len(ids):
        raise UserError(f"{layer.path}: region ids in {id_column!r} are not unique")
    return ids, [layer.geometries[i] for i in keep], layer.crs
