"""Train a segmentation model: ``python -m cropseg.train [overrides]``.

Runs the demo by default; ``data=h5 data.root=...`` for real patches. Each run writes
its config, logs, checkpoints and pictures to its own folder under ``logs/train/runs``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from cropseg.config import CONFIG_DIR, datamodule_from_config, model_from_config, to_container
from cropseg.command import hydra_main
from cropseg.errors import UserError, report_user_errors
from cropseg.models.callbacks import FreezeEncoder
from cropseg.models.checkpoint import init_weights
from cropseg.io import write_text_atomic

log = logging.getLogger("cropseg.train")

PACKAGES = ("cropseg", "torch", "pytorch-lightning", "segmentation-models-pytorch", "timm", "torchmetrics", "hydra-core",
            "omegaconf", "numpy", "h5py", "hydra-optuna-sweeper", "optuna", "sqlalchemy", "hydra-submitit-launcher")


def environment() -> dict[str, Any]:
    """What a run needs to be repeated: git revision, package versions, platform, command line."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    git: dict[str, Any] = {}
    src = Path(__file__).resolve().parent
    try:
        def run(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=src, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        git = {"revision": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        git = {"revision": None, "note": "not a git checkout (installed package); see versions.cropseg"}
    import __main__
    import torch

    spec = getattr(__main__, "__spec__", None)
    prog = ["python", "-m", spec.name] if spec is not None and spec.name else [Path(sys.argv[0]).name]
    return {
        "git": git, "versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
        "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "command": [*prog, *sys.argv[1:]], "cwd": os.getcwd(), "host": platform.node(),
    }


def _check_search_space(cfg: DictConfig) -> None:
    """An Optuna search with nothing to search is a user error, not N identical trials."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except ValueError:
        return
    sweeper = hc.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return
    params = sweeper.get("params") or {}
    swept = [a for a in sys.argv[1:] if "=" in a and not a.startswith("hydra.")
             and any(t in a.split("=", 1)[1] for t in (",", "interval(", "range(", "choice("))]
    if not params and not swept and not sweeper.get("search_space"):
        raise UserError("hparams_search: the search space is empty (hydra.sweeper.params has no parameters); "
                        "give some, e.g. 'hydra.sweeper.params.optimizer.lr=tag(log,interval(1e-5,1e-2))'")


def _instantiate_all(group: dict[str, Any] | None, key: str) -> list:
    from hydra.utils import instantiate

    objs = []
    for name, spec in (group or {}).items():
        if not spec:
            continue
        if "_target_" not in spec:
            raise UserError(f"{key}.{name}: no _target_ given")
        try:
            objs.append(instantiate(spec))
        except Exception as err:  # instantiate wraps import and argument errors
            raise UserError(f"{key}.{name}: cannot create {spec['_target_']} ({str(err).splitlines()[0]})") from None
    return objs


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit a model as ``cfg`` describes; returns the run summary (best checkpoint and metrics)."""
    import pytorch_lightning as pl
    import torch

    t0 = time.time()
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    plain = to_container(cfg)
    pl.seed_everything(plain["seed"], workers=True, verbose=False)
    dm = datamodule_from_config(plain["data"], seed=plain["seed"])
    model = model_from_config(plain, dm.spec)
    init_from = plain.get("init_from")
    ckpt_path = plain.get("ckpt_path")
    if init_from and ckpt_path:
        raise UserError("init_from and ckpt_path both given: ckpt_path resumes a run, init_from starts a new one")
    if init_from:
        init_weights(model, init_from, list(plain["data"]["bands"]))
    callbacks = _instantiate_all(plain.get("callbacks"), "callbacks")
    freeze = int((plain.get("finetune") or {}).get("freeze_encoder_epochs") or 0)
    if freeze > 0:
        callbacks.append(FreezeEncoder(freeze))
    loggers = _instantiate_all(plain.get("logger"), "logger")
    trainer_kw = dict(plain["trainer"])
    if freeze > 0 and trainer_kw.get("strategy") == "ddp":
        trainer_kw["strategy"] = "ddp_find_unused_parameters_true"  # frozen encoder params get no gradient
    if trainer_kw.get("sync_batchnorm") and (trainer_kw.get("accelerator") == "cpu" or not torch.cuda.is_available()):
        trainer_kw["sync_batchnorm"] = False  # SyncBatchNorm needs GPUs; CPU processes (gloo) keep per-rank stats
        log.info("trainer.sync_batchnorm: off on CPU")
    try:
        trainer = pl.Trainer(**trainer_kw, callbacks=callbacks, logger=loggers or False)
    except (TypeError, ValueError, pl.utilities.exceptions.MisconfigurationException) as err:
        raise UserError(f"trainer: {str(err).splitlines()[0]}") from None
    if ckpt_path and not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path}: checkpoint not found")
    out = Path(trainer.default_root_dir)
    if trainer.is_global_zero:
        env = environment()
        env.update(seed=plain["seed"], init_from=init_from, ckpt_path=ckpt_path)
        write_text_atomic(out / "environment.json", json.dumps(env, indent=2, default=str))
    if not (out / "metrics.csv").exists():
        # The run folder always holds .hydra/ already: the CSV logger's warning that "previous log files
        # will be deleted" would print on every fresh run. It stays on where a metrics.csv is replaced.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)

    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    metric = plain.get("optimized_metric", "val/iou")
    value = trainer.callback_metrics.get(metric)
    best_score = getattr(ckpt_cb, "best_model_score", None)
    val = dm.index.get("val")
    baseline = None
    if val is not None and len(val):
        valid = (1 - val.nodata_frac) * val.height * val.width
        baseline = float((val.rp * valid).sum() / valid.sum())  # IoU of predicting cropland everywhere
    summary = {
        "output_dir": str(out),
        "best_checkpoint": best,
        "last_checkpoint": str(Path(ckpt_cb.dirpath) / "last.ckpt") if ckpt_cb and ckpt_cb.dirpath else "",
        "best_val_iou": float(best_score) if best_score is not None else None,
        metric: float(value) if value is not None else None,
        "all_cropland_baseline_iou": baseline,
        "epochs": trainer.current_epoch,
        "train_patches": len(dm.train_set),
        "val_patches": len(dm.val_set),
        "seconds": round(time.time() - t0, 1),
        "init_from": init_from,
        "world_size": trainer.world_size,
    }
    if trainer.is_global_zero:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        f"cropseg train: {s['epochs']} epoch(s) on {s['train_patches']} training / {s['val_patches']} validation "
        f"patches in {s['seconds']:.0f}s",
    ]
    if s.get("best_val_iou") is not None:
        base = s.get("all_cropland_baseline_iou")
        lines.append(f"  best val IoU {s['best_val_iou']:.3f}" + (f" (predicting all cropland: {base:.3f})" if base is not None else ""))
    lines += [f"  best checkpoint: {s['best_checkpoint'] or '-'}", f"  run folder:      {s['output_dir']}",
              "  (config in .hydra/, metrics.csv, training_curves.png, previews/, tensorboard/)"]
    print("\n".join(lines), flush=True)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
@report_user_errors  # inside Hydra too: Hydra reports what escapes the task function with a traceback
def _hydra_main(cfg: DictConfig) -> float | None:
    _check_search_space(cfg)
    summary = train(cfg)
    _print_summary(summary)
    value = summary.get(cfg.get("optimized_metric", "val/iou"))
    return float(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    return hydra_main("train", _hydra_main, argv)


if __name__ == "__main__":
    sys.exit(main())
