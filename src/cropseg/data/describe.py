"""Describe a folder of H5 patches: the per-patch table, dataset band statistics, plots.

The per-patch cropland fraction, class and nodata fraction come from the dataset index
(``cropseg.data.index.build_index``, cached); this module adds per-band statistics and
pictures. Dataset percentiles come from a deterministic sample of valid pixels (exact
while the dataset holds fewer than ``max_pixels`` valid pixels per band).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cropseg.errors import UserError
from cropseg.io import write_text_atomic
from cropseg.parallel import parallel_map

from .index import NUM_CLASSES, build_index
from .patches import list_patches, patch_path, read_list, read_patch

STAT_KEYS = ("min", "max", "mean", "std", "p02", "p98")


def patch_root(root: str | Path) -> Path:
    """The folder holding the ``.h5`` files: ``root`` itself or ``root/data`` (the demo layout)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"root={root}: folder not found")
    if not list_patches(root) and (root / "data").is_dir() and list_patches(root / "data"):
        return root / "data"
    if not list_patches(root):
        raise UserError(f"root={root}: no .h5 patches there (nor in {root / 'data'})")
    return root


def patch_names(root: Path, list_file: str | Path | None = None) -> list[str]:
    return read_list(list_file) if list_file else list_patches(root)


def split_name(name: str) -> tuple[str, str]:
    """``(GridID, PointID)`` from a patch name ``{GridID}-{PointID}``."""
    grid, sep, point = name.partition("-")
    return (grid, point) if sep else ("", name)


def _patch_stats(args: tuple[str, int, int]) -> tuple[dict, np.ndarray, list[str]]:
    path, per_patch, seed = args
    p = read_patch(path)
    x = p.data.reshape(-1, p.data.shape[2]).astype(np.float64)
    valid = np.isfinite(x).all(axis=1)
    v = x[valid]
    row: dict = {}
    for i, b in enumerate(p.bands):
        col = v[:, i]
        if col.size:
            row.update({f"{b}_mean": col.mean(), f"{b}_std": col.std(), f"{b}_min": col.min(), f"{b}_max": col.max()})
        else:
            row.update({f"{b}_mean": np.nan, f"{b}_std": np.nan, f"{b}_min": np.nan, f"{b}_max": np.nan})
    # Sums for exact dataset mean/std; a deterministic pixel sample for percentiles.
    row["_n"] = int(v.shape[0])
    row["_sum"] = v.sum(axis=0)
    row["_sumsq"] = (v * v).sum(axis=0)
    if v.shape[0] > per_patch:
        rng = np.random.default_rng([seed, zlib.crc32(Path(path).stem.encode())])
        v = v[np.sort(rng.choice(v.shape[0], per_patch, replace=False))]
    return row, v.astype(np.float32), list(p.bands)


def describe(root: str | Path, names: Sequence[str] | None = None, *, workers: int = 0, progress: bool = True,
             max_pixels: int = 2_000_000, seed: int = 0) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """The per-patch table, the band statistics and the pixel sample (N, C) they came from."""
    from tqdm.auto import tqdm

    root = Path(root)
    names = list(names) if names is not None else list_patches(root)
    if not names:
        raise UserError(f"{root}: no patches to describe")
    index = build_index(root, names, workers=workers, progress=progress)
    per_patch = max(64, math.ceil(max_pixels / len(names)))
    jobs = [(str(patch_path(root, n)), per_patch, seed) for n in names]
    bar = dict(total=len(jobs), desc="band statistics", unit="patch", disable=not progress)
    results = list(tqdm(parallel_map(_patch_stats, jobs, workers if len(jobs) > 8 else 1), **bar))
    bands = results[0][2]
    for (_, _, b), n in zip(results, names):
        if b != bands:
            raise UserError(f"{patch_path(root, n)}: bands {b} differ from {bands} of {names[0]}")
    rows = []
    n_tot, s, ss, samples = 0, np.zeros(len(bands)), np.zeros(len(bands)), []
    for name, rec, (row, sample, _) in zip(names, index.to_dict("records"), results):
        grid, point = split_name(name)
        n_tot += row.pop("_n")
        s += row.pop("_sum")
        ss += row.pop("_sumsq")
        samples.append(sample)
        rows.append({"name": name, "GridID": grid, "PointID": point, "height": rec["height"], "width": rec["width"],
                     **row, "nodata_frac": rec["nodata_frac"], "rp": rec["rp"], "c": int(rec["c"])})
    table = pd.DataFrame(rows)
    sample = np.concatenate(samples) if samples else np.zeros((0, len(bands)), np.float32)
    stats: dict = {}
    for i, b in enumerate(bands):
        if n_tot == 0:
            raise UserError(f"{root}: no valid (finite) pixels in any patch")
        mean = s[i] / n_tot
        std = math.sqrt(max(ss[i] / n_tot - mean * mean, 0.0))
        p02, p98 = np.percentile(sample[:, i], [2, 98]) if len(sample) else (np.nan, np.nan)
        stats[b] = {"min": float(np.nanmin(table[f"{b}_min"])), "max": float(np.nanmax(table[f"{b}_max"])),
                    "mean": float(mean), "std": float(std), "p02": float(p02), "p98": float(p98)}
    meta = {"bands": stats, "band_order": bands, "num_patches": len(names), "num_valid_pixels": int(n_tot),
            "percentile_sample": int(len(sample)), "root": str(root.resolve())}
    return table, meta, sample


def write_describe(root: str | Path, out: str | Path, names: Sequence[str] | None = None, **kw) -> dict:
    """Write ``out/describe.csv`` and ``out/band_stats.json``; returns the statistics."""
    from cropseg.io import atomic_path

    out = Path(out)
    table, meta, _ = describe(root, names, **kw)
    with atomic_path(out / "describe.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_text_atomic(out / "band_stats.json", json.dumps(meta, indent=2) + "\n")
    return {"table": table, "stats": meta, "csv": out / "describe.csv", "json": out / "band_stats.json"}


# --------------------------------------------------------------------------- plots


def plot_all(root: str | Path, out: str | Path, names: Sequence[str] | None = None, *, workers: int = 0,
             progress: bool = True, num_previews: int = 12, max_pixels: int = 500_000, seed: int = 0) -> list[Path]:
    """PNGs to look at before training; returns their paths."""
    import matplotlib.pyplot as plt

    from cropseg.plots import rgb, save_figure

    root, out = Path(root), Path(out)
    table, meta, sample = describe(root, names, workers=workers, progress=progress, max_pixels=max_pixels, seed=seed)
    bands = meta["band_order"]
    paths = []

    # 1. Band distributions (valid pixels).
    cols = min(4, len(bands))
    rows = math.ceil(len(bands) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for i, b in enumerate(bands):
        ax = axes.flat[i]
        st = meta["bands"][b]
        ax.hist(sample[:, i], bins=80, color="steelblue")
        for k in ("p02", "p98"):
            ax.axvline(st[k], color="darkred", lw=0.8, ls="--")
        ax.set_title(f"{b}  mean {st['mean']:.3g}  std {st['std']:.3g}", fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(bands):]:
        ax.axis("off")
    fig.suptitle(f"band distributions ({len(sample):,} sampled valid pixels; dashed: 2nd/98th percentiles)")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "band_distributions.png"))

    # 2. Cropland fraction and class c.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    a1.hist(table["rp"], bins=np.linspace(0, 1, 41), color="seagreen")
    a1.set(xlabel="cropland fraction rp", ylabel="patches", title=f"cropland fraction ({len(table)} patches)")
    counts = np.bincount(table["c"].astype(int), minlength=NUM_CLASSES)
    a2.bar(range(NUM_CLASSES), counts, color="seagreen")
    for k, v in enumerate(counts):
        a2.text(k, v, str(v), ha="center", va="bottom", fontsize=8)
    a2.set(xlabel="class c = floor((rp + 0.05) * 10)", ylabel="patches", title="oversampling class",
           xticks=range(NUM_CLASSES))
    paths.append(save_figure(fig, out / "cropland_fraction.png"))

    # 3. Band correlation heatmap over the sampled valid pixels.
    corr = np.corrcoef(sample.T.astype(np.float64)) if len(sample) > 1 else np.eye(len(bands))
    fig, ax = plt.subplots(figsize=(1.0 * len(bands) + 2, 1.0 * len(bands) + 1))
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(bands)), bands, rotation=45)
    ax.set_yticks(range(len(bands)), bands)
    for i in range(len(bands)):
        for j in range(len(bands)):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(corr[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r (pixels)")
    ax.set_title("band correlation")
    paths.append(save_figure(fig, out / "band_correlation.png"))

    # 4. Sample previews: spread over classes, highest class first within the spread.
    order = table.sort_values(["c", "name"]).reset_index(drop=True)
    pick = np.unique(np.linspace(0, len(order) - 1, min(num_previews, len(order))).round().astype(int))
    chosen = order.iloc[pick]
    ncol = min(4, len(chosen))
    nrow = math.ceil(len(chosen) / ncol)
    fig, axes = plt.subplots(nrow, 2 * ncol, figsize=(2.6 * 2 * ncol, 2.8 * nrow), squeeze=False)
    for k, (_, r) in enumerate(chosen.iterrows()):
        p = read_patch(patch_path(root, r["name"]))
        ax_img, ax_lab = axes[k // ncol, 2 * (k % ncol)], axes[k // ncol, 2 * (k % ncol) + 1]
        ax_img.imshow(rgb(p.data.transpose(2, 0, 1), p.bands))
        ax_img.set_title(f"{r['name']} (c={r['c']})", fontsize=8)
        ax_lab.imshow(np.ma.masked_invalid(p.label[..., 0]), vmin=0, vmax=1, cmap="Greens")
        ax_lab.set_title(f"label rp={r['rp']:.3f}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("sample patches: RGB (2-98 % stretch) and cropland label")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "sample_previews.png"))

    # 5. Patches per grid cell.
    per_grid = table.groupby("GridID").size().sort_values(ascending=False)
    shown = per_grid.iloc[:60]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(shown) + 2), 3.8))
    ax.bar(range(len(shown)), shown.values, color="slategray")
    ax.set_xticks(range(len(shown)), shown.index, rotation=90, fontsize=7)
    more = f", {len(per_grid) - len(shown)} more not shown" if len(per_grid) > len(shown) else ""
    ax.set(xlabel="GridID", ylabel="patches",
           title=f"patches per grid cell ({len(per_grid)} cells, median {int(per_grid.median())}{more})")
    paths.append(save_figure(fig, out / "patches_per_grid.png"))
    return paths
