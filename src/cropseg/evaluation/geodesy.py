"""True areas of raster pixels on the ellipsoid of the raster's own CRS (pyproj).

Geographic CRS: a pixel spans a fixed angle, so its ground area shrinks towards the
poles. The area of the band between two parallels on an ellipsoid of revolution (per
radian of longitude) is exact and closed-form (authalic latitude):

    A(phi1, phi2, dlon) = b^2 * dlon / 2 * [q(phi2) - q(phi1)],
    q(phi) = sin(phi) / (1 - e^2 sin^2 phi) + atanh(e sin phi) / e

(the area ``pyproj.Geod.polygon_area_perimeter`` gives for a lat/lon rectangle), with
``a`` and ``f`` of the CRS's ellipsoid (International 1924 for ED50, GRS80 for NAD83...),
not always WGS84.

Projected CRS: the nominal pixel area |a·e| is the area on the map plane, not on the
ground (sec²φ too large in Mercator, 0.08-0.2 % off in UTM; right only in equal-area
projections). The ground area of a pixel is the geodesic area of its outline
(``pyproj.Geod.polygon_area_perimeter`` on the CRS's ellipsoid, corners taken to the
CRS's own geographic CRS), computed for pixels on a grid of at most 33 × 33 per block of
rows and interpolated bilinearly between them: the area varies smoothly, the error is
far below 1e-6. A projection defined on a sphere (Web Mercator) is measured on the
datum's ellipsoid, as its coordinates are.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
_SAMPLES = 32  # intervals of the scale-factor grid per axis


def _q(phi: np.ndarray, e: float) -> np.ndarray:
    s = np.sin(phi)
    return s / (1 - (e * s) ** 2) + np.arctanh(e * s) / e


def band_area(lat1_deg, lat2_deg, dlon_deg, a: float = WGS84_A, f: float = WGS84_F) -> np.ndarray:
    """Area in m² of the lat/lon rectangle between ``lat1`` and ``lat2`` spanning ``dlon`` degrees."""
    e2 = f * (2 - f)
    e = np.sqrt(e2)
    b2 = a * a * (1 - e2)
    p1, p2 = np.radians(np.asarray(lat1_deg, float)), np.radians(np.asarray(lat2_deg, float))
    return np.abs(b2 * np.radians(np.asarray(dlon_deg, float)) / 2 * (_q(p2, e) - _q(p1, e)))


@functools.lru_cache(maxsize=32)
def _pyproj(wkt: str) -> tuple[Any, Any, float, float]:
    """(transformer to the CRS's geographic CRS or None, Geod, a, f) of a CRS, cached."""
    from pyproj import CRS, Geod, Transformer

    crs = CRS.from_wkt(wkt)
    ell = crs.ellipsoid
    a = float(ell.semi_major_metre) if ell is not None else WGS84_A
    inv_f = float(ell.inverse_flattening) if ell is not None else 1 / WGS84_F
    f = 1 / inv_f if inv_f else 0.0
    geod = Geod(a=a, f=f)
    if crs.is_geographic:
        return None, geod, a, f
    return Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True), geod, a, f


def _centres(start: int, n: int) -> np.ndarray:
    """Sample positions (pixel centres) over ``start .. start + n``: both ends and at most _SAMPLES intervals."""
    step = max(1, int(np.ceil(n / _SAMPLES)))
    return np.unique(np.r_[np.arange(0, n, step), n - 1]).astype(float) + start + 0.5


def _ground_areas(transform, crs, row_off: int, height: int, col_off: int, width: int) -> np.ndarray:
    """Geodesic area (m²) of every pixel of the block, (height, width): exact at sampled pixels,
    bilinear in between."""
    to_geo, geod, _, _ = _pyproj(crs.to_wkt())
    rs, cs = _centres(row_off, height), _centres(col_off, width)
    half_x, half_y = transform.a / 2, transform.e / 2
    cx = transform.c + transform.a * cs
    cy = transform.f + transform.e * rs
    corners_x = np.array([-half_x, half_x, half_x, -half_x])
    corners_y = np.array([half_y, half_y, -half_y, -half_y])
    xx = (cx[None, :, None] + corners_x + 0 * cy[:, None, None]).ravel()
    yy = (cy[:, None, None] + corners_y + 0 * cx[None, :, None]).ravel()
    lon, lat = (np.asarray(v).reshape(len(rs), len(cs), 4) for v in to_geo.transform(xx, yy))
    sampled = np.empty((len(rs), len(cs)))
    for i in range(len(rs)):
        for j in range(len(cs)):
            sampled[i, j] = abs(geod.polygon_area_perimeter(lon[i, j], lat[i, j])[0])
    bad = ~np.isfinite(sampled) | (sampled <= 0)
    if bad.any():  # outside the projection's domain: the map-plane area
        sampled[bad] = abs(transform.a * transform.e)
    rows = np.arange(row_off, row_off + height) + 0.5
    cols = np.arange(col_off, col_off + width) + 0.5
    along = np.stack([np.interp(cols, cs, r) for r in sampled])  # (len(rs), width)
    if len(rs) == 1:
        return np.broadcast_to(along[0], (height, width)).copy()
    k = np.clip(np.searchsorted(rs, rows) - 1, 0, len(rs) - 2)
    t = ((rows - rs[k]) / (rs[k + 1] - rs[k]))[:, None]
    return along[k] * (1 - t) + along[k + 1] * t


def pixel_areas(transform, crs, row_off: int, height: int, col_off: int = 0, width: int = 1) -> np.ndarray:
    """Ground area in m² of the pixels of rows ``row_off ..`` and columns ``col_off ..`` of a north-up raster.

    Geographic CRS: shape (height, 1) (the area depends on the row only); projected: (height, width).
    Broadcast it against (height, width) masks.
    """
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated rasters are not supported")
    if crs is None:
        return np.full((height, 1), abs(transform.a * transform.e))
    _, _, a, f = _pyproj(crs.to_wkt())
    if crs.is_geographic:
        rows = np.arange(row_off, row_off + height, dtype=float)
        lat_top = np.clip(transform.f + transform.e * rows, -90, 90)
        lat_bottom = np.clip(transform.f + transform.e * (rows + 1), -90, 90)
        return band_area(lat_bottom, lat_top, abs(transform.a), a, f)[:, None]
    return _ground_areas(transform, crs, row_off, height, col_off, width)
