"""GEE export graphs, built offline with earthengine-api's own test harness (no network)."""

from __future__ import annotations

import json
import re

import pytest

from cropseg.bands import DEFAULT_BANDS, LABEL_BAND
from cropseg.errors import UserError
from cropseg.gee import engine
from cropseg.gee.cli import load_config, main
from cropseg.gee.composites import composite, label_image, sensors_for_year
from cropseg.gee.grid import generated_cells
from cropseg.gee.samples import lattice_step


@pytest.fixture(scope="module")
def cfg():
    return load_config([])


@pytest.fixture()
def ee_offline():
    with engine.offline():
        yield


def calls(node, name):
    """Every functionInvocationValue of ``name`` in a readable (non-compact) graph."""
    found = []

    def walk(n):
        if isinstance(n, dict):
            f = n.get("functionInvocationValue")
            if f and f.get("functionName") == name:
                found.append(f["arguments"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    return found


def const(arg):
    return arg["constantValue"]


def test_composite_graph_per_sensor_and_year(cfg, ee_offline):
    g = engine.serialize(composite(2015, cfg))
    loads = {const(a["id"]) for a in calls(g, "ImageCollection.load")}
    assert loads == {"LANDSAT/LC08/C02/T1_L2"}
    dates = {(const(a["start"]), const(a["end"])) for a in calls(g, "DateRange")}
    assert dates == {("2014-01-01", "2017-01-01")}
    # scale and offset of Collection 2 Level-2
    constants = [const(a["value"]) for a in calls(g, "Image.constant")]
    assert 2.75e-05 in constants and -0.2 in constants
    # QA_PIXEL: fill, dilated, cirrus, cloud, shadow, snow = bits 0,1,2,3,4,5 -> 63 for OLI
    assert 63 in constants
    sel = [a for a in calls(g, "Image.select") if "newNames" in a]
    assert const(sel[0]["bandSelectors"]) == ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
    assert const(sel[0]["newNames"]) == ["B", "G", "R", "NIR", "SWIR1", "SWIR2"]
    assert [const(a["bandNames"]) for a in calls(g, "Image.normalizedDifference")] == [["NIR", "R"]]
    assert {const(a["id"]) for a in calls(g, "Image.load")} == {"USGS/SRTMGL1_003"}
    # final band order is cropseg.bands.DEFAULT_BANDS, float
    top = calls(g, "Image.toFloat")[0]["value"]["functionInvocationValue"]
    assert top["functionName"] == "Image.select" and const(top["arguments"]["bandSelectors"]) == list(DEFAULT_BANDS)
    assert {const(a["leftField"]) for a in calls(g, "Filter.lessThan")} == {"CLOUD_COVER"}


def test_landsat5_before_2012_and_tm_mask(cfg, ee_offline):
    g = engine.serialize(composite(2010, cfg))
    assert {const(a["id"]) for a in calls(g, "ImageCollection.load")} == {"LANDSAT/LT05/C02/T1_L2"}
    constants = [const(a["value"]) for a in calls(g, "Image.constant")]
    assert 59 in constants and 63 not in constants  # TM has no cirrus bit
    sel = [a for a in calls(g, "Image.select") if "newNames" in a]
    assert const(sel[0]["bandSelectors"]) == ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"]


def test_sensor_rules_from_config(cfg):
    assert [s.name for s in sensors_for_year(2012, cfg["sensors"]["rules"], 1)] == ["LC08"]
    assert [s.name for s in sensors_for_year(2011, cfg["sensors"]["rules"], 1)] == ["LT05"]
    rules = [{"from": 2021, "to": None, "sensors": ["LC08", "LC09"]}]
    assert [s.name for s in sensors_for_year(2022, rules, 0)] == ["LC08", "LC09"]
    with pytest.raises(UserError, match="outside the LT05 archive"):
        sensors_for_year(2020, [{"from": None, "to": None, "sensors": ["LT05"]}], 1)
    with pytest.raises(UserError, match="sensor 'LX99' is not known"):
        sensors_for_year(2020, [{"from": None, "to": None, "sensors": ["LX99"]}], 1)


def test_label_image(cfg, ee_offline):
    g = engine.serialize(label_image(cfg))
    assert const(calls(g, "ImageCollection.load")[0]["id"]) == "projects/sat-io/open-datasets/GFSAD/GCEP30"
    assert calls(g, "ImageCollection.mosaic")
    assert const(calls(g, "Image.parseExpression")[0]["expression"]) == "b(0) == 2"
    assert const(calls(g, "Image.rename")[0]["names"]) == [LABEL_BAND]


def test_generated_grid_within_60():
    cells = generated_cells(5, 60)
    assert len(cells) == 72 * 24
    assert all(abs((c.bounds[1] + c.bounds[3]) / 2) <= 60 for c in cells)
    assert len({c.id for c in cells}) == len(cells)
    assert len(generated_cells(2.5, 60, [0, 0, 5, 5])) == 4


def _dry(tmp_path, *args):
    rc = main([*args, "dry_run=true", f"dry_run_dir={tmp_path / 'dry'}", f"tasks.manifest={tmp_path / 'm.json'}"])
    assert rc == 0
    return tmp_path / "dry"


def test_samples_dry_run_drive(tmp_path):
    dry = _dry(tmp_path, "samples", "grid.ids=[1234,1235]", "points.seed=7")
    plan = json.loads((dry / "plan-samples.json").read_text())
    assert [t["name"] for t in plan["tasks"]] == ["samples_2015_1234", "samples_2015_1235"]
    rec = json.loads((dry / "samples" / "samples_2015_1234.task.json").read_text())
    req = rec["request"]
    selectors = ["ID", "GridID", *DEFAULT_BANDS, LABEL_BAND]
    assert req["selectors"] == selectors
    assert req["fileExportOptions"]["fileFormat"] == "TF_RECORD_TABLE"
    assert req["fileExportOptions"]["driveDestination"] == {"folder": "cropseg_samples", "filenamePrefix": "samples_2015_1234"}
    g = json.loads((dry / "samples" / "samples_2015_1234.graph.json").read_text())
    k = calls(g, "Kernel.rectangle")[0]
    assert (const(k["xRadius"]), const(k["yRadius"]), const(k["units"])) == (96, 96, "pixels")
    sr = calls(g, "Image.sampleRegions")[0]
    assert const(sr["scale"]) == 30 and const(sr["properties"]) == ["ID", "GridID"]
    # 50 points at least 20 km apart: a seeded random choice among the centres of a 20 km lattice.
    sample = calls(g, "Image.sample")[0]
    assert const(calls(sample["region"], "GeometryConstructors.Rectangle")[0]["coordinates"]) == [-130, 0, -125, 5]
    transform = const(calls(sample["projection"], "Projection")[0]["transform"])
    assert transform[0] == pytest.approx(lattice_step(0, 5, 20)[0]) and transform[4] == pytest.approx(-20 / 110.574)
    assert const(calls(g, "Collection.randomColumn")[0]["seed"]) == 7 + 1234
    assert const(calls(g, "Collection.limit")[0]["limit"]) == 50
    # min_distance_km=0: Earth Engine's plain random points, as before
    g0 = json.loads((_dry(tmp_path / "plain", "samples", "grid.ids=[1234]", "points.seed=7", "points.min_distance_km=0")
                     / "samples" / "samples_2015_1234.graph.json").read_text())
    rp = calls(g0, "FeatureCollection.randomPoints")[0]
    assert const(rp["points"]) == 50 and const(rp["seed"]) == 7 + 1234
    assert const(calls(rp["region"], "GeometryConstructors.Rectangle")[0]["coordinates"]) == [-130, 0, -125, 5]
    # the compact request graph is what Earth Engine receives: it holds the same calls
    assert "Image.neighborhoodToArray" in json.dumps(req["expression"])
    assert {const(a["id"]) for a in calls(g, "ImageCollection.load")} >= {"LANDSAT/LC08/C02/T1_L2"}


@pytest.mark.parametrize("south,north", [(0, 5), (55, 60), (-60, -55), (-2.5, 2.5)])
def test_lattice_points_are_at_least_the_minimum_distance_apart_on_the_ellipsoid(south, north):
    import math

    a, e2 = 6378.137, 0.00669438  # WGS84 (km)
    dlon, dlat = lattice_step(south, north, 20)
    for lat in (south, (south + north) / 2, north):  # neighbours along a parallel and along a meridian
        phi = math.radians(lat)
        w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
        assert a * math.cos(phi) / w * math.radians(dlon) >= 20 - 1e-9
        assert a * (1 - e2) / w ** 3 * math.radians(dlat) >= 20 - 1e-9
    # and not wastefully more than the minimum at the cell's poleward edge
    phi = math.radians(max(abs(south), abs(north)))
    assert a * math.cos(phi) / math.sqrt(1 - e2 * math.sin(phi) ** 2) * math.radians(dlon) < 20.1


def test_samples_dry_run_gcs_and_asset_points(tmp_path):
    dry = _dry(tmp_path, "samples", "grid.ids=[1234]", "samples.destination=gcs", "samples.bucket=gs://bk/train",
               "points.source=asset", "points.asset=users/me/points", "samples.kernel_radius=64",
               "samples.patch_size=128", "composite.bands=[B,G,R,NIR]")
    rec = json.loads((dry / "samples" / "samples_2015_1234.task.json").read_text())
    opts = rec["request"]["fileExportOptions"]
    assert opts["cloudStorageDestination"] == {"bucket": "bk", "filenamePrefix": "train/samples_2015_1234"}
    assert rec["request"]["selectors"] == ["ID", "GridID", "B", "G", "R", "NIR", LABEL_BAND]
    assert rec["params"]["output"] == "gs://bk/train/samples_2015_1234.tfrecord.gz"
    g = json.loads((dry / "samples" / "samples_2015_1234.graph.json").read_text())
    assert const(calls(g, "Collection.loadTable")[0]["tableId"]) == "users/me/points"
    assert const(calls(g, "Kernel.rectangle")[0]["xRadius"]) == 64


def test_composites_dry_run(tmp_path):
    dry = _dry(tmp_path, "composites", "composites.years=[2010,2015]", "composites.grid.region=[0,0,5,2.5]",
               "composites.destination=gcs", "composites.bucket=gs://bk", "composites.prefix=scenes")
    names = sorted(p.name for p in (dry / "composite").glob("*.task.json"))
    cells = [c.id for c in generated_cells(2.5, 60, [0, 0, 5, 2.5])]
    assert names == sorted(f"{y}_{c}.task.json" for y in (2010, 2015) for c in cells)
    rec = json.loads((dry / "composite" / f"2015_{cells[0]}.task.json").read_text())
    req = rec["request"]
    assert req["fileExportOptions"]["fileFormat"] == "GEO_TIFF"
    assert req["fileExportOptions"]["cloudStorageDestination"]["filenamePrefix"] == f"scenes/2015_{cells[0]}"
    assert req["fileExportOptions"]["geoTiffOptions"] == {"cloudOptimized": True,
                                                         "tileDimensions": {"width": 32768, "height": 32768}}
    assert req["maxPixels"] == {"value": "10000000000000"}
    g = json.loads((dry / "composite" / f"2015_{cells[0]}.graph.json").read_text())
    proj = calls(g, "Image.setDefaultProjection")[0]
    assert const(calls(proj["crs"], "Projection")[0]["crs"]) == "EPSG:4326"
    assert const(calls(g, "Image.clipToBoundsAndScale")[0]["scale"]) == 30
    g10 = json.loads((dry / "composite" / f"2010_{cells[0]}.graph.json").read_text())
    assert {const(a["id"]) for a in calls(g10, "ImageCollection.load")} == {"LANDSAT/LT05/C02/T1_L2"}


@pytest.mark.parametrize("args, message", [
    (["samples.kernel_radius=50"], r"kernel_radius=50 gives 101×101 patches but samples.patch_size=193"),
    (["composite.bands=[B,X]"], r"band 'X' does not exist"),
    (["samples.year=1975"], r"year 1975 .* outside the LT05 archive"),
    (["sensors.rules=[{from: null, to: null, sensors: [LX99]}]"], r"sensor 'LX99' is not known"),
    (["grid.source=asset"], r"grid.asset is required"),
    (["points.source=asset", "grid.ids=[1234]"], r"points.asset is required"),
    (["points.min_distance_km=400", "grid.ids=[1234]"], r"points.per_cell=50 points at least "
                                                         r"points.min_distance_km=400 apart do not fit in grid cell 1234"),
    (["label.asset=null", "grid.ids=[1234]"], r"label.asset is required"),
    (["samples.destination=gcs", "grid.ids=[1234]"], r"samples.bucket is required"),
])
def test_bad_input_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["samples", "dry_run=true", f"dry_run_dir={tmp_path}", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_unwritable_manifest_and_unauthenticated(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        main(["composites", f"tasks.manifest={blocker / 'm.json'}", "project=p"])
    err = capsys.readouterr().err.strip()
    assert "task manifest cannot be written" in err and len(err.splitlines()) == 1

    import ee

    def no_credentials(*_a, **_k):
        raise ee.EEException("Please authorize access to your Earth Engine account by running\n\nearthengine authenticate")

    monkeypatch.setattr(ee, "Initialize", no_credentials)
    with pytest.raises(SystemExit) as exit_:
        main(["composites", f"tasks.manifest={tmp_path / 'm.json'}", "project=p"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "earthengine authenticate" in err and "project=" in err
