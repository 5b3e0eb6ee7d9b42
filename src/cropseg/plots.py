"""Pictures people look at: patch previews and training curves (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cropseg.io import atomic_path  # noqa: E402


def rgb(image: np.ndarray, bands: Sequence[str], stretch: tuple[float, float] = (2, 98)) -> np.ndarray:
    """An (H, W, 3) display image from a (C, H, W) patch: R, G, B bands with a percentile stretch."""
    idx = [list(bands).index(b) for b in ("R", "G", "B")] if {"R", "G", "B"} <= set(bands) else [0, 0, 0]
    x = np.nan_to_num(np.asarray(image)[idx].transpose(1, 2, 0).astype(np.float32))
    lo, hi = np.percentile(x, stretch)
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def patch_previews(path: str | Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray | None,
                   bands: Sequence[str], names: Sequence[str] | None = None, title: str = "") -> Path:
    """One row per patch: RGB, label, and predicted probability (ignored pixels grey)."""
    n = len(images)
    cols = 3 if probs is not None else 2
    fig, axes = plt.subplots(n, cols, figsize=(3 * cols, 3 * n), squeeze=False)
    for i in range(n):
        lab = np.ma.masked_where(labels[i][0] > 1, labels[i][0])
        axes[i, 0].imshow(rgb(images[i], bands))
        axes[i, 0].set_title(names[i] if names is not None else f"patch {i}", fontsize=8)
        axes[i, 1].imshow(lab, vmin=0, vmax=1, cmap="Greens")
        axes[i, 1].set_title(f"label (cropland {float(lab.mean()) if lab.count() else 0:.2f})", fontsize=8)
        if probs is not None:
            axes[i, 2].imshow(probs[i][0], vmin=0, vmax=1, cmap="Greens")
            axes[i, 2].set_title("prediction (probability)", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def training_curves(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """Loss and validation metrics per epoch from Lightning's CSV log."""
    try:
        df = pd.read_csv(metrics_csv)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if "epoch" not in df:
        return None
    per_epoch = df.groupby("epoch").mean(numeric_only=True)
    loss_cols = [c for c in ("train/loss_epoch", "val/loss") if c in per_epoch]
    metric_cols = [c for c in per_epoch if c.startswith("val/") and c != "val/loss" and not c.startswith("val/loss_")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for c in loss_cols:
        s = per_epoch[c].dropna()
        ax1.plot(s.index, s.values, marker="o", label=c)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    for c in metric_cols:
        s = per_epoch[c].dropna()
        ax2.plot(s.index, s.values, marker="o", label=c)
    ax2.set(xlabel="epoch", ylim=(0, 1), title="validation metrics")
    ax2.legend(fontsize=7)
    return save_figure(fig, path)
