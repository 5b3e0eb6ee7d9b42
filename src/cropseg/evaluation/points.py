"""Accuracy of cropland maps at validation points.

Each point is read from the first map (in the order given) of its year whose extent
covers it, with its coordinates transformed to that map's CRS. Points outside every
map, on nodata, or of a year without maps are counted and dropped; when no point at all
is usable the command says why and fails (the per-point table is still written).

``points.csv`` holds the user's columns exactly as given (a CSV's text is kept, so
coordinates keep every digit) followed by what the evaluation adds (``ADDED``); an added
name the input already uses gets the suffix ``_eval``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from rasterio.warp import transform as warp_transform

from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_dir, write_text_atomic

from .maps import MapRaster, MapSpec, maps_by_year, open_maps
from .metrics import METRICS, binary_metrics, bootstrap, stratified
from .vector import Points, read_points

STATUSES = ("used", "outside", "nodata", "no_map_for_year", "no_truth")
#: Columns the evaluation adds per point: internal name -> name in points.csv.
ADDED = {"_x": "x", "_y": "y", "_map": "map", "_map_year": "map_year", "_year_used": "year_used",
         "_probability": "probability", "_predicted": "predicted", "_truth": "truth_cropland", "_status": "status"}


@dataclass
class PointsConfig:
    points: str
    maps: Sequence[str]
    truth_column: str
    truth_values: Sequence[str] | None = None  # values meaning cropland; default 1 (0/1 truth)
    out: str = "evaluation/points"
    x_column: str | None = None
    y_column: str | None = None
    crs: str | None = None
    year_column: str | None = None  # default: "year" when the points have it
    year: int | None = None  # every point belongs to this year
    all_years: bool = False  # points without years are compared with every year's maps
    group_columns: Sequence[str] = field(default_factory=list)
    spec: MapSpec = field(default_factory=MapSpec)
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    strata_column: str | None = None
    stratum_areas: str | None = None  # "auto" or "0=123,1=45" (km²)
    plots: bool = True


def _values_match(series: pd.Series, values: Sequence[str]) -> np.ndarray:
    as_text = series.astype(str).str.strip()
    num = pd.to_numeric(series, errors="coerce")
    hit = as_text.isin([str(v).strip() for v in values]).to_numpy()
    for v in values:
        try:
            hit |= (num == float(v)).to_numpy()
        except ValueError:
            pass
    return hit


def truth_to_binary(table: pd.DataFrame, column: str, values: Sequence[str] | None, where: str) -> np.ndarray:
    """0/1 truth from a column (NaN where missing); a missing column is a user error."""
    if column not in table.columns:
        raise UserError(f"{where}: no truth column {column!r} (columns: {', '.join(map(str, table.columns))}); "
                        "pass truth_column=COL")
    col = table[column]
    missing = col.isna().to_numpy()
    if values is None:
        uniq = set(pd.to_numeric(col.dropna(), errors="coerce").unique().tolist())
        if not uniq <= {0, 1, 0.0, 1.0}:
            shown = ", ".join(map(str, sorted(col.dropna().astype(str).unique())[:8]))
            raise UserError(f"{where}: truth column {column!r} holds {shown}: say which values mean cropland "
                            "with cropland_values= (e.g. cropland_values=10)")
        values = ["1"]
    out = _values_match(col, values).astype(float)
    out[missing] = np.nan
    return out


def _point_years(cfg: PointsConfig, pts: Points, maps: list[MapRaster]) -> np.ndarray:
    table = pts.table
    map_years = sorted({m.year for m in maps if m.year is not None})
    col = cfg.year_column or ("year" if "year" in table.columns else None)
    if cfg.year is not None:
        return np.full(len(table), int(cfg.year))
    if col is not None:
        if col not in table.columns:
            raise UserError(f"{pts.path}: no year column {col!r} (columns: {', '.join(map(str, table.columns))})")
        years = pd.to_numeric(table[col], errors="coerce")
        if years.isna().any():
            raise UserError(f"{pts.path}: {int(years.isna().sum())} points have no year in column {col!r}")
        years = years.astype(int).to_numpy()
        if map_years and not set(years.tolist()) & set(map_years):
            raise UserError(f"mismatched years: points ({pts.path.name}) are for {_years(years)}, "
                            f"maps are for {_years(map_years)}; no year has both")
        return years
    if len(map_years) > 1 and not cfg.all_years:
        raise UserError(f"{pts.path}: points have no year column but the maps cover {_years(map_years)}; "
                        "pass year_column=COL, year=YEAR, or all_years=true to compare every point with every year")
    return np.full(len(table), -1)  # any year


def _years(values) -> str:
    u = sorted(set(int(v) for v in values))
    return ", ".join(map(str, u[:10])) + (" ..." if len(u) > 10 else "")


def locate_and_sample(xs: np.ndarray, ys: np.ndarray, crs, years: np.ndarray, maps: Sequence[MapRaster]
                      ) -> pd.DataFrame:
    """For each point: the covering map of its year (-1 = any year), cropland, probability, status."""
    import rasterio

    n = len(xs)
    out = pd.DataFrame({"_map": pd.Series([None] * n, dtype=object), "_map_year": np.full(n, -1),
                        "_probability": np.full(n, np.nan), "_predicted": np.full(n, np.nan),
                        "_status": np.full(n, "outside", dtype=object)})
    have_year = {m.year for m in maps}
    no_map = np.array([y != -1 and y not in have_year for y in years])
    out.loc[no_map, "_status"] = "no_map_for_year"
    todo = ~no_map
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in maps:
        if not todo.any():
            break
        key = m.crs.to_string()
        if key not in cache:
            if m.crs == crs:
                cache[key] = (xs, ys)
            else:
                tx, ty = warp_transform(crs, m.crs, xs.tolist(), ys.tolist())
                cache[key] = (np.asarray(tx, float), np.asarray(ty, float))
        mx, my = cache[key]
        sel = todo & ((years == -1) | (years == (m.year if m.year is not None else -2))) & m.contains(mx, my)
        if not sel.any():
            continue
        idx = np.flatnonzero(sel)
        with rasterio.open(m.path) as ds:
            crop, valid, prob = m.sample(ds, mx[idx], my[idx])
        out.loc[idx, "_map"] = m.path.name
        out.loc[idx, "_map_year"] = m.year if m.year is not None else -1
        out.loc[idx, "_predicted"] = np.where(valid, crop.astype(float), np.nan)
        if prob is not None:
            out.loc[idx, "_probability"] = prob
        out.loc[idx, "_status"] = np.where(valid, "used", "nodata")
        todo[idx] = False
    return out


def _expand_all_years(pts: Points, maps: list[MapRaster], years: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    map_years = sorted({m.year for m in maps if m.year is not None})
    if (years == -1).all() and len(map_years) > 1:
        table = pd.concat([pts.table.assign(_year=y) for y in map_years], ignore_index=True)
        return table, table["_year"].to_numpy()
    return pts.table.assign(_year=years), years


def summarize(frame: pd.DataFrame, scope: str, group: str, n_boot: int, level: float, seed: int) -> dict:
    counts = {s: int((frame["_status"] == s).sum()) for s in STATUSES}
    used = frame[frame["_status"] == "used"]
    m = binary_metrics(used["_truth"].to_numpy(int), used["_predicted"].to_numpy(int))
    ci = bootstrap(used["_truth"].to_numpy(int), used["_predicted"].to_numpy(int), n_boot, level, seed)
    row = {"scope": scope, "group": group, "points": len(frame), **{f"n_{k}": v for k, v in counts.items()}}
    row |= {k: m[k] for k in ("tn", "fp", "fn", "tp")}
    for k in METRICS:
        row[k] = m[k]
        row[f"{k}_low"], row[f"{k}_high"] = ci[k]
    return row


def _parse_areas(spec: str) -> dict:
    areas = {}
    for part in spec.split(","):
        if "=" not in part:
            raise UserError(f"stratum_areas={spec!r}: write STRATUM=AREA pairs, e.g. 0=9000,1=1000 (km²), or auto")
        k, v = part.split("=", 1)
        try:
            areas[k.strip()] = float(v)
        except ValueError:
            raise UserError(f"stratum_areas: {v!r} is not a number") from None
    return areas


def _mapped_areas(maps: Sequence[MapRaster]) -> dict[str, float]:
    """Mapped area (km²) of each map class over ``maps``, with true pixel areas."""
    from .area import map_class_areas

    crop = non = 0.0
    for m in maps:
        c, v = map_class_areas(m)
        crop += c
        non += v - c
    return {"0": non / 1e6, "1": crop / 1e6}


def _stratified_rows(frame: pd.DataFrame, cfg: PointsConfig, maps: list[MapRaster]) -> tuple[list[dict], list[str]]:
    """Area-adjusted rows, and why any scope has none (a stratum without points, no mapped area):
    those scopes are left out with a warning, the plain metrics stand."""
    used = frame[frame["_status"] == "used"]
    if cfg.strata_column and cfg.strata_column not in used.columns:
        raise UserError(f"{cfg.points}: no strata column {cfg.strata_column!r}")
    auto = cfg.stratum_areas == "auto"
    scopes: list[tuple[str, str, pd.DataFrame, dict]] = []
    if auto:
        if cfg.strata_column:
            raise UserError("stratum_areas=auto uses the map classes as strata; with strata_column give the "
                            "stratum areas explicitly (S=AREA,...)")
        for year, ms in maps_by_year(maps).items():
            sub = used if year is None else used[used["_map_year"] == year]
            if len(sub):
                scopes.append(("year" if year is not None else "overall", str(year), sub, _mapped_areas(ms)))
    else:
        scopes.append(("overall", "all", used, _parse_areas(cfg.stratum_areas)))
    rows, warnings = [], []
    for scope, group, sub, areas in scopes:
        strata = (sub[cfg.strata_column].astype(str) if cfg.strata_column
                  else sub["_predicted"].astype(int).astype(str)).to_numpy()
        try:
            res = stratified(sub["_truth"].astype(int).astype(str).to_numpy(),
                             sub["_predicted"].astype(int).astype(str).to_numpy(), strata, areas,
                             classes=["0", "1"], level=cfg.level)
        except ValueError as err:
            if not auto and "without an area" in str(err):
                raise UserError(f"stratum_areas={cfg.stratum_areas}: {err}") from None
            warnings.append(f"no area-adjusted accuracy for {scope} {group}: {err} (the plain metrics are written)")
            continue
        for cls, name in (("1", "cropland"), ("0", "non-cropland")):
            c = res["classes"][cls]
            rows.append({"scope": scope, "group": group, "class": name, "n": len(sub),
                         "overall_accuracy": res["overall_accuracy"], "overall_accuracy_ci": res["overall_accuracy_ci"],
                         **{k: v for k, v in c.items()}, "total_area_km2": res["total_area"]})
    return rows, warnings


def evaluate_points(cfg: PointsConfig) -> dict:
    out = ensure_output_dir(cfg.out, "out")
    pts = read_points(cfg.points, cfg.x_column, cfg.y_column, cfg.crs)
    truth_to_binary(pts.table, cfg.truth_column, cfg.truth_values, str(pts.path))  # fail early
    maps = open_maps(cfg.maps, cfg.spec, year=None)
    for g in cfg.group_columns:
        if g not in pts.table.columns:
            raise UserError(f"{pts.path}: no grouping column {g!r} (columns: {', '.join(map(str, pts.table.columns))})")
    years = _point_years(cfg, pts, maps)
    table, years = _expand_all_years(pts, maps, years)
    truth = truth_to_binary(table, cfg.truth_column, cfg.truth_values, str(pts.path))
    located = locate_and_sample(table["_x"].to_numpy(), table["_y"].to_numpy(), pts.crs, years, maps)
    frame = pd.concat([table.reset_index(drop=True), located], axis=1)
    frame["_truth"] = truth
    frame.loc[np.isnan(truth) & (frame["_status"] == "used"), "_status"] = "no_truth"
    frame["_year_used"] = np.where(years == -1, frame["_map_year"], years)
    _write_csv(_per_point_table(frame, pts), out / "points.csv", float_format=None)
    _check_usable(frame, maps, out / "points.csv")

    rows = [summarize(frame, "overall", "all", cfg.n_boot, cfg.level, cfg.seed)]
    if frame["_year_used"].nunique() > 1 or (frame["_year_used"] != -1).any():
        for y, sub in frame.groupby("_year_used"):
            if y != -1:
                rows.append(summarize(sub, "year", str(y), cfg.n_boot, cfg.level, cfg.seed))
    for g in cfg.group_columns:
        for val, sub in frame.groupby(frame[g].astype(str)):
            rows.append(summarize(sub, g, str(val), cfg.n_boot, cfg.level, cfg.seed))
    metrics = pd.DataFrame(rows)
    strat, warnings = _stratified_rows(frame, cfg, maps) if cfg.stratum_areas else ([], [])

    _write_csv(metrics, out / "metrics.csv")
    if strat:
        _write_csv(pd.DataFrame(strat), out / "area_adjusted.csv")
    summary = {
        "points_file": str(pts.path), "maps": [m.describe() for m in maps], "truth_column": cfg.truth_column,
        "cropland_values": list(cfg.truth_values or ["1"]), "level": cfg.level, "bootstrap": cfg.n_boot,
        "metrics": _clean(metrics.to_dict(orient="records")), "area_adjusted": _clean(strat), "warnings": warnings,
    }
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    pictures = []
    if cfg.plots:
        from .plots import confusion_matrices

        panels = [r for r in rows if r["scope"] in ("overall", "year")]
        pictures.append(str(confusion_matrices(panels, out / "confusion_matrix.png", level=cfg.level)))
    summary["files"] = [str(out / f) for f in ("points.csv", "metrics.csv", "metrics.json")] + pictures
    if strat:
        summary["files"].append(str(out / "area_adjusted.csv"))
    summary["table"] = metrics
    summary["area_adjusted_table"] = pd.DataFrame(strat)
    return summary


def _per_point_table(frame: pd.DataFrame, pts: Points) -> pd.DataFrame:
    """The input columns as given, then the added ones (``ADDED``); coordinates only for vector files,
    whose coordinates are not among their columns."""
    inputs = [c for c in pts.table.columns if c not in ("_x", "_y")]
    added = [c for c in ADDED if c in frame.columns and (c not in ("_x", "_y") or not pts.coordinate_columns)]
    taken = set(map(str, inputs))
    names = {c: ADDED[c] + ("_eval" if ADDED[c] in taken else "") for c in added}
    table = frame[inputs + added].rename(columns=names)
    table[names["_probability"]] = table[names["_probability"]].round(6)
    table[names["_map_year"]] = table[names["_map_year"]].astype("Int64").where(table[names["_map_year"]] != -1)
    table[names["_year_used"]] = table[names["_year_used"]].astype("Int64").where(table[names["_year_used"]] != -1)
    for c in ("_predicted", "_truth"):
        table[names[c]] = table[names[c]].astype("Int64")
    return table


def _check_usable(frame: pd.DataFrame, maps: list[MapRaster], table: Path) -> None:
    """No usable point at all is not an evaluation: say why, and fail."""
    counts = frame["_status"].value_counts()
    if counts.get("used", 0):
        return
    why = [f"{n} {STATUS_TEXT[s]}" for s, n in counts.items()]
    years = _years([m.year for m in maps if m.year is not None]) if any(m.year for m in maps) else "no year"
    raise UserError(f"no point is usable: {', '.join(why)} (maps: {len(maps)}, years {years}); "
                    f"each point's status is in {table}")


STATUS_TEXT = {"outside": "outside every map", "nodata": "on nodata", "no_map_for_year": "of a year without maps",
               "no_truth": "without a truth value", "used": "used"}


def _clean(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if np.isnan(obj) else float(obj)
    return obj


def _write_csv(df: pd.DataFrame, path: Path, float_format: str | None = "%.6g") -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
