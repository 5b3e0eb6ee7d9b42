"""Probability and threshold calibration of a trained model on held-out pixels.

* **Temperature scaling**: one scalar ``T`` so that ``sigmoid(logit / T)`` is a calibrated
  probability (fit by minimizing the binary cross-entropy on validation pixels).
* **Expected calibration error** (ECE, torchmetrics ``BinaryCalibrationError``) and the
  reliability curve (mean predicted probability vs observed cropland frequency per bin).
* **Threshold search**: the probability threshold that maximizes F1 or IoU, from exact
  per-bin counts of all valid validation pixels (no subsampling).

Temperature is monotone, so the best threshold in logit space does not change with ``T``;
the threshold stored in the checkpoint is expressed on the *calibrated* probability,
which is what prediction thresholds (``predict_proba`` divides logits by ``T``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torchmetrics.classification import BinaryCalibrationError

from cropseg.data.transforms import IGNORE

THRESHOLD_BINS = 1000


@dataclass
class Collected:
    """Validation pixels: a subsample of logits/targets (for T and ECE) and exact logit histograms."""

    logits: torch.Tensor                       # (n,) float32 subsample of valid pixels
    targets: torch.Tensor                      # (n,) float32 in {0, 1} (soft labels rounded)
    pixels: int = 0                            # all valid pixels seen
    logit_edges: np.ndarray = field(default_factory=lambda: np.linspace(-20, 20, 8001))
    pos_hist: np.ndarray | None = None         # counts of cropland pixels per logit bin
    neg_hist: np.ndarray | None = None         # counts of other pixels per logit bin


@torch.no_grad()
def collect(model: torch.nn.Module, batches: Iterable[dict], max_pixels: int = 2_000_000,
            total_pixels: int | None = None, device: str | torch.device = "cpu", seed: int = 0) -> Collected:
    """Run ``model`` (raw logits, no temperature) over ``batches`` of ``{"image", "mask"}``."""
    g = torch.Generator().manual_seed(seed)
    rate = 1.0 if not total_pixels else min(1.0, max_pixels / max(1, total_pixels))
    edges = np.linspace(-20, 20, 8001)
    pos = np.zeros(len(edges) + 1, np.int64)
    neg = np.zeros(len(edges) + 1, np.int64)
    keep_l, keep_t, seen = [], [], 0
    model.eval()
    for batch in batches:
        logits = model(batch["image"].to(device)).float().cpu().flatten()
        mask = batch["mask"].float().flatten()
        valid = mask != IGNORE
        lg, tg = logits[valid], (mask[valid] >= 0.5).float()
        seen += int(lg.numel())
        b = np.searchsorted(edges, lg.numpy())
        pos += np.bincount(b[tg.numpy() > 0], minlength=len(pos))
        neg += np.bincount(b[tg.numpy() == 0], minlength=len(neg))
        if rate < 1.0:
            pick = torch.rand(lg.numel(), generator=g) < rate
            lg, tg = lg[pick], tg[pick]
        keep_l.append(lg)
        keep_t.append(tg)
    if not seen:
        return Collected(torch.zeros(0), torch.zeros(0))
    return Collected(torch.cat(keep_l), torch.cat(keep_t), seen, edges, pos, neg)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimizing the BCE of ``sigmoid(logits / T)`` (LBFGS on log T)."""
    if logits.numel() == 0:
        return 1.0
    logits, targets = logits.double(), targets.double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, 0.05, 20.0)) if np.isfinite(t) else 1.0


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    if logits.numel() == 0:
        return float("nan")
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits.double() / temperature, targets.double()))


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (L1, equal-width bins) of probabilities against {0, 1} targets (torchmetrics)."""
    if probs.numel() == 0:
        return float("nan")
    metric = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    return float(metric(probs.float().clamp(0, 1), targets.long()))


def reliability_curve(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per probability bin: mean predicted probability, observed cropland frequency, pixel count."""
    p, t = probs.double().numpy(), targets.double().numpy()
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(b, weights=p, minlength=n_bins) / count
        freq = np.bincount(b, weights=t, minlength=n_bins) / count
    return {"edges": edges, "confidence": conf, "frequency": freq, "count": count}


def threshold_scores(c: Collected, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """F1 and IoU for every candidate threshold, on the calibrated probability scale.

    Candidates are the logit histogram's bin edges: predicting cropland for logits above
    edge ``k`` counts exactly the pixels in bins ``k+1..``.
    """
    assert c.pos_hist is not None and c.neg_hist is not None
    tp = np.cumsum(c.pos_hist[::-1])[::-1][1:]      # pixels with logit > edges[k] (bins k+1..)
    fp = np.cumsum(c.neg_hist[::-1])[::-1][1:]
    fn = c.pos_hist.sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        iou = np.where(tp > 0, tp / (tp + fp + fn), 0.0)
    thresholds = 1.0 / (1.0 + np.exp(-c.logit_edges / temperature))
    return {"threshold": thresholds, "f1": f1, "iou": iou}


def best_threshold(c: Collected, metric: str = "f1", temperature: float = 1.0) -> tuple[float, float]:
    """(threshold, score) maximizing ``metric`` ("f1" or "iou") on the calibrated probability."""
    s = threshold_scores(c, temperature)
    scores = s[metric]
    i = int(np.argmax(scores))
    # Neighbouring edges tie where bins are empty: take the middle of the run of ties.
    j = i
    while j + 1 < len(scores) and scores[j + 1] == scores[i]:
        j += 1
    mid = (i + j) // 2
    return float(s["threshold"][mid]), float(scores[mid])


def score_at(c: Collected, threshold: float, metric: str = "f1", temperature: float = 1.0) -> float:
    """``metric`` when thresholding the calibrated probability at ``threshold``."""
    s = threshold_scores(c, temperature)
    i = int(np.clip(np.searchsorted(s["threshold"], threshold), 0, len(s["threshold"]) - 1))
    return float(s[metric][i])
