"""Pictures of the evaluation: confusion matrices, area time series, change, agreement and cluster maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Patch, PathPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from cropseg.maps import NODATA  # noqa: E402
from cropseg.plots import save_figure  # noqa: E402

CLASS_NAMES = ("non-cropland", "cropland")


# --------------------------------------------------------------------------- helpers

def _polygon_path(geom: dict) -> MplPath | None:
    polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"] if geom["type"] == "MultiPolygon" else []
    verts, codes = [], []
    for poly in polys:
        for ring in poly:
            ring = [p[:2] for p in ring]
            if len(ring) < 3:
                continue
            verts += ring + [ring[0]]
            codes += [MplPath.MOVETO] + [MplPath.LINETO] * (len(ring) - 1) + [MplPath.CLOSEPOLY]
    return MplPath(np.asarray(verts, float), codes) if verts else None


def _regions_in(regions, crs) -> list[tuple[str, dict]]:
    from rasterio.warp import transform_geom

    out = []
    for rid, g in zip(regions.ids, regions.geometries):
        out.append((rid, g if (crs is None or regions.crs == crs) else transform_geom(regions.crs, crs, g)))
    return out


def _draw_zones(ax, zones: Sequence[tuple[str, object]], colors: dict, edge="k", lw=0.8, labels: dict | None = None):
    """zones: (id, geometry dict or (w, s, e, n) box); colors: id -> face colour."""
    for zid, shape in zones:
        face = colors.get(zid, "none")
        if isinstance(shape, dict):
            path = _polygon_path(shape)
            if path is None:
                continue
            ax.add_patch(PathPatch(path, facecolor=face, edgecolor=edge, lw=lw))
            ext = path.get_extents()
            cx, cy = (ext.x0 + ext.x1) / 2, (ext.y0 + ext.y1) / 2
        else:
            w, s, e, n = shape
            ax.add_patch(Rectangle((w, s), e - w, n - s, facecolor=face, edgecolor=edge, lw=lw))
            cx, cy = (w + e) / 2, (s + n) / 2
        if labels and zid in labels:
            ax.text(cx, cy, labels[zid], ha="center", va="center", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75))
    ax.autoscale_view()


def _decimated(path: Path, max_side: int = 800):
    with rasterio.open(path) as ds:
        f = max(1, math.ceil(max(ds.width, ds.height) / max_side))
        a = ds.read(1, out_shape=(max(1, ds.height // f), max(1, ds.width // f)),
                    resampling=rasterio.enums.Resampling.nearest)
        b = ds.bounds
        return a, (b.left, b.right, b.bottom, b.top), ds.crs


def _fit_extents(ax, extents) -> None:
    if extents:
        e = np.asarray(extents, float)
        ax.set_xlim(e[:, 0].min(), e[:, 1].max())
        ax.set_ylim(e[:, 2].min(), e[:, 3].max())


def _axis_labels(ax, crs):
    if crs is None or crs.is_geographic:
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
    else:
        ax.set_xlabel(f"x ({crs.to_string()})")
        ax.set_ylabel("y")


# --------------------------------------------------------------------------- points

def confusion_matrices(rows: Sequence[dict], path: str | Path, level: float = 0.95) -> Path:
    """One 2x2 matrix per row (overall first, then years): counts, row shares, key metrics with CIs."""
    n = len(rows)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 5.3 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows):
        cm = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]], float)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=12,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks([0, 1], [f"map\n{c}" for c in CLASS_NAMES])
        ax.set_yticks([0, 1], [f"truth\n{c}" for c in CLASS_NAMES], rotation=90, va="center")
        title = "all points" if r["scope"] == "overall" else f"{r['scope']} {r['group']}"

        def fmt(k):
            v, lo, hi = r.get(k), r.get(f"{k}_low"), r.get(f"{k}_high")
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "–"
            return f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None and not math.isnan(lo) else f"{v:.2f}"

        ax.set_title(f"{title}  (n={r['tp'] + r['tn'] + r['fp'] + r['fn']}, dropped "
                     f"{r['points'] - r['n_used']})", fontsize=10)
        ax.set_xlabel(f"OA {fmt('overall_accuracy')}   κ {fmt('kappa')}\nF1 {fmt('f1')}   IoU {fmt('iou')}\n"
                      f"UA {fmt('precision')}   PA {fmt('recall')}", fontsize=8.5)
    fig.suptitle(f"Confusion matrices at validation points (rows: truth; {level:.0%} bootstrap intervals)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.0)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- area

def area_timeseries(table: pd.DataFrame, path: str | Path, top: int = 10) -> Path:
    """Cropland area (km²) and fraction per region over the years; the total in black."""
    t = table.dropna(subset=["year"]).copy()
    wide = t.pivot_table(index="year", columns="region", values="cropland_km2", aggfunc="sum").sort_index()
    frac = t.pivot_table(index="year", columns="region", values="cropland_fraction", aggfunc="mean").sort_index()
    regions = list(wide.sum().sort_values(ascending=False).index[:top])
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(17, 4.8))
    cmap = plt.get_cmap("tab10")
    total = t.groupby("year")[["cropland_km2", "mapped_km2"]].sum()
    ax0.plot(total.index, total["cropland_km2"], color="k", lw=2.5, marker="o")
    ax0.set(xlabel="year", ylabel="cropland area (km²)",
            title=f"Total cropland, {t['region'].nunique()} regions")
    for i, r in enumerate(regions):
        ax1.plot(wide.index, wide[r], marker="o", color=cmap(i % 10), label=str(r))
        ax2.plot(frac.index, frac[r] * 100, marker="o", color=cmap(i % 10), label=str(r))
    ax2.plot(total.index, total["cropland_km2"] / total["mapped_km2"] * 100, color="k", lw=2.5, ls="--",
             label="all regions")
    ax1.set(xlabel="year", ylabel="cropland area (km²)", title="Cropland area per region")
    ax2.set(xlabel="year", ylabel="cropland (% of mapped area)", title="Cropland fraction per region")
    for ax in (ax0, ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    more = f" (largest {top} of {t['region'].nunique()})" if t["region"].nunique() > top else ""
    ax2.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title=f"region{more}")
    fig.tight_layout()
    return save_figure(fig, path)


def _draw_coded_rasters(ax, tifs: Sequence[Path], cmap) -> tuple[object, list]:
    """Draw rasters of codes 0..3 (``NODATA`` masked) side by side; returns their CRS and extents."""
    crs, extents = None, []
    for tif in tifs:
        a, ext, crs = _decimated(tif)
        extents.append(ext)
        ax.imshow(np.ma.masked_equal(a, NODATA), cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], 4),
                  extent=ext, interpolation="nearest")
    return crs, extents


def area_change_map(table: pd.DataFrame, change_tifs: Sequence[Path], regions, path: str | Path,
                    first: int, last: int) -> Path:
    """Left: pixel change first→last year (gain/loss); right: change in cropland fraction per region."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    cmap = ListedColormap(["#e6e6e6", "#78aa5a", "#1e5ac8", "#d23c28"])
    crs, extents = _draw_coded_rasters(ax1, change_tifs, cmap)
    if regions is not None:
        _draw_zones(ax1, _regions_in(regions, crs), {}, edge="k", lw=1)
    _fit_extents(ax1, extents)
    ax1.legend(handles=[Patch(color=c, label=l) for c, l in zip(cmap.colors, ["stable non-cropland", "stable cropland",
                                                                              f"gain (new by {last})", f"loss (gone by {last})"])],
               loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    ax1.set_title(f"Pixel change {first} → {last}" if change_tifs else "no tile mapped in both years")
    _axis_labels(ax1, crs)
    ax1.set_aspect("equal")

    a = table[table["year"] == first].set_index("region")["cropland_fraction"]
    b = table[table["year"] == last].set_index("region")["cropland_fraction"]
    delta = ((b - a) * 100).dropna()
    lim = max(1.0, float(np.nanmax(np.abs(delta.to_numpy()))) if len(delta) else 1.0)
    norm = TwoSlopeNorm(vmin=-lim, vcenter=0, vmax=lim)
    cm = plt.get_cmap("RdBu")
    colors = {r: cm(norm(v)) for r, v in delta.items()}
    labels = {r: f"{r}\n{v:+.1f}" for r, v in delta.items()} if len(delta) <= 40 else None
    if regions is not None:
        zones = _regions_in(regions, None)
        _axis_labels(ax2, regions.crs)
    else:
        bb = table.groupby("region")[["west", "south", "east", "north"]].first()
        zones = [(r, tuple(bb.loc[r])) for r in bb.index if np.isfinite(bb.loc[r]).all()]
        _axis_labels(ax2, None)
    _draw_zones(ax2, zones, colors, labels=labels)
    ax2.set_aspect("equal")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cm)
    fig.colorbar(sm, ax=ax2, shrink=0.8, label=f"change in cropland fraction {first}→{last} (percentage points)")
    ax2.set_title(f"Change in cropland fraction per region, {first} → {last}")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- agreement

def agreement_figure(tifs: Sequence[Path], total: dict, path: str | Path, reference_name: str) -> Path:
    from .agreement import CODES, COLORS

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1.6, 1]})
    cmap = ListedColormap([np.array(COLORS[k][:3]) / 255 for k in range(4)])
    crs, extents = _draw_coded_rasters(ax1, tifs, cmap)
    _fit_extents(ax1, extents)
    ax1.set_aspect("equal")
    _axis_labels(ax1, crs)
    ax1.set_title(f"Agreement with {reference_name}")
    ax1.legend(handles=[Patch(color=cmap.colors[k], label=CODES[k]) for k in range(4)], loc="upper center",
               bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    cm = np.array([[total["both_noncrop_km2"], total["map_only_km2"]],
                   [total["reference_only_km2"], total["both_crop_km2"]]])
    share = cm / max(cm.sum(), 1e-12)
    ax2.imshow(share, cmap="Blues", vmin=0, vmax=max(share.max(), 1e-9))
    for i in range(2):
        for j in range(2):
            ax2.text(j, i, f"{cm[i, j]:,.1f} km²\n{share[i, j]:.1%}", ha="center", va="center", fontsize=11,
                     color="white" if share[i, j] > 0.6 * share.max() else "black")
    ax2.set_xticks([0, 1], [f"map\n{c}" for c in CLASS_NAMES])
    ax2.set_yticks([0, 1], [f"reference\n{c}" for c in CLASS_NAMES], rotation=90, va="center")
    ax2.set_title("Confusion (area) over all maps")
    ax2.set_xlabel(f"agreement {total['agreement']:.3f}   κ {total['kappa']:.3f}   F1 {total['f1']:.3f}\n"
                   f"map cropland {total['map_cropland_km2']:,.1f} km²,  reference {total['reference_cropland_km2']:,.1f} km²",
                   fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- clusters

def cluster_figure(per_region: pd.DataFrame, wide: pd.DataFrame, res: dict, regions, path: str | Path,
                   method: str) -> Path:
    k = res["k"]
    sil = res["silhouette"]
    ncols = 3 if len(sil) > 1 else 2
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 5.6),
                             gridspec_kw={"width_ratios": [1.2, 1.2, 0.8][:ncols]})
    cmap = plt.get_cmap("tab10")
    color = {c: cmap((c - 1) % 10) for c in res["names"]}
    lab = dict(zip(per_region["region"].astype(str), per_region["cluster"]))
    ax = axes[0]
    if regions is not None:
        zones = [(r, g) for r, g in _regions_in(regions, None) if r in lab]
        _axis_labels(ax, regions.crs)
    else:
        zones = [(str(r.region), (r.west, r.south, r.east, r.north)) for r in per_region.itertuples()
                 if np.isfinite([r.west, r.south, r.east, r.north]).all()] if "west" in per_region else []
        _axis_labels(ax, None)
    labels = {z: str(lab[z]) for z, _ in zones} if len(zones) <= 60 else None
    _draw_zones(ax, zones, {z: color[lab[z]] for z, _ in zones}, edge="k", lw=0.6, labels=labels)
    ax.set_aspect("equal")
    ax.set_title(f"Clusters of cropland trajectories ({method}, k={k})")
    if not zones:
        ax.text(0.5, 0.5, "no geometry for the regions\n(pass regions=FILE)", ha="center", transform=ax.transAxes)
    ax.legend(handles=[Patch(color=color[c], label=f"{c}: {n}") for c, n in res["names"].items()], fontsize=8,
              loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    ax = axes[1]
    years = np.asarray(wide.columns, float)
    x = wide.to_numpy(float) * 100
    for c, name in res["names"].items():
        sub = x[res["labels"] == c]
        for row in sub:
            ax.plot(years, row, color=color[c], alpha=0.25, lw=0.8)
        ax.plot(years, sub.mean(0), color=color[c], lw=3, marker="o", label=f"{c}: {name} (n={len(sub)})")
    ax.set(xlabel="year", ylabel="cropland (% of mapped area)", title="Temporal pattern of each cluster (mean, members thin)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    if ncols == 3:
        ax = axes[2]
        ks = sorted(sil)
        ax.plot(ks, [sil[kk] for kk in ks], marker="o")
        ax.axvline(k, color="r", ls="--", label=f"chosen k={k}")
        ax.set(xlabel="k", ylabel="silhouette", title="Choosing k")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
