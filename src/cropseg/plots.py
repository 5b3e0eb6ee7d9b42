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


#: Colours of the label panel: non-cropland, cropland, and nodata (ignored pixels) apart from both.
LABEL_COLOURS = ("#f2f0e6", "#1b7837", "#c51b7d")


def fraction(x: float) -> str:
    """A cropland fraction to 3 significant digits (0.000316, 0.0125, 0.5): rare cropland is not 0.00."""
    return f"{x:.3g}"


def patch_previews(path: str | Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray | None,
                   bands: Sequence[str], names: Sequence[str] | None = None, title: str = "",
                   threshold: float = 0.5) -> Path:
    """``preview_figure`` as a PNG."""
    return save_figure(preview_figure(images, labels, probs, bands, names, title, threshold), path)


def preview_figure(images: np.ndarray, labels: np.ndarray, probs: np.ndarray | None, bands: Sequence[str],
                   names: Sequence[str] | None = None, title: str = "", threshold: float = 0.5):
    """One row per patch: RGB, label and predicted probability, with the cropland fractions in the titles.

    Labels above 1 (``IGNORE``: nodata, padding) are drawn in their own colour in the label and on
    the prediction; the probability has a colourbar.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = len(images)
    cols = 3 if probs is not None else 2
    fig, axes = plt.subplots(n, cols, figsize=(3.4 * cols, 3 * n), squeeze=False, layout="constrained")
    label_cmap = ListedColormap(LABEL_COLOURS[:2]).with_extremes(bad=LABEL_COLOURS[2])
    prob_cmap = plt.get_cmap("viridis").with_extremes(bad=LABEL_COLOURS[2])
    im = None
    for i in range(n):
        nodata = labels[i][0] > 1
        lab = np.ma.masked_where(nodata, labels[i][0])
        axes[i, 0].imshow(rgb(images[i], bands))
        axes[i, 0].set_title(names[i] if names is not None else f"patch {i}", fontsize=8)
        axes[i, 1].imshow(lab, vmin=0, vmax=1, cmap=label_cmap, interpolation="nearest")
        frac = float(lab.mean()) if lab.count() else 0.0
        note = f", nodata {fraction(float(nodata.mean()))}" if nodata.any() else ""
        axes[i, 1].set_title(f"label: cropland {fraction(frac)}{note}", fontsize=8)
        if probs is not None:
            p = np.ma.masked_where(nodata, probs[i][0])
            im = axes[i, 2].imshow(p, vmin=0, vmax=1, cmap=prob_cmap, interpolation="nearest")
            pred = float((p >= threshold).mean()) if p.count() else 0.0
            axes[i, 2].set_title(f"prediction: cropland {fraction(pred)} (p >= {threshold:g})", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    legend = [Patch(color=c, label=t) for c, t in zip(LABEL_COLOURS, ("not cropland", "cropland", "nodata"))]
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if im is not None:
        fig.colorbar(im, ax=axes[:, 2], shrink=0.6, label="cropland probability")
    if title:
        fig.suptitle(title)
    return fig


#: Panels of training_curves.png: metrics of one scale together (accuracy near 1 would flatten IoU near 0).
CURVE_PANELS = (
    ("loss", ("loss",)),
    ("IoU, F1, kappa, precision, recall", ("iou", "f1", "kappa", "precision", "recall")),
    ("accuracy", ("accuracy",)),
)


def training_curves(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """``curves_figure`` as a PNG (None while the log has no epochs)."""
    fig = curves_figure(metrics_csv)
    return save_figure(fig, path) if fig is not None else None


def curves_figure(metrics_csv: str | Path):
    """Per epoch from Lightning's CSV log: loss, the overlap metrics (IoU, F1, kappa, precision,
    recall) and accuracy, each on its own panel; training dashed, validation solid, test (after
    fit, on the best checkpoint) as a star at its epoch."""
    from matplotlib.ticker import MaxNLocator

    try:
        df = pd.read_csv(metrics_csv)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if "epoch" not in df:
        return None
    per_epoch = df.groupby("epoch").mean(numeric_only=True)
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(5.5 * len(CURVE_PANELS), 4), layout="constrained")
    styles = {"train": dict(ls="--", marker="."), "val": dict(ls="-", marker="o"), "test": dict(ls="", marker="*", ms=12)}
    for ax, (title, metrics) in zip(axes, CURVE_PANELS):
        colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
        drawn = False
        for m in metrics:
            colour = next(colours)
            for stage, style in styles.items():
                col = f"{stage}/{m}_epoch" if f"{stage}/{m}_epoch" in per_epoch else f"{stage}/{m}"
                if col not in per_epoch:
                    continue
                s = per_epoch[col].dropna()
                if s.empty:
                    continue
                ax.plot(s.index, s.values, color=colour, label=f"{stage}/{m}", **style)
                drawn = True
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend(fontsize=7)
    return fig
