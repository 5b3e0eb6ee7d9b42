"""Accuracy statistics for binary cropland maps.

* ``binary_metrics``: overall accuracy, precision (user's accuracy), recall (producer's
  accuracy), F1, IoU and Cohen's kappa of the cropland class, from scikit-learn.
* ``bootstrap``: percentile confidence intervals by resampling points (vectorised on
  the 2x2 counts, checked against scikit-learn in the tests).
* ``stratified``: area-weighted accuracy and area estimates with standard errors for a
  stratified sample — Olofsson et al. (2014, RSE 148:42-57) when the strata are the map
  classes, Stehman (2014, IJRS 35:4923-4939) ratio estimators in general (they reduce to
  Olofsson's formulas when stratum = map class).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.stats import norm
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score, jaccard_score,
                             precision_score, recall_score)

METRICS = ("overall_accuracy", "precision", "recall", "f1", "iou", "kappa")
#: Names a map reviewer uses for two of them.
ALIASES = {"precision": "users_accuracy", "recall": "producers_accuracy"}


def binary_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics of the cropland class (1) from 0/1 arrays; confusion counts tn, fp, fn, tp."""
    truth = np.asarray(truth, int)
    pred = np.asarray(pred, int)
    out: dict[str, float] = {"n": int(truth.size)}
    if truth.size == 0:
        return out | {k: float("nan") for k in METRICS} | {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    tn, fp, fn, tp = confusion_matrix(truth, pred, labels=[0, 1]).ravel()
    out |= {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}
    z = {"zero_division": np.nan}
    out["overall_accuracy"] = float(accuracy_score(truth, pred))
    out["precision"] = float(precision_score(truth, pred, labels=[0, 1], **z))
    out["recall"] = float(recall_score(truth, pred, labels=[0, 1], **z))
    out["f1"] = float(f1_score(truth, pred, labels=[0, 1], **z))
    out["iou"] = float(jaccard_score(truth, pred, labels=[0, 1], zero_division=0)) if tp + fp + fn else float("nan")
    if len(np.unique(np.concatenate([truth, pred]))) < 2:
        out["kappa"] = float("nan")  # undefined when everything is one class
    else:
        out["kappa"] = float(cohen_kappa_score(truth, pred, labels=[0, 1]))
    return out


def metrics_from_counts(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """The same metrics from (arrays of) confusion counts; NaN where undefined."""
    tn, fp, fn, tp = (np.asarray(v, float) for v in (tn, fp, fn, tp))
    n = tn + fp + fn + tp
    with np.errstate(divide="ignore", invalid="ignore"):
        oa = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
        return {
            "overall_accuracy": oa,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "iou": tp / (tp + fp + fn),
            "kappa": np.where(pe < 1, (oa - pe) / (1 - pe), np.nan),
        }


def bootstrap(truth: np.ndarray, pred: np.ndarray, n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric (points resampled with replacement)."""
    truth = np.asarray(truth, int)
    pred = np.asarray(pred, int)
    n = truth.size
    if n == 0 or n_boot <= 0:
        return {k: (float("nan"), float("nan")) for k in METRICS}
    rng = np.random.default_rng(seed)
    cell = truth * 2 + pred  # 0 tn, 1 fp, 2 fn, 3 tp
    counts = np.zeros((n_boot, 4))
    for start in range(0, n_boot, 200):
        stop = min(n_boot, start + 200)
        idx = rng.integers(0, n, size=(stop - start, n))
        c = cell[idx]
        counts[start:stop] = np.stack([(c == k).sum(1) for k in range(4)], 1)
    values = metrics_from_counts(*counts.T)
    alpha = (1 - level) / 2
    out = {}
    for k, v in values.items():
        v = v[np.isfinite(v)]
        out[k] = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if v.size else (np.nan, np.nan)
    return out


# --------------------------------------------------------------------------- stratified estimation

def _ratio(y: np.ndarray, x: np.ndarray, h: np.ndarray, weights: Mapping, sizes: Mapping) -> tuple[float, float]:
    """Stehman (2014) combined ratio estimator R = sum W_h ybar_h / sum W_h xbar_h and its SE."""
    num = den = 0.0
    means = {}
    for s, w in weights.items():
        m = h == s
        if not m.any():
            continue
        means[s] = (y[m].mean(), x[m].mean())
        num += w * means[s][0]
        den += w * means[s][1]
    if den == 0:
        return float("nan"), float("nan")
    r = num / den
    var = 0.0
    for s, w in weights.items():
        m = h == s
        n_h = int(m.sum())
        if n_h < 2:
            continue
        z = y[m] - r * x[m]
        var += w**2 * z.var(ddof=1) / n_h
    return float(r), float(np.sqrt(var) / den)


def stratified(reference: Sequence, mapped: Sequence, strata: Sequence, stratum_areas: Mapping,
               classes: Sequence | None = None, level: float = 0.95) -> dict:
    """Area-weighted accuracy and area estimates from a stratified sample.

    ``stratum_areas`` maps each stratum to its (mapped) area, in any unit; estimated
    areas come back in that unit. Returns overall accuracy, per class user's and
    producer's accuracy and estimated area (with standard errors and ``level``
    confidence half-widths), the estimated error matrix in area proportions, and the
    mapped area of each class for comparison (when strata are the map classes).
    """
    reference, mapped, strata = (np.asarray(a) for a in (reference, mapped, strata))
    total = float(sum(stratum_areas.values()))
    if total <= 0:
        raise ValueError("stratum areas sum to zero")
    weights = {s: a / total for s, a in stratum_areas.items()}
    present = set(np.unique(strata).tolist())
    missing = [s for s in weights if s not in present and weights[s] > 0]
    if missing:
        raise ValueError(f"strata without sample points: {missing}")
    unknown = sorted(present - set(weights), key=str)
    if unknown:
        raise ValueError(f"sample points in strata without an area: {unknown}")
    if classes is None:
        classes = sorted(set(np.unique(reference).tolist()) | set(np.unique(mapped).tolist()))
    zq = float(norm.ppf(0.5 + level / 2))
    ones = np.ones(len(reference))
    oa, oa_se = _ratio((reference == mapped).astype(float), ones, strata, weights, stratum_areas)
    out: dict = {"overall_accuracy": oa, "overall_accuracy_se": oa_se, "overall_accuracy_ci": zq * oa_se,
                 "total_area": total, "level": level, "classes": {}}
    matrix = np.zeros((len(classes), len(classes)))
    for i, ci in enumerate(classes):
        for j, cj in enumerate(classes):
            matrix[i, j] = _ratio(((mapped == ci) & (reference == cj)).astype(float), ones, strata, weights,
                                  stratum_areas)[0]
    out["error_matrix"] = matrix.tolist()  # rows: map class, columns: reference class; area proportions
    for k in classes:
        ua, ua_se = _ratio(((mapped == k) & (reference == k)).astype(float), (mapped == k).astype(float),
                           strata, weights, stratum_areas)
        pa, pa_se = _ratio(((mapped == k) & (reference == k)).astype(float), (reference == k).astype(float),
                           strata, weights, stratum_areas)
        p, p_se = _ratio((reference == k).astype(float), ones, strata, weights, stratum_areas)
        out["classes"][k] = {
            "users_accuracy": ua, "users_accuracy_se": ua_se, "users_accuracy_ci": zq * ua_se,
            "producers_accuracy": pa, "producers_accuracy_se": pa_se, "producers_accuracy_ci": zq * pa_se,
            "area_proportion": p, "area_proportion_se": p_se,
            "area": p * total, "area_se": p_se * total, "area_ci": zq * p_se * total,
            "mapped_area": float(stratum_areas.get(k, np.nan)),
        }
    return out
