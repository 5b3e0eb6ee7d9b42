"""``python -m cropseg.evaluate`` (or ``cropseg evaluate``): judge cropland maps.

    points     accuracy at validation points (bootstrap CIs; Olofsson area-adjusted estimates)
    agreement  pixel-wise agreement with a reference product, agreement maps
    area       cropland area per region / lon-lat cell / map tile and year, change map
    clusters   clustering of cropland-fraction trajectories over the years
    demo       write a small demo (maps for 6 years, points, regions, reference)

Every subcommand takes ``--help``. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from cropseg.errors import report_user_errors
from cropseg.evaluation.maps import KINDS, MapSpec


def _values(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in str(text).split(",") if v.strip()]


def _map_args(p: argparse.ArgumentParser, prefix: str = "", what: str = "maps") -> None:
    p.add_argument(f"--{prefix}kind", choices=KINDS, default="auto",
                   help=f"how to read the {what}' band 1 (auto: tag probability_scale / band description / dtype / values)")
    p.add_argument(f"--{prefix}scale", type=float, default=None,
                   help="probability scale (default: tag probability_scale, else 200 for integers, 1 for floats)")
    p.add_argument(f"--{prefix}threshold", type=float, default=None,
                   help="cropland if probability >= threshold (default: the class band if present, else tag threshold or 0.5)")
    p.add_argument(f"--{prefix}class-values", default=None,
                   help="for class rasters: values meaning cropland, comma-separated (default 1)")


def _spec(a, prefix: str = "") -> MapSpec:
    g = lambda k: getattr(a, prefix.replace("-", "_") + k)  # noqa: E731
    return MapSpec(kind=g("kind"), scale=g("scale"), threshold=g("threshold"),
                   class_values=[float(v) for v in _values(g("class_values"))] if g("class_values") else None)


def _zones(p: argparse.ArgumentParser) -> None:
    p.add_argument("--regions", help="region polygons (GeoJSON, GeoPackage, Shapefile)")
    p.add_argument("--region-id", help="column with region ids (default: id/name/region, else row number)")
    p.add_argument("--cell-size", type=float, help="instead of regions: lon/lat cells of this size in degrees")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cropseg evaluate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("points", help="accuracy at validation points")
    p.add_argument("points", help="points: CSV (lon/lat or x/y + --crs), GeoJSON, GeoPackage, Shapefile")
    p.add_argument("maps", nargs="+", help="prediction rasters, folders or glob patterns")
    p.add_argument("--truth-column", required=True, help="column holding the ground truth")
    p.add_argument("--cropland-values", help="truth values meaning cropland, comma-separated (e.g. 10); default 1")
    p.add_argument("--x-column")
    p.add_argument("--y-column")
    p.add_argument("--crs", help="CRS of CSV coordinates (default EPSG:4326) or override of a vector file's")
    p.add_argument("--year-column", help="points' year column (default 'year' when present)")
    p.add_argument("--year", type=int, help="all points are for this year")
    p.add_argument("--all-years", action="store_true", help="points without a year: compare with every year's maps")
    p.add_argument("--group-by", action="append", default=[], help="also report by this column (repeatable)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (0: none)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strata-column", help="stratum of each point (default: the map class at the point)")
    p.add_argument("--stratum-areas", help="area-adjusted (Olofsson 2014) estimates: 'auto' (mapped class areas "
                   "from the maps) or STRATUM=KM2,... e.g. 0=9000,1=1000")
    p.add_argument("--out", default="evaluation/points")
    p.add_argument("--no-plots", action="store_true")
    _map_args(p)

    p = sub.add_parser("agreement", help="pixel-wise agreement with a reference raster")
    p.add_argument("reference", help="reference raster (e.g. GFSAD30 tile, another year's map)")
    p.add_argument("maps", nargs="+", help="cropseg maps, folders or glob patterns")
    p.add_argument("--resampling", default="nearest", help="reference onto the map grid: nearest (default), mode, ...")
    p.add_argument("--year", type=int, help="compare only maps of this year (and allow a reference of another year)")
    p.add_argument("--out", default="evaluation/agreement")
    p.add_argument("--no-maps", action="store_true", help="do not write agreement GeoTIFFs")
    p.add_argument("--no-plots", action="store_true")
    _map_args(p)
    _map_args(p, "reference-", "reference")

    p = sub.add_parser("area", help="cropland area per region and year")
    p.add_argument("maps", nargs="+", help="maps of one or more years, folders or glob patterns")
    _zones(p)
    p.add_argument("--out", default="evaluation/area")
    p.add_argument("--no-plots", action="store_true")
    _map_args(p)

    p = sub.add_parser("clusters", help="cluster cropland trajectories")
    p.add_argument("maps", nargs="*", help="maps (or give --table)")
    p.add_argument("--table", help="area.csv from 'evaluate area' instead of maps")
    _zones(p)
    p.add_argument("--k", default="auto", help="number of clusters, or auto (best silhouette)")
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--method", default="kmeans", choices=("kmeans", "hierarchical"))
    p.add_argument("--features", default="change", choices=("fraction", "change"),
                   help="cluster the change since the first year (default: the trajectory's shape) or raw fractions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evaluation/clusters")
    p.add_argument("--no-plots", action="store_true")
    _map_args(p)

    p = sub.add_parser("demo", help="write the evaluation demo")
    p.add_argument("out", nargs="?", default="demo/evaluation")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def _print_files(files) -> None:
    print("outputs:")
    for f in files:
        print(f"  {f}")


def run_points(a) -> None:
    from cropseg.evaluation.points import PointsConfig, evaluate_points

    res = evaluate_points(PointsConfig(
        points=a.points, maps=a.maps, truth_column=a.truth_column, truth_values=_values(a.cropland_values),
        out=a.out, x_column=a.x_column, y_column=a.y_column, crs=a.crs, year_column=a.year_column, year=a.year,
        all_years=a.all_years, group_columns=a.group_by, spec=_spec(a), n_boot=a.bootstrap, level=a.level,
        seed=a.seed, strata_column=a.strata_column, stratum_areas=a.stratum_areas, plots=not a.no_plots))
    t = res["table"]
    cols = ["scope", "group", "n_used", "n_outside", "n_nodata", "n_no_map_for_year", "overall_accuracy", "precision",
            "recall", "f1", "iou", "kappa"]
    view = t[cols].rename(columns={"precision": "UA", "recall": "PA", "overall_accuracy": "OA", "n_used": "used",
                                   "n_outside": "outside", "n_nodata": "nodata", "n_no_map_for_year": "no_map"})
    print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    o = t.iloc[0]
    print(f"overall: OA {_fmt(o.overall_accuracy)} [{_fmt(o.overall_accuracy_low)}, {_fmt(o.overall_accuracy_high)}], "
          f"kappa {_fmt(o.kappa)} [{_fmt(o.kappa_low)}, {_fmt(o.kappa_high)}] ({a.level:.0%} bootstrap, {a.bootstrap} resamples)")
    s = res["area_adjusted_table"]
    if len(s):
        print("area-adjusted (Olofsson et al. 2014), cropland:")
        c = s[s["class"] == "cropland"]
        for r in c.itertuples():
            print(f"  {r.scope} {r.group}: OA {r.overall_accuracy:.3f}±{r.overall_accuracy_ci:.3f}, "
                  f"UA {r.users_accuracy:.3f}±{r.users_accuracy_ci:.3f}, PA {r.producers_accuracy:.3f}±{r.producers_accuracy_ci:.3f}, "
                  f"area {r.area:,.1f}±{r.area_ci:,.1f} km² (mapped {r.mapped_area:,.1f} km²)")
    _print_files(res["files"])


def run_agreement(a) -> None:
    from cropseg.evaluation.agreement import AgreementConfig, evaluate_agreement

    res = evaluate_agreement(AgreementConfig(maps=a.maps, reference=a.reference, out=a.out, spec=_spec(a),
                                             reference_spec=_spec(a, "reference-"), resampling=a.resampling,
                                             year=a.year, write_maps=not a.no_maps, plots=not a.no_plots))
    print(f"reference: {res['reference']}")
    t = res["table"][["map", "year", "area_compared_km2", "map_cropland_km2", "reference_cropland_km2", "agreement",
                      "kappa", "f1", "iou"]]
    print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _print_files(res["files"])


def run_area(a) -> None:
    from cropseg.evaluation.area import AreaConfig, evaluate_area

    res = evaluate_area(AreaConfig(maps=a.maps, out=a.out, regions=a.regions, region_id=a.region_id,
                                   cell_size=a.cell_size, spec=_spec(a), plots=not a.no_plots))
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    tot = res["totals"]
    tot["fraction"] = tot["cropland_km2"] / tot["mapped_km2"]
    print(f"{res['maps']} maps, {res['regions']} regions; cropland per year (all regions):")
    print(tot.to_string(float_format=lambda v: f"{v:,.3f}"))
    _print_files(res["files"])


def run_clusters(a) -> None:
    from cropseg.evaluation.clustering import ClustersConfig, evaluate_clusters

    res = evaluate_clusters(ClustersConfig(table=a.table, maps=a.maps, regions=a.regions, region_id=a.region_id,
                                           cell_size=a.cell_size, spec=_spec(a), k=a.k, k_max=a.k_max,
                                           method=a.method, features=a.features, seed=a.seed, out=a.out,
                                           plots=not a.no_plots))
    r = res["result"]
    if r["silhouette"]:
        print("silhouette by k: " + ", ".join(f"{k}: {v:.3f}" for k, v in r["silhouette"].items()))
    print(f"k = {r['k']} ({len(r['regions'])} regions, years {r['years'][0]}–{r['years'][-1]})")
    for c, name in r["names"].items():
        print(f"  cluster {c}: {name}, {int((r['labels'] == c).sum())} regions")
    if res["dropped"]:
        print(f"left out (a year without data): {', '.join(res['dropped'][:10])}", file=sys.stderr)
    _print_files(res["files"])


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    start = time.time()
    if a.command == "demo":
        from cropseg.evaluation.demo import main as demo_main

        return demo_main([a.out, "--seed", str(a.seed)])
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        {"points": run_points, "agreement": run_agreement, "area": run_area, "clusters": run_clusters}[a.command](a)
    print(f"done in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
