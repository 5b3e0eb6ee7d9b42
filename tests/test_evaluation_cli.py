"""The four evaluate commands as a user runs them: on the demo, and on bad input (one line, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from cropseg.evaluate import main
from cropseg.evaluation.demo import generate


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldemo")
    generate(root)
    return root


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "cropseg.evaluate", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_demo_points_all_formats_and_olofsson(demo, tmp_path, capsys):
    maps = str(demo / "maps")
    out = tmp_path / "pts"
    assert main(["points", str(demo / "points.csv"), maps, "truth_column=class", "cropland_values=10",
                 "group_by=region", "stratum_areas=auto", "bootstrap=200", f"out={out}"]) == 0
    m = pd.read_csv(out / "metrics.csv")
    overall = m[m.scope == "overall"].iloc[0]
    assert overall.n_outside == 3 and overall.n_nodata == 3 and overall.n_used == 660
    assert 0.85 < overall.overall_accuracy < 0.99
    assert overall.overall_accuracy_low < overall.overall_accuracy < overall.overall_accuracy_high
    assert set(m[m.scope == "year"].group.astype(int)) == set(range(2015, 2021))
    adj = pd.read_csv(out / "area_adjusted.csv")
    assert len(adj) == 12 and (adj.area_ci > 0).all()
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    # The same points as GeoJSON and GeoPackage give the same counts.
    for f in ("points.geojson", "points.gpkg"):
        if f.endswith("gpkg"):
            pytest.importorskip("pyogrio")
        o2 = tmp_path / f
        assert main(["points", str(demo / f), maps, "truth_column=class", "cropland_values=10",
                     "bootstrap=0", "plots=false", f"out={o2}"]) == 0
        m2 = pd.read_csv(o2 / "metrics.csv").iloc[0]
        assert (m2.tp, m2.fp, m2.fn, m2.tn) == (overall.tp, overall.fp, overall.fn, overall.tn)


def test_shapefile_points_projected_crs(demo, tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    from rasterio.warp import transform as wt

    from cropseg.evaluation.vector import point_wkb

    pts = pd.read_csv(demo / "points.csv").iloc[:40]
    x, y = wt("EPSG:4326", "EPSG:32636", pts.lon.tolist(), pts.lat.tolist())
    pyogrio.raw.write(str(tmp_path / "p.shp"), np.array([point_wkb(a, b) for a, b in zip(x, y)], dtype=object),
                      [pts["class"].to_numpy(), pts.year.to_numpy()], ["truth", "year"], crs="EPSG:32636",
                      geometry_type="Point")
    assert main(["points", str(tmp_path / "p.shp"), str(demo / "maps"), "truth_column=truth",
                 "cropland_values=10", "bootstrap=0", "plots=false", f"out={tmp_path / 'o'}"]) == 0
    ref = main(["points", str(demo / "points.csv"), str(demo / "maps"), "truth_column=class", "cropland_values=10",
                "bootstrap=0", "plots=false", f"out={tmp_path / 'o2'}"])
    a = pd.read_csv(tmp_path / "o" / "points.csv")
    b = pd.read_csv(tmp_path / "o2" / "points.csv").iloc[:40]
    assert ref == 0 and (a["predicted"].to_numpy() == b["predicted"].to_numpy()).all()


def test_demo_area_agreement_clusters(demo, tmp_path):
    maps = str(demo / "maps")
    assert main(["area", maps, f"regions={demo / 'regions.geojson'}", f"out={tmp_path / 'area'}"]) == 0
    t = pd.read_csv(tmp_path / "area" / "area.csv")
    assert len(t) == 4 * 6
    frac = t.pivot(index="region", columns="year", values="cropland_fraction")
    assert frac.loc["centre-north", 2020] < frac.loc["centre-north", 2015] - 0.2  # planted decline
    assert frac.loc["centre-south", 2020] > frac.loc["centre-south", 2015] + 0.2  # planted rise
    for f in ("area_timeseries.png", "change_map.png"):
        assert (tmp_path / "area" / f).stat().st_size > 10_000
    assert main(["agreement", str(demo / "reference" / "gfsad_2018.tif"), maps, "reference_class_values=2",
                 f"out={tmp_path / 'agr'}"]) == 0
    a = pd.read_csv(tmp_path / "agr" / "agreement.csv")
    assert len(a) == 7 and 0.75 < a.iloc[-1].agreement < 0.95 and set(a.year.dropna()) == {2018}
    assert (tmp_path / "agr" / "agreement.png").exists()
    assert main(["clusters", maps, "cell_size=0.5", f"out={tmp_path / 'cl'}"]) == 0
    c = pd.read_csv(tmp_path / "cl" / "clusters.csv").set_index("region")
    # the tiles' planted patterns: 3 clusters, each 0.5° cell in the pattern of its 1° tile
    pattern = json.loads((demo / "demo.json").read_text())["patterns"]
    tile = lambda r: f"E0{int(float(r[1:7]))}N{int(float(r[8:]))}"  # noqa: E731
    planted = [pattern[tile(r)].split()[0] for r in c.index]
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(planted, c.cluster) == 1.0
    assert (tmp_path / "cl" / "clusters.png").exists()
    assert main(["clusters", f"table={tmp_path / 'area' / 'area.csv'}", f"regions={demo / 'regions.geojson'}",
                 "k=2", "method=hierarchical", f"out={tmp_path / 'cl2'}"]) == 0


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_bad_input_one_line(demo, tmp_path):
    maps = str(demo / "maps")
    _one_line_error(run_cli("points", str(demo / "points.csv"), maps, "truth_column=label"), "no truth column 'label'")
    nocrs = tmp_path / "2015_X_cropland.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 2, 2), np.uint8))
    _one_line_error(run_cli("area", str(nocrs)), "has no CRS")
    _one_line_error(run_cli("agreement", str(demo / "reference" / "gfsad_2018.tif"), str(demo / "maps" / "2015_*")),
                    "mismatched years")
    pd.DataFrame({"lon": [30.5], "lat": [46.5], "year": [1999], "class": [10]}).to_csv(tmp_path / "y.csv", index=False)
    _one_line_error(run_cli("points", str(tmp_path / "y.csv"), maps, "truth_column=class",
                            "cropland_values=10"), "mismatched years")
    (tmp_path / "empty.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    _one_line_error(run_cli("area", maps, f"regions={tmp_path / 'empty.geojson'}"), "empty region set")
    _one_line_error(run_cli("points", str(tmp_path / "missing.csv"), maps, "truth_column=c"), "not found")
    # An output folder that cannot be made fails before the work, not with a traceback after it.
    (tmp_path / "a-file").write_text("")
    for sub in ("points", "area"):
        args = [str(demo / "points.csv"), maps, "truth_column=class", "cropland_values=10"] if sub == "points" else [maps]
        _one_line_error(run_cli(sub, *args, f"out={tmp_path / 'a-file' / 'o'}"), f"{tmp_path / 'a-file'} is a file")


def test_nothing_usable_says_why_and_fails(demo, tmp_path):
    """All points outside every map (or of a year without maps) gave NaN metrics and exit 0."""
    pd.DataFrame({"lon": [100.0, 101.0], "lat": [0.0, 1.0], "year": [2015, 2015], "class": [10, 20]}).to_csv(
        tmp_path / "far.csv", index=False)
    proc = run_cli("points", str(tmp_path / "far.csv"), str(demo / "maps"), "truth_column=class",
                   "cropland_values=10", f"out={tmp_path / 'o'}")
    _one_line_error(proc, "no point is usable: 2 outside every map")
    assert list(pd.read_csv(tmp_path / "o" / "points.csv")["status"]) == ["outside", "outside"]
    assert not (tmp_path / "o" / "metrics.csv").exists()
    pd.DataFrame({"lon": [30.5] * 3, "lat": [46.5] * 3, "year": [2015, 2016, 2030], "class": [10, 20, 10]}).to_csv(
        tmp_path / "late.csv", index=False)
    proc = run_cli("points", str(tmp_path / "late.csv"), str(demo / "maps" / "2015_*"), "truth_column=class",
                   "cropland_values=10", "year=1999", f"out={tmp_path / 'o2'}")
    _one_line_error(proc, "no point is usable: 3 of a year without maps (maps: 6, years 2015)")


def test_points_csv_keeps_the_input_columns_as_given(demo, tmp_path):
    """points.csv repeated x,y and rewrote a northing 5123456.7 as 5.12346e+06."""
    from rasterio.warp import transform as wt

    pts = pd.read_csv(demo / "points.csv").iloc[:5]
    xs, ys = wt("EPSG:4326", "EPSG:32636", pts.lon.tolist(), pts.lat.tolist())
    text = ["x,y,class,status,truth"] + [f"{x:.1f},{y:.1f},{c},keep 007,{t}"
                                       for x, y, c, t in zip(xs, ys, pts["class"], ["a", "b", "c", "d", "e"])]
    (tmp_path / "utm.csv").write_text("\n".join(text) + "\n")
    assert main(["points", str(tmp_path / "utm.csv"), str(demo / "maps"), "truth_column=class", "cropland_values=10",
                 "crs=EPSG:32636", "year=2015", "bootstrap=0", "plots=false", f"out={tmp_path / 'o'}"]) == 0
    lines = (tmp_path / "o" / "points.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["x", "y", "class", "status", "truth"] and header.count("x") == 1
    # added columns after the input's; a name the input uses gets _eval
    assert header[5:] == ["map", "map_year", "year_used", "probability", "predicted", "truth_cropland", "status_eval"]
    for given, written in zip(text[1:], lines[1:]):
        assert written.startswith(given + ","), (given, written)  # every digit, text and column kept
    assert all(line.endswith(",used") for line in lines[1:])


def test_an_empty_stratum_leaves_the_plain_metrics_and_says_why(demo, tmp_path, capsys):
    """stratum_areas=auto with a stratum without points aborted everything and wrote nothing."""
    common = ["truth_column=class", "cropland_values=10", "bootstrap=0", "plots=false"]
    assert main(["points", str(demo / "points.csv"), str(demo / "maps"), *common, f"out={tmp_path / 'all'}"]) == 0
    done = pd.read_csv(tmp_path / "all" / "points.csv")
    # 2016: keep only the points the map calls non-cropland, so its cropland stratum has none
    keep = (done.year != 2016) | (done.predicted == 0)
    pd.read_csv(demo / "points.csv")[keep.to_numpy()].to_csv(tmp_path / "p.csv", index=False)
    capsys.readouterr()
    assert main(["points", str(tmp_path / "p.csv"), str(demo / "maps"), *common, "stratum_areas=auto",
                 f"out={tmp_path / 'o'}"]) == 0
    err = capsys.readouterr().err
    assert "warning: no area-adjusted accuracy for year 2016: strata without sample points: ['1']" in err, err
    assert (tmp_path / "o" / "metrics.csv").is_file()
    adj = pd.read_csv(tmp_path / "o" / "area_adjusted.csv")
    assert set(adj.group) == {2015, 2017, 2018, 2019, 2020}
    assert "2016" in json.loads((tmp_path / "o" / "metrics.json").read_text())["warnings"][0]


def test_area_takes_a_year(demo, tmp_path):
    """area could not be given a year although its error told the user to pass one."""
    src = sorted((demo / "maps").glob("2016_*_cropland.tif"))[0]
    with rasterio.open(src) as ds:
        profile, data = ds.profile, ds.read()
    mystery = tmp_path / "mystery.tif"  # no year in its name or tags
    with rasterio.open(mystery, "w", **profile) as ds:
        ds.write(data)
    _one_line_error(run_cli("area", str(mystery), f"out={tmp_path / 'a0'}"), "pass year=YEAR")
    assert main(["area", str(mystery), "year=2016", "plots=false", f"out={tmp_path / 'a1'}"]) == 0
    assert set(pd.read_csv(tmp_path / "a1" / "area.csv").year) == {2016}
    assert main(["area", str(demo / "maps"), "year=2016", "plots=false", f"out={tmp_path / 'a2'}"]) == 0
    t = pd.read_csv(tmp_path / "a2" / "area.csv")
    assert set(t.year) == {2016} and t.region.nunique() == 6
