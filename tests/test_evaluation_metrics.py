"""Evaluation statistics against independent answers: hand counts, sklearn, Olofsson et al. (2014)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from sklearn.metrics import cohen_kappa_score

from cropseg.evaluation.geodesy import WGS84_A, WGS84_F, band_area, pixel_areas
from cropseg.evaluation.metrics import binary_metrics, bootstrap, metrics_from_counts, stratified


def test_binary_metrics_hand_counts():
    # 6 tp, 2 fp, 3 fn, 9 tn
    truth = np.array([1] * 6 + [0] * 2 + [1] * 3 + [0] * 9)
    pred = np.array([1] * 6 + [1] * 2 + [0] * 3 + [0] * 9)
    m = binary_metrics(truth, pred)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (6, 2, 3, 9)
    n = 20
    po = 15 / n
    pe = (8 / n) * (9 / n) + (12 / n) * (11 / n)
    assert m["overall_accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(6 / 8)
    assert m["recall"] == pytest.approx(6 / 9)
    assert m["f1"] == pytest.approx(2 * 6 / (12 + 2 + 3))
    assert m["iou"] == pytest.approx(6 / 11)
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))


def test_count_formulas_match_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(20):
        t = rng.integers(0, 2, 50)
        p = np.where(rng.random(50) < 0.8, t, 1 - t)
        m = binary_metrics(t, p)
        c = metrics_from_counts(m["tn"], m["fp"], m["fn"], m["tp"])
        for k, v in c.items():
            assert float(v) == pytest.approx(m[k]), k
        assert m["kappa"] == pytest.approx(cohen_kappa_score(t, p))


def test_bootstrap_interval_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 400)
    p = np.where(rng.random(400) < 0.9, t, 1 - t)
    ci = bootstrap(t, p, 500, seed=1)
    oa = binary_metrics(t, p)["overall_accuracy"]
    assert ci["overall_accuracy"][0] < oa < ci["overall_accuracy"][1]
    se = np.sqrt(oa * (1 - oa) / 400)  # binomial: half-width ~ 1.96 se
    assert (ci["overall_accuracy"][1] - ci["overall_accuracy"][0]) / 2 == pytest.approx(1.96 * se, rel=0.2)


# Olofsson et al. (2014) Remote Sens. Environ. 148:42-57, section 5 example: rows map class
# (deforestation, forest gain, stable forest, stable non-forest), columns reference class.
OLOFSSON = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
MAPPED_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])  # 30 m pixels = 0.09 ha


def _olofsson_sample():
    ref, mapped = [], []
    for i, row in enumerate(OLOFSSON):
        for j, c in enumerate(row):
            ref += [j] * c
            mapped += [i] * c
    return np.array(ref), np.array(mapped)


def test_olofsson_worked_example():
    ref, mapped = _olofsson_sample()
    areas = {k: a * 0.09 for k, a in enumerate(MAPPED_PIXELS)}  # hectares
    r = stratified(ref, mapped, mapped, areas)
    # Published: OA 0.95 ± 0.02; deforestation UA 0.88 ± 0.07, PA 0.75 ± 0.21, area 21,158 ± 6,158 ha;
    # forest gain area 11,686 ± 3,756 ha; stable forest 285,770 ± 15,510 ha; stable non-forest 581,386 ha.
    assert r["overall_accuracy"] == pytest.approx(0.947, abs=5e-4)
    assert r["overall_accuracy_ci"] == pytest.approx(0.018, abs=5e-4)
    d = r["classes"][0]
    assert d["users_accuracy"] == pytest.approx(0.88, abs=5e-3)
    assert d["users_accuracy_ci"] == pytest.approx(0.07, abs=5e-3)
    assert d["producers_accuracy"] == pytest.approx(0.75, abs=5e-3)
    assert d["producers_accuracy_ci"] == pytest.approx(0.21, abs=5e-3)
    assert d["area"] == pytest.approx(21_158, abs=1)
    assert d["area_ci"] == pytest.approx(6_158, abs=1)
    assert r["classes"][1]["area"] == pytest.approx(11_686, abs=1)
    assert r["classes"][1]["area_ci"] == pytest.approx(3_756, abs=1)
    assert r["classes"][2]["area"] == pytest.approx(285_770, abs=1)
    assert r["classes"][2]["area_ci"] == pytest.approx(15_510, abs=1)
    assert r["classes"][3]["area"] == pytest.approx(581_386, abs=1)


def test_olofsson_producers_variance_formula():
    """Producer's accuracy SE equals Olofsson's eq. (hand-computed from the matrix) for every class."""
    ref, mapped = _olofsson_sample()
    W = MAPPED_PIXELS / MAPPED_PIXELS.sum()
    n_i = OLOFSSON.sum(1)
    p = W[:, None] * OLOFSSON / n_i[:, None]
    r = stratified(ref, mapped, mapped, dict(enumerate(MAPPED_PIXELS.astype(float))))
    for j in range(4):
        Nhat_j = (MAPPED_PIXELS[:, None] * OLOFSSON / n_i[:, None])[:, j].sum()
        P, U = p[j, j] / p[:, j].sum(), OLOFSSON[j, j] / n_i[j]
        other = sum(MAPPED_PIXELS[i] ** 2 * OLOFSSON[i, j] / n_i[i] * (1 - OLOFSSON[i, j] / n_i[i]) / (n_i[i] - 1)
                    for i in range(4) if i != j)
        var = (MAPPED_PIXELS[j] ** 2 * (1 - P) ** 2 * U * (1 - U) / (n_i[j] - 1) + P**2 * other) / Nhat_j**2
        assert r["classes"][j]["producers_accuracy"] == pytest.approx(P)
        assert r["classes"][j]["producers_accuracy_se"] == pytest.approx(np.sqrt(var))


def _integrated_area(lat1, lat2, dlon):
    """Independent check: integrate M(phi) N(phi) cos(phi) dphi dlambda on the WGS84 ellipsoid."""
    e2 = WGS84_F * (2 - WGS84_F)

    def f(phi):
        w = 1 - e2 * np.sin(phi) ** 2
        return WGS84_A**2 * (1 - e2) / w**2 * np.cos(phi)

    val, _ = quad(f, np.radians(lat1), np.radians(lat2), epsabs=0, epsrel=1e-12)
    return val * np.radians(dlon)


@pytest.mark.parametrize("lat", [0.0, 23.5, 45.0, 60.0, 75.0, -38.0])
@pytest.mark.parametrize("size", [1.0, 0.00025])  # a 1° cell and a ~30 m Landsat pixel
def test_geodesic_cell_areas(lat, size):
    assert band_area(lat, lat + size, size) == pytest.approx(_integrated_area(lat, lat + size, size), rel=1e-9)


def test_geodesic_known_values():
    # Whole WGS84 ellipsoid: 510,065,621.724 km²; 1° × 1° cell at the equator ≈ 12,308 km², at 60°N ≈ 6,123 km²
    assert band_area(-90, 90, 360) / 1e6 == pytest.approx(510_065_621.724, abs=0.01)
    assert band_area(0, 1, 1) / 1e6 == pytest.approx(12_308.46, abs=0.05)
    assert band_area(60, 61, 1) / 1e6 == pytest.approx(6_123.14, abs=0.05)
    # shrinks with latitude roughly as cos(lat)
    assert band_area(60, 60.01, 0.01) / band_area(0, 0.01, 0.01) == pytest.approx(0.5, abs=0.01)


def test_pixel_areas_geographic_and_projected():
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    tr = from_origin(10.0, 61.0, 0.5, 0.5)  # rows 61-60.5, 60.5-60
    a = pixel_areas(tr, CRS.from_epsg(4326), 0, 2)
    assert a.shape == (2, 1)
    assert a[0, 0] == pytest.approx(_integrated_area(60.5, 61, 0.5), rel=1e-9)
    assert a[1, 0] == pytest.approx(_integrated_area(60, 60.5, 0.5), rel=1e-9)
    # UTM at its central meridian: the map plane is 0.9996 of the ground in each direction
    b = pixel_areas(from_origin(499985, 5000015, 30, 30), CRS.from_epsg(32632), 0, 3, 0, 3)
    assert b.shape == (3, 3) and np.allclose(b, 900.0 / 0.9996**2, rtol=1e-6)


def _geodesic_pixel_area(crs, x0, y0, size) -> float:
    """Area of the square pixel [x0, x0+size] x [y0-size, y0] on the CRS's ellipsoid, from its densified outline."""
    from pyproj import CRS as PCRS, Geod, Transformer

    pc = PCRS.from_user_input(crs)
    t = np.linspace(0, 1, 201)
    xs = np.r_[x0 + size * t, np.full(201, x0 + size), x0 + size * t[::-1], np.full(201, x0)]
    ys = np.r_[np.full(201, y0), y0 - size * t, np.full(201, y0 - size), y0 - size * t[::-1]]
    lon, lat = Transformer.from_crs(pc, pc.geodetic_crs, always_xy=True).transform(xs, ys)
    ell = pc.ellipsoid
    return abs(Geod(a=ell.semi_major_metre, rf=ell.inverse_flattening).polygon_area_perimeter(lon, lat)[0])


@pytest.mark.parametrize("epsg, x0, y0, size, nominal_off", [
    (3857, 1_000_000.0, 8_400_000.0, 1000.0, 3.0),    # Web Mercator near 60°N: the plane shows 4x the ground
    (32632, 830_000.0, 5_600_000.0, 1000.0, 1.9e-3),  # UTM 330 km east of the central meridian: 0.19 %
    (6933, 500_000.0, 5_000_000.0, 1000.0, 0.0),     # EASE-Grid 2.0, equal-area: nominal is right
])
def test_projected_pixels_have_their_ground_area(epsg, x0, y0, size, nominal_off):
    """Projected pixels were given their nominal (map-plane) area: sec²φ too large in Mercator, 0.08-0.2 % off in UTM."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    got = pixel_areas(from_origin(x0, y0, size, size), CRS.from_epsg(epsg), 0, 1, 0, 1)[0, 0]
    truth = _geodesic_pixel_area(f"EPSG:{epsg}", x0, y0, size)
    assert got == pytest.approx(truth, rel=2e-5)
    assert size * size / truth - 1 == pytest.approx(nominal_off, abs=max(nominal_off * 0.2, 2e-5))


def test_geographic_pixels_use_the_crs_ellipsoid():
    """A lat/lon raster on ED50 (International 1924) was measured on WGS84."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    tr = from_origin(5.0, 50.0, 0.01, 0.01)
    ed50 = pixel_areas(tr, CRS.from_epsg(4230), 0, 1)[0, 0]
    assert ed50 == pytest.approx(band_area(49.99, 50.0, 0.01, a=6378388.0, f=1 / 297.0), rel=1e-12)
    assert abs(ed50 / pixel_areas(tr, CRS.from_epsg(4326), 0, 1)[0, 0] - 1) > 5e-5
