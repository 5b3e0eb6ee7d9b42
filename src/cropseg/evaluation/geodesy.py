"""True areas of raster pixels on the WGS84 ellipsoid.

In a geographic CRS a pixel spans a fixed angle, so its ground area shrinks towards
the poles. The area of the band between two parallels on an ellipsoid of revolution
(per radian of longitude) is exact and closed-form (authalic latitude):

    A(phi1, phi2, dlon) = b^2 * dlon / 2 * [q(phi2) - q(phi1)],
    q(phi) = sin(phi) / (1 - e^2 sin^2 phi) + atanh(e sin phi) / e

which is what ``pyproj.Geod.polygon_area_perimeter`` returns for a lat/lon rectangle
(to rounding); we do not need pyproj for it. Projected CRSs use the nominal pixel
area |a * e| of the affine transform (exact for equal-area projections).
"""

from __future__ import annotations

import numpy as np

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563


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


def row_pixel_areas(transform, height: int, crs, row_off: int = 0) -> np.ndarray:
    """Area in m² of one pixel in each of rows ``row_off .. row_off + height`` (north-up rasters).

    Geographic CRS: geodesic area on the CRS's ellipsoid (WGS84 assumed for others);
    projected CRS: the nominal |a·e| in the CRS's linear unit squared, converted to m².
    """
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated rasters are not supported")
    if crs is not None and crs.is_geographic:
        rows = np.arange(row_off, row_off + height, dtype=float)
        lat_top = transform.f + transform.e * rows
        lat_bottom = lat_top + transform.e
        lat_top, lat_bottom = np.clip(lat_top, -90, 90), np.clip(lat_bottom, -90, 90)
        return band_area(lat_bottom, lat_top, abs(transform.a))
    unit = 1.0
    if crs is not None:
        try:
            factors = crs.linear_units_factor  # (name, metres per unit)
            unit = float(factors[1])
        except Exception:  # noqa: BLE001 - CRS without a linear unit: assume metres
            unit = 1.0
    return np.full(height, abs(transform.a * transform.e) * unit * unit)
