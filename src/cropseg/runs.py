"""Compare training runs: ``cropseg runs summarize DIR [metric=val/iou] [out=PREFIX]``.

Finds every training run folder under DIR (a single run, a multirun sweep, an Optuna search
or a whole ``logs/`` tree), reads its overrides (``.hydra/overrides.yaml``), its best
validation metrics (``metrics.csv``, the epoch with the best ``metric``), its test metrics
and best checkpoint (``summary.json``), and prints and writes one table, best run first:
``DIR/runs_summary.csv`` and ``DIR/runs_summary.md``. Folders of other tasks (predict) and
runs that stopped before training (a bad config) are not training runs and are left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cropseg.command import Command, Group
from cropseg.errors import UserError, choose
from cropseg.io import ensure_output_file, write_text_atomic

#: Overrides that say where, not what: left out of the table.
HIDDEN_PREFIXES = ("paths.", "hydra.", "trainer.default_root_dir", "hparams_search", "ckpt_path")
VAL_METRICS = ("val/iou", "val/f1", "val/precision", "val/recall", "val/accuracy", "val/kappa", "val/loss")
#: Held-out metrics of the best checkpoint (data.test_list), from summary.json.
TEST_METRICS = ("test/iou", "test/f1", "test/precision", "test/recall", "test/accuracy", "test/kappa", "test/loss")


def _is_training(run: Path) -> bool:
    """Whether ``run``'s Hydra config (if any) is a training config. Told by its content (a
    ``trainer`` section), not by ``task_name``, which users set to name their sweeps."""
    f = run / ".hydra" / "config.yaml"
    if not f.is_file():
        return True
    try:
        cfg = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError:
        return True
    return isinstance(cfg, dict) and ("trainer" in cfg or cfg.get("task_name") == "train")


def find_runs(root: Path) -> list[Path]:
    """Training run folders under ``root``: folders where training started (``summary.json``,
    ``metrics.csv`` or ``checkpoints/*.ckpt``) whose config, if any, is a training task's.

    A folder with only ``.hydra/`` stopped before training (a config error) and a predict run
    has no metrics: neither is listed as an unfinished training run.
    """
    found: set[Path] = set()
    for pattern in ("summary.json", "metrics.csv", "checkpoints/*.ckpt"):
        for f in root.rglob(pattern):
            run = f.parent.parent if pattern.startswith("checkpoints") else f.parent
            if ".pl_hydra" in str(run) or ".submitit" in run.parts:
                continue
            found.add(run)
    return sorted(r for r in found if _is_training(r))


def _read_overrides(run: Path) -> list[str]:
    f = run / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return []
    try:
        items = yaml.safe_load(f.read_text()) or []
    except yaml.YAMLError:
        return []
    return [str(o) for o in items if not str(o).lstrip("+~").startswith(HIDDEN_PREFIXES)]


def _best_epoch(metrics_csv: Path, metric: str, mode: str) -> dict[str, Any]:
    try:
        df = pd.read_csv(metrics_csv)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return {}
    if metric not in df or "epoch" not in df:
        return {}
    per_epoch = df.groupby("epoch").mean(numeric_only=True)
    s = per_epoch[metric].dropna()
    if s.empty:
        return {}
    epoch = s.idxmax() if mode == "max" else s.idxmin()
    row = per_epoch.loc[epoch]
    out = {"best_epoch": int(epoch), "epochs": int(per_epoch.index.max()) + 1}
    out.update({m: float(row[m]) for m in VAL_METRICS if m in row and not pd.isna(row[m])})
    out[metric] = float(row[metric])
    return out


def describe_run(run: Path, metric: str = "val/iou", mode: str = "max") -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if (run / "summary.json").is_file():
        try:
            summary = json.loads((run / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = {}
    row: dict[str, Any] = {"run": str(run), "status": "finished" if summary else "incomplete"}
    overrides = _read_overrides(run)
    row["overrides"] = " ".join(overrides)
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        row[f"={key}"] = value
    csvs = [run / "metrics.csv"] + sorted(run.glob("*/metrics.csv"))
    best = next((b for b in (_best_epoch(c, metric, mode) for c in csvs if c.is_file()) if b), {})
    row.update(best)
    row.update({m: summary[m] for m in TEST_METRICS if summary.get(m) is not None})
    if metric not in row and summary.get(metric) is not None:
        row[metric] = summary[metric]
    if metric == "val/iou" and summary.get("best_val_iou") is not None:
        row[metric] = summary["best_val_iou"]  # what the checkpoint callback kept
    best_ckpt = summary.get("best_checkpoint") or ""
    if not best_ckpt:
        ckpts = sorted(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
        best_ckpt = str(ckpts[-1]) if ckpts else ""
    row["best_checkpoint"] = best_ckpt
    row["seconds"] = summary.get("seconds")
    return row


def summarize(root: str | Path, metric: str = "val/iou", mode: str | None = None) -> pd.DataFrame:
    """One row per run under ``root``, best ``metric`` first (runs without it last)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: folder not found")
    mode = mode or ("min" if metric.endswith("loss") else "max")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"{root}: no training runs found (no summary.json, metrics.csv or checkpoints/ of a "
                        "training run below it)")
    rows = [describe_run(r, metric, mode) for r in runs]
    df = pd.DataFrame(rows)
    if metric not in df:
        df[metric] = math.nan
    df = df.sort_values(metric, ascending=mode == "min", na_position="last", kind="stable").reset_index(drop=True)
    # Columns: rank, the overrides that vary, the metrics, then where things are.
    swept = [c for c in df.columns if c.startswith("=")]
    varying = [c for c in swept if df[c].astype(str).nunique(dropna=False) > 1] or swept
    metrics = [metric] + [m for m in (*VAL_METRICS, *TEST_METRICS) if m in df and m != metric]
    rest = [c for c in ("best_epoch", "epochs", "seconds", "status", "overrides", "best_checkpoint", "run") if c in df]
    df.insert(0, "rank", range(1, len(df) + 1))
    df = df[["rank", *varying, *metrics, *rest]].rename(columns={c: c[1:] for c in varying})
    try:
        df["run"] = [str(Path(r).relative_to(root)) or "." for r in df["run"]]
    except ValueError:
        pass
    return df


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return "" if v is None else str(v).replace("|", "\\|")

    # The full override list is in the CSV; the Markdown keeps the columns that differ.
    cols = [c for c in df.columns if c not in {"best_checkpoint", "overrides"}] + \
        (["best_checkpoint"] if "best_checkpoint" in df else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(row[c]) for c in cols) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def _optuna_results(root: Path) -> list[str]:
    lines = []
    for f in sorted(root.rglob("optimization_results.yaml")):
        try:
            res = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError:
            continue
        lines.append(f"optuna ({f.parent}): best value {res.get('best_value')} with {res.get('best_params')}")
    return lines


def run_summarize(a: dict) -> int:
    root = Path(a["dir"])
    metric = a["metric"]
    mode = choose("mode", a["mode"], ("max", "min"), key="mode") if a["mode"] else None
    prefix = Path(a["out"]) if a["out"] else root / "runs_summary"
    if root.is_dir() or a["out"]:
        ensure_output_file(prefix.with_name(prefix.name + ".csv"), "out")
    df = summarize(root, metric, mode)
    md = _markdown(df)
    write_text_atomic(prefix.with_name(prefix.name + ".csv"), df.to_csv(index=False))
    write_text_atomic(prefix.with_name(prefix.name + ".md"), md)
    print(md)
    best = df.iloc[0]
    if not pd.isna(best[metric]):
        print(f"best: {best['run']} ({metric} {best[metric]:.4f})\n  checkpoint: {best['best_checkpoint'] or '-'}")
    for line in _optuna_results(root):
        print(line)
    print(f"tables: {prefix}.csv, {prefix}.md")
    return 0


RUNS = Group("cropseg runs", {"summarize": Command(
    "cropseg runs summarize", "runs/summarize", run_summarize,
    "one table of runs, overrides and best validation metrics, best first", ("dir",))},
    "Summarize training runs and sweeps.")
main = RUNS.main
