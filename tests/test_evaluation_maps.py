"""Points, agreement, area and clustering on synthetic rasters with hand-computed answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from sklearn.metrics import adjusted_rand_score

from cropseg.errors import UserError
from cropseg.evaluation.agreement import AgreementConfig, evaluate_agreement
from cropseg.evaluation.area import AreaConfig, evaluate_area
from cropseg.evaluation.clustering import cluster_trajectories
from cropseg.evaluation.geodesy import band_area
from cropseg.evaluation.maps import MapSpec, open_map
from cropseg.evaluation.points import PointsConfig, evaluate_points


def write_raster(path: Path, bands: np.ndarray, transform, crs="EPSG:4326", nodata=255, tags=None, descr=None):
    bands = np.atleast_3d(bands) if bands.ndim == 2 else bands
    if bands.ndim == 2:
        bands = bands[None]
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                       dtype=bands.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(bands)
        if tags:
            ds.update_tags(**tags)
        for i, d in enumerate(descr or []):
            ds.set_band_description(i + 1, d)
    return path


def class_map(tmp: Path, name: str, west=10.0, north=50.0) -> tuple[Path, np.ndarray]:
    """10×10 class raster, 0.1° pixels; cropland in the left half, nodata in the top-right pixel."""
    a = np.zeros((10, 10), np.uint8)
    a[:, :5] = 1
    a[0, 9] = 255
    return write_raster(tmp / name, a[None], from_origin(west, north, 0.1, 0.1)), a


def test_points_hand_built_confusion(tmp_path):
    path, a = class_map(tmp_path, "2015_T1_cropland.tif")
    # a point at the centre of pixel (row, col), in lon/lat
    def at(r, c):
        return 10.0 + 0.1 * c + 0.05, 50.0 - 0.1 * r - 0.05

    rows = []
    # map cropland (cols 0-4): 4 truth crop (tp), 1 truth other (fp)
    for k, (r, c, t) in enumerate([(1, 1, 10), (2, 2, 10), (3, 3, 10), (4, 4, 10), (5, 0, 20),
                                   # map other (cols 5-8): 2 truth crop (fn), 3 truth other (tn)
                                   (1, 6, 10), (2, 7, 10), (3, 5, 20), (4, 8, 20), (6, 6, 20),
                                   (0, 9, 10)]):  # on nodata
        x, y = at(r, c)
        rows.append({"ID": k, "lon": x, "lat": y, "truth": t, "zone": "a" if k % 2 else "b"})
    rows.append({"ID": 99, "lon": 30.0, "lat": 10.0, "truth": 10, "zone": "a"})  # outside every map
    pd.DataFrame(rows).to_csv(tmp_path / "pts.csv", index=False)
    res = evaluate_points(PointsConfig(points=str(tmp_path / "pts.csv"), maps=[str(path)], truth_column="truth",
                                       truth_values=["10"], out=str(tmp_path / "out"), group_columns=["zone"],
                                       n_boot=100, plots=True))
    o = res["table"].iloc[0]
    assert (o.tp, o.fp, o.fn, o.tn) == (4, 1, 2, 3)
    assert (o.n_used, o.n_outside, o.n_nodata) == (10, 1, 1)
    assert o.overall_accuracy == pytest.approx(7 / 10)
    assert o.precision == pytest.approx(4 / 5)
    assert o.recall == pytest.approx(4 / 6)
    assert o.iou == pytest.approx(4 / 7)
    assert set(res["table"]["scope"]) == {"overall", "year", "zone"}  # the map is for 2015
    for f in ("points.csv", "metrics.csv", "metrics.json", "confusion_matrix.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    json.loads((tmp_path / "out" / "metrics.json").read_text())


def test_points_pick_covering_raster_across_crs_and_probability(tmp_path):
    """Two rasters: a UTM probability raster (uint8, scale tag) and a lon/lat class raster; points in lon/lat."""
    # UTM 32N raster 500 km east, 5,540 km north (≈ 9°E, 50°N), 1 km pixels, probability 0..200: left half 180
    prob = np.full((20, 20), 20, np.uint8)
    prob[:, :10] = 180
    tr = from_origin(500_000, 5_540_000, 1000, 1000)
    utm = write_raster(tmp_path / "2015_U_cropland.tif", prob[None], tr, crs="EPSG:32632",
                       tags={"probability_scale": "200"})
    lonlat, _ = class_map(tmp_path, "2015_T1_cropland.tif")
    from rasterio.warp import transform as wt

    xs = [505_500, 515_500]  # left (cropland) and right (not) halves
    lon, lat = wt("EPSG:32632", "EPSG:4326", xs, [5_530_500, 5_530_500])
    pts = pd.DataFrame({"lon": list(lon) + [10.15, 10.75], "lat": list(lat) + [49.55, 49.55], "c": [1, 0, 1, 0]})
    pts.to_csv(tmp_path / "p.csv", index=False)
    res = evaluate_points(PointsConfig(points=str(tmp_path / "p.csv"), maps=[str(utm), str(lonlat)],
                                       truth_column="c", out=str(tmp_path / "o"), n_boot=0, plots=False))
    per = pd.read_csv(tmp_path / "o" / "points.csv")
    assert list(per["map"]) == [utm.name, utm.name, lonlat.name, lonlat.name]
    assert np.allclose(per["probability"][:2], [0.9, 0.1])
    assert res["table"].iloc[0].overall_accuracy == 1.0


def test_map_kinds_and_scale(tmp_path):
    tr = from_origin(0, 1, 0.1, 0.1)
    f = write_raster(tmp_path / "f.tif", np.array([[[0.2, 0.7]]], np.float32), tr, nodata=None)
    m = open_map(f)
    assert (m.kind, m.scale) == ("probability", 1.0)
    c = write_raster(tmp_path / "c.tif", np.array([[[0, 1]]], np.uint8), tr)
    assert open_map(c).kind == "class"
    p = write_raster(tmp_path / "p.tif", np.array([[[0, 150]]], np.uint8), tr)
    m = open_map(p)
    assert (m.kind, m.scale) == ("probability", 200.0)
    crop, valid, prob = m.interpret(np.array([[[0, 150, 255]]], np.uint8)[:, 0])
    assert list(crop) == [False, True, False] and list(valid) == [True, True, False]
    m2 = open_map(p, MapSpec(threshold=0.8))
    assert not m2.interpret(np.array([[150]], np.uint8))[0].any()
    g = write_raster(tmp_path / "g.tif", np.array([[[1, 2]]], np.uint8), tr, nodata=0)
    m3 = open_map(g, MapSpec(kind="class", class_values=[2]))
    assert list(m3.interpret(np.array([[1, 2, 0]], np.uint8))[0]) == [False, True, False]


def test_area_geodesic_per_region_and_cell(tmp_path):
    # a 1° × 1° tile at 60–61°N, 0.25° pixels, all cropland except the east column
    a = np.ones((4, 4), np.uint8)
    a[:, 3] = 0
    write_raster(tmp_path / "2010_T_cropland.tif", a[None], from_origin(20, 61, 0.25, 0.25))
    a2 = np.ones((4, 4), np.uint8)
    write_raster(tmp_path / "2011_T_cropland.tif", a2[None], from_origin(20, 61, 0.25, 0.25))
    regions = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "west"},
         "geometry": {"type": "Polygon", "coordinates": [[[20, 60], [20.5, 60], [20.5, 61], [20, 61], [20, 60]]]}},
        {"type": "Feature", "properties": {"name": "east"},
         "geometry": {"type": "Polygon", "coordinates": [[[20.5, 60], [21, 60], [21, 61], [20.5, 61], [20.5, 60]]]}}]}
    (tmp_path / "r.geojson").write_text(json.dumps(regions))
    res = evaluate_area(AreaConfig(maps=[str(tmp_path)], out=str(tmp_path / "o"), regions=str(tmp_path / "r.geojson")))
    t = res["table"].set_index(["region", "year"])
    half = band_area(60, 61, 0.5) / 1e6
    assert t.loc[("west", 2010), "cropland_km2"] == pytest.approx(half, rel=1e-9)
    assert t.loc[("east", 2010), "cropland_km2"] == pytest.approx(half / 2, rel=1e-9)
    assert t.loc[("east", 2011), "cropland_fraction"] == pytest.approx(1.0)
    assert half == pytest.approx(3061.57, abs=0.05)  # half of a 1° cell at 60°N
    cells = evaluate_area(AreaConfig(maps=[str(tmp_path)], out=str(tmp_path / "c"), cell_size=0.5, plots=False))["table"]
    assert len(cells) == 4 * 2
    north_w = cells[(cells.region == "E020.00N60.50") & (cells.year == 2010)].iloc[0]
    assert north_w.cropland_km2 == pytest.approx(band_area(60.5, 61, 0.5) / 1e6, rel=1e-9)
    for f in ("area.csv", "area_timeseries.png", "change_map.png", "change_2010_2011_T.tif"):
        assert (tmp_path / "o" / f).exists()
    with rasterio.open(tmp_path / "o" / "change_2010_2011_T.tif") as ds:
        ch = ds.read(1)
    assert (ch[:, 3] == 2).all() and (ch[:, :3] == 1).all()  # gain in the east column, stable elsewhere


def test_agreement_with_reprojected_reference(tmp_path):
    # map: lon/lat, 0.01° pixels, left half cropland; reference: same extent at 0.005° with values 1/2
    a = np.zeros((20, 20), np.uint8)
    a[:, :10] = 1
    m = write_raster(tmp_path / "2015_T_cropland.tif", a[None], from_origin(10, 50, 0.01, 0.01))
    r = np.ones((40, 40), np.uint8)
    r[:, :30] = 2  # reference cropland extends 5 map columns further east
    ref = write_raster(tmp_path / "ref_2015.tif", r[None], from_origin(10, 50, 0.005, 0.005), nodata=0)
    res = evaluate_agreement(AgreementConfig(maps=[str(m)], reference=str(ref), out=str(tmp_path / "o"),
                                             reference_spec=MapSpec(kind="class", class_values=[2])))
    tot = res["table"].iloc[-1]
    assert tot.pixels_compared == 400
    assert tot.agreement == pytest.approx(0.75, abs=1e-3)  # 5 of 20 columns disagree (areas ~equal)
    assert tot.reference_only_km2 > 0 and tot.map_only_km2 == 0
    with rasterio.open(tmp_path / "o" / "agreement_2015_T_cropland.tif") as ds:
        code = ds.read(1)
    assert (code[:, :10] == 1).all() and (code[:, 10:15] == 3).all() and (code[:, 15:] == 0).all()
    assert (tmp_path / "o" / "agreement.png").exists()
    with pytest.raises(UserError, match="mismatched years"):
        evaluate_agreement(AgreementConfig(maps=[str(m)], reference=str(write_raster(
            tmp_path / "ref_2010.tif", r[None], from_origin(10, 50, 0.005, 0.005), nodata=0)), out=str(tmp_path / "x")))


def test_clustering_recovers_planted_patterns():
    rng = np.random.default_rng(0)
    years = list(range(2001, 2011))
    t = np.linspace(0, 1, len(years))
    patterns = [0.2 + 0.5 * t, 0.7 - 0.5 * t, 0.45 + 0 * t]
    truth = np.repeat([0, 1, 2], 12)
    x = np.array([patterns[k] + rng.normal(0, 0.03, len(years)) + rng.normal(0, 0.05) for k in truth])
    wide = pd.DataFrame(x, index=[f"r{i}" for i in range(len(x))], columns=years)
    for method in ("kmeans", "hierarchical"):
        res = cluster_trajectories(wide, "auto", method, "change")
        assert res["k"] == 3
        assert adjusted_rand_score(truth, res["labels"]) == 1.0
        # numbered by trend: 1 falling, 2 stable, 3 rising
        assert res["labels"][truth == 1][0] == 1 and res["labels"][truth == 0][0] == 3
        assert res["names"][3].startswith("rising") and res["names"][1].startswith("falling")


def test_vector_geometries_are_decoded_by_shapely(tmp_path):
    """Hand-decoded WKB misread extended WKB (an SRID before the coordinates) and failed on what it did not know."""
    import shapely

    from cropseg.evaluation.vector import read_points, read_regions, wkb_to_geojson

    ewkb = shapely.to_wkb(shapely.set_srid(shapely.Point(30.5, 46.25), 4326), include_srid=True)
    assert wkb_to_geojson(ewkb) == {"type": "Point", "coordinates": (30.5, 46.25)}
    z = wkb_to_geojson(shapely.to_wkb(shapely.MultiPolygon([shapely.Polygon([(0, 0, 9), (1, 0, 9), (1, 1, 9)])])))
    assert z["type"] == "MultiPolygon" and z["coordinates"][0][0][:3] == ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))
    pyogrio = pytest.importorskip("pyogrio")
    pyogrio.raw.write(str(tmp_path / "p.gpkg"), np.array([shapely.to_wkb(shapely.Point(30.5, 46.25, 120.0))], object),
                      [np.array([1])], ["truth"], crs="EPSG:4326", geometry_type="Point Z")
    pts = read_points(tmp_path / "p.gpkg")
    assert (pts.table["_x"][0], pts.table["_y"][0], pts.coordinate_columns) == (30.5, 46.25, None)
    ring = [(20, 60), (21, 60), (21, 61), (20, 61), (20, 60)]
    pyogrio.raw.write(str(tmp_path / "r.gpkg"), np.array([shapely.to_wkb(shapely.Polygon(ring))], object),
                      [np.array(["north"])], ["name"], crs="EPSG:4326", geometry_type="Polygon")
    ids, geoms, crs = read_regions(tmp_path / "r.gpkg")
    assert ids == ["north"] and shapely.geometry.shape(geoms[0]).area == pytest.approx(1.0)
