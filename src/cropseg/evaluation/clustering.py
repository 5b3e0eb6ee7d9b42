"""Time-series clustering of cropland trajectories (cropland fraction per region and year).

Each region (polygon, lon/lat cell or map tile) is a vector of its cropland fraction
over the years; k-means or Ward hierarchical clustering groups similar trajectories.
``k="auto"`` tries 2..k_max and keeps the best silhouette. Clusters are numbered by
the trend of their mean trajectory (1 = steepest decline) and named from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import silhouette_score

from cropseg.errors import UserError
from cropseg.io import ensure_output_dir

from .maps import MapSpec

METHODS = ("kmeans", "hierarchical")
FEATURES = ("fraction", "change")


def trajectories(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Regions × years matrix of cropland fraction; regions with a gap in any year are left out."""
    need = {"region", "year", "cropland_fraction"}
    if not need <= set(table.columns):
        raise UserError(f"area table lacks columns {sorted(need - set(table.columns))} (make it with 'evaluate area')")
    wide = table.pivot_table(index="region", columns="year", values="cropland_fraction", aggfunc="mean")
    wide = wide.reindex(columns=sorted(wide.columns))
    dropped = [str(r) for r in wide.index[wide.isna().any(axis=1)]]
    return wide.dropna(), dropped


def _fit(x: np.ndarray, k: int, method: str, seed: int) -> np.ndarray:
    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


def cluster_trajectories(wide: pd.DataFrame, k: int | str = "auto", method: str = "kmeans", features: str = "fraction",
                         k_max: int = 8, seed: int = 0) -> dict:
    """Labels 1..k (ordered by trend), names, silhouette per tried k, and the chosen k."""
    if method not in METHODS:
        raise UserError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    if features not in FEATURES:
        raise UserError(f"features={features!r}: choose one of {', '.join(FEATURES)}")
    n, t = wide.shape
    if t < 2:
        raise UserError(f"clustering needs at least 2 years of maps; got {t}")
    if n < 3:
        raise UserError(f"clustering needs at least 3 regions with every year mapped; got {n}")
    x = wide.to_numpy(float)
    if features == "change":
        x = x - x[:, :1]
    sil: dict[int, float] = {}
    if k == "auto":
        for kk in range(2, min(k_max, n - 1) + 1):
            lab = _fit(x, kk, method, seed)
            if len(np.unique(lab)) > 1:
                sil[kk] = float(silhouette_score(x, lab))
        if not sil:
            raise UserError("cannot suggest k: every tried k gave a single cluster (are all trajectories equal?)")
        k = max(sil, key=lambda kk: (round(sil[kk], 6), -kk))
    else:
        k = int(k)
        if not 1 <= k <= n:
            raise UserError(f"k={k}: must be between 1 and the number of regions ({n})")
    raw = _fit(x, k, method, seed) if k > 1 else np.zeros(n, int)
    if k > 1 and len(np.unique(raw)) > 1 and k not in sil:
        sil[k] = float(silhouette_score(x, raw))
    years = np.asarray(wide.columns, float)
    traj = wide.to_numpy(float)
    slopes = {c: np.polyfit(years, traj[raw == c].mean(0), 1)[0] for c in np.unique(raw)}
    order = sorted(slopes, key=lambda c: (slopes[c], traj[raw == c].mean()))
    relabel = {c: i + 1 for i, c in enumerate(order)}
    labels = np.array([relabel[c] for c in raw])
    names = {}
    for c in sorted(set(labels)):
        mean = traj[labels == c].mean(0)
        delta = mean[-1] - mean[0]
        level = "low" if mean.mean() < 0.25 else "medium" if mean.mean() < 0.6 else "high"
        trend = "stable" if abs(delta) < 0.03 else ("rising" if delta > 0 else "falling")
        names[c] = f"{trend}, {level} ({mean[0]:.0%} → {mean[-1]:.0%})"
    return {"labels": labels, "names": names, "k": k, "silhouette": sil, "regions": list(wide.index),
            "years": list(wide.columns)}


@dataclass
class ClustersConfig:
    table: str | None = None  # area.csv from 'evaluate area'
    maps: Sequence[str] = field(default_factory=list)
    regions: str | None = None
    region_id: str | None = None
    cell_size: float | None = None
    spec: MapSpec = field(default_factory=MapSpec)
    k: str = "auto"
    k_max: int = 8
    method: str = "kmeans"
    features: str = "change"
    seed: int = 0
    out: str = "evaluation/clusters"
    plots: bool = True


def evaluate_clusters(cfg: ClustersConfig) -> dict:
    from .area import AreaConfig, evaluate_area, load_regions
    from .points import _write_csv

    out = ensure_output_dir(cfg.out, "out")
    if cfg.table:
        path = Path(cfg.table)
        if not path.exists():
            raise UserError(f"{path}: area table not found")
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise UserError(f"{path}: cannot read as CSV ({str(err).splitlines()[0]})") from None
        if table.empty:
            raise UserError(f"{path}: area table is empty (empty region set)")
    elif cfg.maps:
        table = evaluate_area(AreaConfig(maps=cfg.maps, out=str(out / "area"), regions=cfg.regions,
                                         region_id=cfg.region_id, cell_size=cfg.cell_size, spec=cfg.spec,
                                         plots=False))["table"]
    else:
        raise UserError("give maps (with regions= or cell_size=) or table=area.csv")
    wide, dropped = trajectories(table)
    k: int | str = cfg.k if cfg.k == "auto" else _as_int(cfg.k)
    res = cluster_trajectories(wide, k, cfg.method, cfg.features, cfg.k_max, cfg.seed)
    per_region = wide.copy()
    per_region.columns = [f"fraction_{c}" for c in wide.columns]
    per_region.insert(0, "cluster", res["labels"])
    per_region.insert(1, "cluster_name", [res["names"][c] for c in res["labels"]])
    bbox = table.groupby("region")[["west", "south", "east", "north"]].first() if "west" in table else None
    if bbox is not None:
        per_region = per_region.join(bbox)
    per_region = per_region.reset_index()
    _write_csv(per_region, out / "clusters.csv")
    prof = []
    for c in sorted(res["names"]):
        sub = wide.to_numpy()[res["labels"] == c]
        for j, y in enumerate(wide.columns):
            prof.append({"cluster": c, "cluster_name": res["names"][c], "year": y, "regions": len(sub),
                         "mean_fraction": sub[:, j].mean(), "std_fraction": sub[:, j].std(),
                         "min_fraction": sub[:, j].min(), "max_fraction": sub[:, j].max()})
    profiles = pd.DataFrame(prof)
    _write_csv(profiles, out / "cluster_profiles.csv")
    files = [str(out / "clusters.csv"), str(out / "cluster_profiles.csv")]
    if res["silhouette"]:
        _write_csv(pd.DataFrame({"k": list(res["silhouette"]), "silhouette": list(res["silhouette"].values())}),
                   out / "silhouette.csv")
        files.append(str(out / "silhouette.csv"))
    if cfg.plots:
        from .plots import cluster_figure

        regions = load_regions(cfg.regions, cfg.region_id) if cfg.regions else None
        files.append(str(cluster_figure(per_region, wide, res, regions, out / "clusters.png", cfg.method)))
    return {"result": res, "table": per_region, "profiles": profiles, "dropped": dropped, "files": files}


def _as_int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"k={v!r}: give a number of clusters or 'auto'") from None
