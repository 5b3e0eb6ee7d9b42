"""K-fold train/validation lists and a held-out test list: shuffled, stratified by class c,
optionally grouped by grid cell.

Neighbouring patches of one grid cell are alike; with some in training and some in
validation the validation score is inflated. ``group=grid`` keeps every grid cell in one
fold (spatial cross-validation), and the test list is made of whole grid cells too. The
validation folds choose the checkpoint; the test list, never seen in training or in that
choice, gives the score to report. Oversampled training lists repeat patches of rare
classes, as the original workflow's materialized lists did (the training sampler does the
same on the fly without them).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cropseg.errors import UserError

from .patches import write_list


def coarsen_classes(classes: Sequence[int], k: int) -> np.ndarray:
    """Merge classes with fewer than ``k`` patches into a neighbouring class (by c) so that each stratum
    can be spread over ``k`` folds; classes already large enough are kept as they are."""
    y = np.asarray(classes, dtype=np.int64).copy()
    while True:
        values, counts = np.unique(y, return_counts=True)
        if len(values) < 2 or counts.min() >= k:
            return y
        i = int(np.argmin(counts))
        if i == 0:
            j = 1
        elif i == len(values) - 1:
            j = i - 1
        else:
            j = i - 1 if counts[i - 1] <= counts[i + 1] else i + 1
        y[y == values[i]] = values[j]


def assign_folds(names: Sequence[str], classes: Sequence[int], k: int = 5, groups: Sequence[str] | None = None,
                 seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of every patch: stratified by class, shuffled, grouped when ``groups`` is given."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n = len(names)
    if k < 2:
        raise UserError(f"k={k}: need at least 2 folds")
    if n < k:
        raise UserError(f"k={k}: only {n} patches")
    y = coarsen_classes(classes, k)
    folds = np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        if groups is not None:
            g = np.asarray(groups)
            if len(set(g.tolist())) < k:
                raise UserError(f"k={k}: only {len(set(g.tolist()))} grid cells; use fewer folds or group=none")
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = splitter.split(np.zeros(n), y, g)
        else:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = splitter.split(np.zeros(n), y)
        for fold, (_, val) in enumerate(parts):
            folds[val] = fold
    return folds


def oversample(names: Sequence[str], classes: Sequence[int], strength: float = 1.0, seed: int = 0) -> list[str]:
    """A shuffled list in which class ``c`` (n_c patches) appears ``ceil(n_max * (n_c / n_max) ** (1 - strength))`` times.

    strength 1 brings every class up to the largest (as random oversampling / the original
    SMOTE on patch indices did), 0 leaves the list as it is. Every patch appears at least once;
    copies within a class are spread evenly (counts differ by at most one).
    """
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"oversample={strength}: must be in [0, 1]")
    rng = np.random.default_rng(seed)
    names = list(names)
    y = np.asarray(classes, dtype=np.int64)
    if not names:
        return []
    counts = pd.Series(y).value_counts()
    n_max = int(counts.max())
    out: list[str] = []
    for c, n_c in counts.items():
        members = [names[i] for i in np.flatnonzero(y == c)]
        target = max(n_c, math.ceil(n_max * (n_c / n_max) ** (1.0 - strength) - 1e-9))
        reps, extra = divmod(target, n_c)
        out += members * reps
        out += [members[i] for i in rng.choice(n_c, extra, replace=False)]
    rng.shuffle(out)
    return out


def hold_out(names: Sequence[str], classes: Sequence[int], fraction: float, groups: Sequence[str] | None = None,
             seed: int = 0) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the patches for a test list: stratified by class, whole
    groups (grid cells) when ``groups`` is given — one fold of ``round(1 / fraction)`` as :func:`assign_folds` makes."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"test={fraction}: must be in (0, 1) (0 writes no test list)")
    k = max(2, round(1.0 / fraction))
    if groups is not None and len(set(groups)) < k:
        raise UserError(f"test={fraction}: one grid cell in {k} is held out, but there are only {len(set(groups))} "
                        f"grid cells; give a larger fraction (test={1 / len(set(groups)):.2g} or more) or group=none")
    try:
        folds = assign_folds(names, classes, k, groups, seed)
    except UserError as err:
        raise UserError(f"test={fraction}: {err}") from None
    return folds == 0


def write_splits(table: pd.DataFrame, out: str | Path, k: int = 5, group: bool = True, seed: int = 0,
                 oversample_strength: float | None = None, test_fraction: float = 0.0) -> dict:
    """Write ``out/folds.csv`` and ``out/fold{i}/train.txt``, ``val.txt`` (and ``train_oversampled.txt``);
    with ``test_fraction`` first hold out ``out/test.txt`` (fold -1 in folds.csv), which no fold uses.

    ``table`` needs columns ``name``, ``c`` and (when grouping) ``GridID``.
    """
    out = Path(out)
    names = table["name"].astype(str).tolist()
    classes = table["c"].astype(int).to_numpy()
    groups = table["GridID"].astype(str).tolist() if group else None
    test = np.zeros(len(names), dtype=bool)
    if test_fraction:
        test = hold_out(names, classes, test_fraction, groups, seed)
    rest = np.flatnonzero(~test)
    folds = np.full(len(names), -1, dtype=np.int64)
    folds[rest] = assign_folds([names[i] for i in rest], classes[rest], k,
                               [groups[i] for i in rest] if groups is not None else None, seed)
    df = pd.DataFrame({"name": names, "GridID": table["GridID"].astype(str) if "GridID" in table else "",
                       "c": classes, "fold": folds})
    from cropseg.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "folds.csv") as tmp:
        df.to_csv(tmp, index=False)
    if test.any():
        write_list(out / "test.txt", df.loc[test, "name"].tolist())
    else:
        (out / "test.txt").unlink(missing_ok=True)  # a test list of an earlier split would overlap these folds
    summary = []
    for f in range(k):
        val = df.loc[df.fold == f, "name"].tolist()
        train_df = df.loc[(df.fold != f) & (df.fold >= 0)]
        train = train_df["name"].tolist()
        d = out / f"fold{f}"
        write_list(d / "train.txt", train)
        write_list(d / "val.txt", val)
        row = {"fold": f, "train": len(train), "val": len(val),
               "val_grid_cells": int(df.loc[df.fold == f, "GridID"].nunique())}
        if oversample_strength is not None:
            over = oversample(train, train_df["c"].to_numpy(), oversample_strength, seed + f)
            write_list(d / "train_oversampled.txt", over)
            row["train_oversampled"] = len(over)
        if test.any():
            row["test"] = int(test.sum())
        summary.append(row)
    return {"folds": df, "summary": pd.DataFrame(summary), "out": out, "test": int(test.sum())}
