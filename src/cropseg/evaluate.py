"""``python -m cropseg.evaluate`` (or ``cropseg evaluate``): judge cropland maps.

    points     accuracy at validation points (bootstrap CIs; Olofsson area-adjusted estimates)
    agreement  pixel-wise agreement with a reference product, agreement maps
    area       cropland area per region / lon-lat cell / map tile and year, change map
    clusters   clustering of cropland-fraction trajectories over the years
    demo       write a small demo (maps for 6 years, points, regions, reference)

Options are ``key=value`` (conf/evaluate/<subcommand>.yaml); every subcommand takes
``--help``. See docs/evaluation.md.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from cropseg.command import Command, Group
from cropseg.errors import choose
from cropseg.evaluation.maps import MapSpec


def _spec(c: dict, prefix: str = "") -> MapSpec:
    values = c[f"{prefix}class_values"]
    return MapSpec(kind=c[f"{prefix}kind"], scale=c[f"{prefix}scale"], threshold=c[f"{prefix}threshold"],
                   class_values=[float(v) for v in values] if values else None)


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def _print_files(files) -> None:
    print("outputs:")
    for f in files:
        print(f"  {f}")


def run_points(a: dict) -> None:
    from cropseg.evaluation.points import PointsConfig, evaluate_points

    res = evaluate_points(PointsConfig(
        points=a["points"], maps=a["maps"], truth_column=a["truth_column"],
        truth_values=[str(v) for v in a["cropland_values"]] or None, out=a["out"], x_column=a["x_column"],
        y_column=a["y_column"], crs=a["crs"], year_column=a["year_column"], year=a["year"], all_years=a["all_years"],
        group_columns=a["group_by"], spec=_spec(a), n_boot=a["bootstrap"], level=a["level"], seed=a["seed"],
        strata_column=a["strata_column"], stratum_areas=_areas(a["stratum_areas"]), plots=a["plots"]))
    t = res["table"]
    cols = ["scope", "group", "n_used", "n_outside", "n_nodata", "n_no_map_for_year", "overall_accuracy", "precision",
            "recall", "f1", "iou", "kappa"]
    view = t[cols].rename(columns={"precision": "UA", "recall": "PA", "overall_accuracy": "OA", "n_used": "used",
                                   "n_outside": "outside", "n_nodata": "nodata", "n_no_map_for_year": "no_map"})
    print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    o = t.iloc[0]
    print(f"overall: OA {_fmt(o.overall_accuracy)} [{_fmt(o.overall_accuracy_low)}, {_fmt(o.overall_accuracy_high)}], "
          f"kappa {_fmt(o.kappa)} [{_fmt(o.kappa_low)}, {_fmt(o.kappa_high)}] ({a['level']:.0%} bootstrap, "
          f"{a['bootstrap']} resamples)")
    for w in res.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    s = res["area_adjusted_table"]
    if len(s):
        print("area-adjusted (Olofsson et al. 2014), cropland:")
        c = s[s["class"] == "cropland"]
        for r in c.itertuples():
            print(f"  {r.scope} {r.group}: OA {r.overall_accuracy:.3f}±{r.overall_accuracy_ci:.3f}, "
                  f"UA {r.users_accuracy:.3f}±{r.users_accuracy_ci:.3f}, PA {r.producers_accuracy:.3f}±{r.producers_accuracy_ci:.3f}, "
                  f"area {r.area:,.1f}±{r.area_ci:,.1f} km² (mapped {r.mapped_area:,.1f} km²)")
    _print_files(res["files"])


def run_agreement(a: dict) -> None:
    from cropseg.evaluation.agreement import AgreementConfig, evaluate_agreement

    res = evaluate_agreement(AgreementConfig(maps=a["maps"], reference=a["reference"], out=a["out"], spec=_spec(a),
                                             reference_spec=_spec(a, "reference_"), resampling=a["resampling"],
                                             year=a["year"], write_maps=a["write_maps"], plots=a["plots"]))
    print(f"reference: {res['reference']}")
    t = res["table"][["map", "year", "area_compared_km2", "map_cropland_km2", "reference_cropland_km2", "agreement",
                      "kappa", "f1", "iou"]]
    print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _print_files(res["files"])


def run_area(a: dict) -> None:
    from cropseg.evaluation.area import AreaConfig, evaluate_area

    res = evaluate_area(AreaConfig(maps=a["maps"], out=a["out"], regions=a["regions"], region_id=a["region_id"],
                                   cell_size=a["cell_size"], spec=_spec(a), plots=a["plots"], year=a["year"]))
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    tot = res["totals"]
    tot["fraction"] = tot["cropland_km2"] / tot["mapped_km2"]
    print(f"{res['maps']} maps, {res['regions']} regions; cropland per year (all regions):")
    print(tot.to_string(float_format=lambda v: f"{v:,.3f}"))
    _print_files(res["files"])


def run_clusters(a: dict) -> None:
    from cropseg.evaluation.clustering import ClustersConfig, evaluate_clusters

    method = choose("method", a["method"], ("kmeans", "hierarchical"), key="method")
    features = choose("features", a["features"], ("change", "fraction"), key="features")
    res = evaluate_clusters(ClustersConfig(table=a["table"], maps=a["maps"], regions=a["regions"],
                                           region_id=a["region_id"], cell_size=a["cell_size"], spec=_spec(a),
                                           k=str(a["k"]), k_max=a["k_max"], method=method, features=features,
                                           seed=a["seed"], out=a["out"], plots=a["plots"]))
    r = res["result"]
    if r["silhouette"]:
        print("silhouette by k: " + ", ".join(f"{k}: {v:.3f}" for k, v in r["silhouette"].items()))
    print(f"k = {r['k']} ({len(r['regions'])} regions, years {r['years'][0]}–{r['years'][-1]})")
    for c, name in r["names"].items():
        print(f"  cluster {c}: {name}, {int((r['labels'] == c).sum())} regions")
    if res["dropped"]:
        print(f"left out (a year without data): {', '.join(res['dropped'][:10])}", file=sys.stderr)
    _print_files(res["files"])


def _areas(value) -> str | None:
    """``stratum_areas`` as the text the evaluation parses (Hydra may hand over a number or a dict)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _timed(func):
    def run(cfg: dict) -> int:
        start = time.time()
        with pd.option_context("display.width", 160, "display.max_columns", 30):
            func(cfg)
        print(f"done in {time.time() - start:.1f} s")
        return 0

    return run


def run_demo(cfg: dict) -> int:
    from cropseg.evaluation.demo import generate
    from cropseg.io import ensure_output_dir

    ensure_output_dir(cfg["out"], "out")
    s = generate(cfg["out"], seed=cfg["seed"])
    print(f"demo: {s['maps']} maps ({len(s['years'])} years), {s['points']} points, {s['regions']} regions in {cfg['out']}")
    return 0


def _command(name: str, func, summary: str, positional: tuple[str, ...]) -> Command:
    return Command(f"cropseg evaluate {name}", f"evaluate/{name}", func, summary, positional)


EVALUATE = Group("cropseg evaluate", {
    "points": _command("points", _timed(run_points), "accuracy at validation points", ("points", "maps...")),
    "agreement": _command("agreement", _timed(run_agreement), "pixel-wise agreement with a reference raster",
                          ("reference", "maps...")),
    "area": _command("area", _timed(run_area), "cropland area per region and year", ("maps...",)),
    "clusters": _command("clusters", _timed(run_clusters), "cluster cropland trajectories", ("maps...",)),
    "demo": _command("demo", run_demo, "write the evaluation demo", ("out",)),
}, __doc__.splitlines()[0])
main = EVALUATE.main


if __name__ == "__main__":
    sys.exit(main())
