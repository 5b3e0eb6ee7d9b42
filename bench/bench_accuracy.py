"""Accuracy on real data: the agnet_l8 recipe against pixel classifiers, on the same pixels.

    python bench/bench_accuracy.py [--out FILE.md] [--tta none,flips,d4] [override ...]

Trains ``experiment=agnet_l8`` (any ``key=value`` Hydra overrides after the options) and, in the
same run, on the same validation pixels of ``../shared/data/agnet-l8-cdl``:

- predicting cropland everywhere;
- an NDVI threshold chosen on the training pixels (the one with the best IoU there, and the one
  with the best overall accuracy there);
- a per-pixel gradient-boosting classifier (scikit-learn's HistGradientBoostingClassifier) on
  the same bands and training pixels as the network (a random sample of them);

and prints IoU, F1, precision, recall and overall accuracy of the cropland class for each, with
the model's test-time augmentation modes (``cropseg.inference.tta``) and their cost. The model
is evaluated from its last checkpoint: the recipe's fixed schedule, no epoch picked on the
validation stripe.

``--tune`` trains and evaluates on a spatial split of ``train.txt`` instead (tile rows 1-24 train,
27-32 validation, 25-26 left out as a buffer): the split the recipe was chosen on, so that
``val.txt`` only confirms it. ``--write-tune-lists DIR`` writes that split's list files (for sweeps)
and exits. ``--ckpt PATH`` evaluates a trained checkpoint instead of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, table  # noqa: E402

AGNET_DIR = REPO.parent / "shared" / "data" / "agnet-l8-cdl"
#: The spatial tuning split inside train.txt: tile rows (1-based, inclusive).
TUNE_TRAIN_ROWS, TUNE_VAL_ROWS = (1, 24), (27, 32)
HEADERS = ["method", "IoU", "F1", "precision", "recall", "OA", "fit s", "predict s"]


def tile_row(name: str) -> int:
    """``agnet-{row}_{col}`` → row."""
    return int(name.rsplit("-", 1)[1].split("_")[0])


def tune_lists(folder: Path, data_dir: Path = AGNET_DIR) -> tuple[Path, Path]:
    """Write the spatial tuning split of ``train.txt`` into ``folder``; returns (train, val) list paths."""
    from cropseg.data.patches import read_list, write_list

    names = read_list(data_dir / "train.txt")
    train = [n for n in names if TUNE_TRAIN_ROWS[0] <= tile_row(n) <= TUNE_TRAIN_ROWS[1]]
    val = [n for n in names if TUNE_VAL_ROWS[0] <= tile_row(n) <= TUNE_VAL_ROWS[1]]
    folder.mkdir(parents=True, exist_ok=True)
    write_list(folder / "train.txt", train)
    write_list(folder / "val.txt", val)
    return folder / "train.txt", folder / "val.txt"


def load_split(root: Path, list_file: str | Path, bands: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw bands (N, H, W, C) float32 and labels (N, H, W) float32 (NaN = no data) of a list's patches."""
    from cropseg.data.patches import patch_path, read_list, read_patch

    xs, ys = [], []
    for name in read_list(list_file):
        p = read_patch(patch_path(root, name))
        xs.append(p.data[..., [list(p.bands).index(b) for b in bands]])
        ys.append(p.label[..., 0])
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cropland-class metrics of 0/1 ``pred`` against ``truth`` over pixels with a label."""
    from cropseg.evaluation.metrics import metrics_from_counts

    ok = np.isfinite(truth)
    p, t = pred[ok].astype(bool), truth[ok] > 0.5
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    tn = int(ok.sum()) - tp - fp - fn
    m = metrics_from_counts(tn, fp, fn, tp)
    return {"iou": float(m["iou"]), "f1": float(m["f1"]), "precision": float(m["precision"]),
            "recall": float(m["recall"]), "oa": float(m["overall_accuracy"])}


def best_threshold(values: np.ndarray, truth: np.ndarray, metric: str) -> float:
    """The threshold on ``values`` (cropland where ``values >= t``) with the best ``metric`` on these pixels."""
    ok = np.isfinite(truth) & np.isfinite(values)
    v, t = values[ok], truth[ok] > 0.5
    candidates = np.unique(np.quantile(v, np.linspace(0.0, 1.0, 201)))
    order = np.argsort(v)
    v_sorted, t_sorted = v[order], t[order]
    # Pixels below the threshold are "other": counts from cumulative sums, one pass for all thresholds.
    crop_below = np.concatenate([[0], np.cumsum(t_sorted)])
    k = np.searchsorted(v_sorted, candidates, side="left")
    fn = crop_below[k]
    tp = t_sorted.sum() - fn
    tn = k - fn
    fp = len(v) - k - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        score = tp / (tp + fp + fn) if metric == "iou" else (tp + tn) / len(v)
    return float(candidates[int(np.nanargmax(score))])


def gbm_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, pixels: int, seed: int = 0):
    """HistGradientBoostingClassifier on ``pixels`` random labelled training pixels; (prob, fit s, predict s)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    c = x_train.shape[-1]
    feats, labels = x_train.reshape(-1, c), y_train.reshape(-1)
    ok = np.flatnonzero(np.isfinite(labels) & np.isfinite(feats).all(axis=1))
    rng = np.random.default_rng(seed)
    pick = rng.choice(ok, size=min(pixels, len(ok)), replace=False)
    clf = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=seed)
    t0 = time.perf_counter()
    clf.fit(feats[pick], labels[pick] > 0.5)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prob = clf.predict_proba(np.nan_to_num(x_val.reshape(-1, c)))[:, 1].reshape(x_val.shape[:-1])
    return prob, fit_s, time.perf_counter() - t0


def model_probabilities(ckpt: str | Path, x_val: np.ndarray, tta: str, batch_size: int = 16) -> tuple[np.ndarray, float, float]:
    """Cropland probability of every validation pixel from a checkpoint, with test-time augmentation
    ``tta``; (prob (N, H, W), threshold, seconds). Raw bands in, through the checkpoint's own
    input contract (``CroplandModel``: normalization, nodata rule, temperature, sigmoid), as in
    prediction."""
    import torch

    from cropseg.inference.tta import with_tta
    from cropseg.models.checkpoint import load_cropland_model

    model, card = load_cropland_model(ckpt, map_location="cpu")
    proba = with_tta(model.eval(), tta)
    image = torch.from_numpy(np.ascontiguousarray(x_val.transpose(0, 3, 1, 2)))
    out = np.empty(x_val.shape[:3], np.float32)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(image), batch_size):
            out[i:i + batch_size] = proba(image[i:i + batch_size])[:, 0].numpy()
    return out, card.threshold, time.perf_counter() - t0


def train_recipe(overrides: list[str], out_dir: Path) -> dict:
    from cropseg.config import compose
    from cropseg.train import train

    cfg = compose("train", [f"paths.output_dir={out_dir}", "task_name=bench_accuracy", *overrides])
    return train(cfg)


def row(name: str, s: dict[str, float], fit_s: float | None = None, pred_s: float | None = None) -> list:
    f = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    return [name, f"{s['iou']:.3f}", f"{s['f1']:.3f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}",
            f"{s['oa']:.3f}", f(fit_s), f(pred_s)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of experiment=agnet_l8 (key=value)")
    ap.add_argument("--data", type=Path, default=AGNET_DIR, help="the agnet-l8-cdl folder")
    ap.add_argument("--tta", default="none,flips,d4", help="test-time augmentation modes to evaluate")
    ap.add_argument("--gbm-pixels", type=int, default=500_000, help="training pixels sampled for the GBM")
    ap.add_argument("--ckpt", help="evaluate this checkpoint instead of training the recipe")
    ap.add_argument("--baselines-only", action="store_true", help="no model: the baselines alone")
    ap.add_argument("--tune", action="store_true", help="the spatial tuning split of train.txt instead of val.txt")
    ap.add_argument("--write-tune-lists", type=Path, metavar="DIR", help="write the tuning split's lists and exit")
    ap.add_argument("--work", type=Path, help="run folder (default: logs/bench_accuracy/<time>)")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = ap.parse_args(argv)

    if not (args.data / "train.txt").is_file():
        print(f"error: {args.data}: the agnet-l8-cdl data is not there (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    if args.write_tune_lists:
        tr, va = tune_lists(args.write_tune_lists, args.data)
        print(f"wrote {tr} and {va}")
        return 0
    work = args.work or REPO / "logs" / "bench_accuracy" / time.strftime("%Y-%m-%d_%H-%M-%S")
    work.mkdir(parents=True, exist_ok=True)
    # experiment=agnet_l8 unless the overrides name another experiment (e.g. agnet_l8_noswir2).
    experiment = [] if any(o.startswith("experiment=") for o in args.overrides) else ["experiment=agnet_l8"]
    overrides = [*experiment, f"agnet_dir={args.data}", *args.overrides]
    train_list, val_list = args.data / "train.txt", args.data / "val.txt"
    if args.tune:
        train_list, val_list = tune_lists(work / "tune_lists", args.data)
        overrides += [f"data.train_list={train_list}", f"data.val_list={val_list}"]

    from cropseg.config import compose, to_container

    cfg = to_container(compose("train", [f"paths.output_dir={work}", *overrides]))
    bands = list(cfg["data"]["bands"])
    t_start = time.time()
    x_train, y_train = load_split(args.data / "data", train_list, bands)
    x_val, y_val = load_split(args.data / "data", val_list, bands)
    rows, results = [], {}

    def add(name, s, fit_s=None, pred_s=None):
        rows.append(row(name, s, fit_s, pred_s))
        results[name] = dict(s, fit_s=fit_s, predict_s=pred_s)
        print("  " + " | ".join(rows[-1]), flush=True)

    print(f"{len(x_train)} training / {len(x_val)} validation patches, bands {bands}", flush=True)
    add("all cropland", scores(np.ones(y_val.shape, bool), y_val))
    if "NDVI" in bands:
        nd_t, nd_v = x_train[..., bands.index("NDVI")], x_val[..., bands.index("NDVI")]
        for metric, label in (("iou", "best IoU"), ("oa", "best OA")):
            t = best_threshold(nd_t, y_train, metric)
            add(f"NDVI >= {t:.2f} ({label} on training pixels)", scores(nd_v >= t, y_val))
    prob, fit_s, pred_s = gbm_baseline(x_train, y_train, x_val, args.gbm_pixels)
    add(f"pixel GBM, {len(bands)} bands ({args.gbm_pixels:,} training pixels)", scores(prob >= 0.5, y_val), fit_s, pred_s)

    train_s = None
    summary: dict = {}
    ckpt = args.ckpt
    if ckpt is None and not args.baselines_only:
        t0 = time.time()
        summary = train_recipe(overrides, work / "train")
        train_s = time.time() - t0
        ckpt = summary["last_checkpoint"]
    arch = f"{cfg['model']['arch']}-{cfg['model']['encoder']}"
    for mode in [m.strip() for m in args.tta.split(",") if m.strip()] if ckpt else []:
        prob, thr, secs = model_probabilities(ckpt, x_val, mode)
        add(f"cropseg {arch}, tta={mode}", scores(prob >= thr, y_val), train_s, secs)

    title = "tuning split of train.txt (rows 1-24 → 27-32)" if args.tune else "val.txt (tile rows 33-40)"
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    lines = [
        f"Machine: {machine()}; load average at the end {' '.join(load)}.",
        f"Data: {args.data.name}, {len(x_train)} training / {len(x_val)} validation patches ({title}), "
        f"{int(np.isfinite(y_val).sum()):,} validation pixels, bands {','.join(bands)}.",
        f"Recipe: {' '.join([*experiment, *args.overrides])}" + (f"; trained in {train_s:.0f} s" if train_s else "")
        + (f"; evaluated from {Path(ckpt).name}." if ckpt else "; no model (--baselines-only)."),
        "",
        table(HEADERS, rows),
        "",
        f"Total wall time {time.time() - t_start:.0f} s. Command: python bench/bench_accuracy.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    ]
    report = "\n".join(lines)
    print("\n" + report)
    (work / "accuracy.json").write_text(json.dumps({"results": results, "summary": summary, "bands": bands}, indent=2))
    if args.out:
        from cropseg.io import write_text_atomic

        write_text_atomic(args.out, report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
