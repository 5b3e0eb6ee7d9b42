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

from cropseg.command import hydra_main
from cropseg.config import CONFIG_DIR, datamodule_from_config, model_from_config, register_configs, to_container
from cropseg.errors import UserError, report_user_errors
from cropseg.models.callbacks import FreezeEncoder
from cropseg.models.checkpoint import init_weights
from cropseg.io import atomic_path, write_text_atomic

log = logging.getLogger("cropseg.train")
register_configs()  # before Hydra composes: every Trainer argument as a key of the trainer group

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


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint was written in (``<run>/checkpoints/x.ckpt``), or None."""
    p = Path(ckpt_path).expanduser()
    return p.parent.parent if p.parent.name == "checkpoints" else None


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def resume_overrides(args: list[str]) -> list[str]:
    """The command line to run for ``ckpt_path=<run>/checkpoints/last.ckpt``: that run's own overrides
    (``<run>/.hydra/overrides.yaml``) with the ones given now on top, in that run's folder.

    So ``python -m cropseg.train ckpt_path=RUN/checkpoints/last.ckpt`` continues the same training
    (same data, model, loss ...) in RUN, where its checkpoints, metrics.csv and train.log grow, and
    ``summary.json`` ends with the best of the whole training. Overrides given now win
    (``trainer.max_epochs=300`` trains longer). Another checkpoint of the run (a best one) or
    ``resume_in_place=false``: the run's overrides too, but a new run folder (the run's own history
    stays as it is; the checkpoint's best score and path carry over). A sweep (``-m``) or a
    checkpoint outside a run folder: the command line as given.
    """
    if any(a in ("-m", "--multirun") for a in args):
        return args
    ckpt = next((a.split("=", 1)[1] for a in reversed(args) if _key(a) == "ckpt_path" and "=" in a), None)
    if not ckpt or ckpt.lower() in {"null", "none"}:
        return args
    run = checkpoint_run_dir(ckpt)
    if run is None or not (run / ".hydra" / "overrides.yaml").is_file():
        return args
    import yaml

    try:
        original = [str(o) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []]
    except yaml.YAMLError:
        raise UserError(f"ckpt_path={ckpt}: {run / '.hydra' / 'overrides.yaml'} is not readable YAML") from None
    given = {_key(a) for a in args}
    merged = [o for o in original if _key(o) not in given] + list(args)
    in_place = Path(ckpt).name == "last.ckpt" and not any(
        _key(a) == "resume_in_place" and a.split("=", 1)[-1].lower() in {"false", "no", "0", "off"} for a in args)
    if not in_place or any(a.startswith("hydra.run.dir=") for a in args):  # (DDP ranks > 0 are given it)
        return merged
    quoted = str(run).replace("\\", "\\\\").replace("'", "\\'")
    return merged + [f"hydra.run.dir='{quoted}'"]


def _callback_state(ckpt: dict[str, Any], cb: Any) -> dict[str, Any]:
    return (ckpt.get("callbacks") or {}).get(cb.state_key) or {}


def _carry_best(ckpt: dict[str, Any], callbacks: list) -> None:
    """Resuming into another folder: keep the checkpoint's best score and path (Lightning restores them
    only into the folder they were written in), so the best stays the best of the whole training."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    for cb in callbacks:
        state = _callback_state(ckpt, cb) if isinstance(cb, ModelCheckpoint) else {}
        if state.get("best_model_path"):
            cb.best_model_score = state.get("best_model_score")
            cb.best_k_models = dict(state.get("best_k_models") or {state["best_model_path"]: cb.best_model_score})
            cb.kth_best_model_path = state.get("kth_best_model_path", state["best_model_path"])
            cb.kth_value = state.get("kth_value", cb.best_model_score)
            log.info("resume: best so far %s (%s) in %s", cb.monitor, _fmt(cb.best_model_score), state["best_model_path"])
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")


def _fmt(x: Any) -> str:
    return f"{float(x):.4f}" if x is not None else "-"


def _resume_in_place(ckpt: dict[str, Any], ckpt_path: Path, callbacks: list, loggers: list) -> None:
    """Resuming in the checkpoint's own run folder: metrics.csv keeps the rows up to the checkpoint's
    epoch (Lightning's CSV logger would start it anew; later rows belong to the lost part of the run
    and are logged again), and best checkpoints written after ``ckpt_path`` by the interrupted
    session — unknown to the restored state — are removed so they are not mistaken for the best."""
    import csv

    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    epoch, step = int(ckpt.get("epoch", 0)), int(ckpt.get("global_step", 0))
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        rows, header = [], []
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                rows = [r for r in reader if _covered(r, epoch, step)]
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        writer = logger.experiment  # created now: Lightning's writer removes metrics.csv ...
        if rows:  # ... which gets back the rows that the checkpoint covers
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = header
            log.info("resume: metrics.csv keeps %d row(s) up to epoch %d", len(rows), epoch)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    mtime = ckpt_path.stat().st_mtime
    for cb in callbacks:
        if not isinstance(cb, ModelCheckpoint) or not cb.dirpath or not Path(cb.dirpath).is_dir():
            continue
        state = _callback_state(ckpt, cb)
        known = {Path(p).resolve() for p in [*(state.get("best_k_models") or {}), state.get("best_model_path")] if p}
        for f in Path(cb.dirpath).glob("*.ckpt"):
            if f.resolve() in known or f.resolve() == ckpt_path.resolve() or f.name == "last.ckpt":
                continue
            if f.stat().st_mtime > mtime:
                f.unlink()
                log.info("resume: removed %s (written after %s by the interrupted run)", f, ckpt_path.name)


def _covered(row: dict[str, str], epoch: int, step: int) -> bool:
    """Whether a metrics.csv row belongs to the training a checkpoint holds (its ``epoch`` and ``step`` =
    global step). A batch's rows carry its 0-based step, below the checkpoint's count of steps; an
    epoch's closing rows carry its last batch's step; the next epoch's learning-rate row already
    carries the checkpoint's step, and is logged again on resuming."""
    if row.get("step"):
        return int(float(row["step"])) < step
    return not row.get("epoch") or int(float(row["epoch"])) <= epoch


def _interrupted(trainer: Any, err: BaseException, last: Path | None) -> SystemExit:
    """Ctrl-C or SIGTERM during fit (Lightning ends both with SystemExit): one line saying how to resume."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    sigterm = isinstance(err, SIGTERMException)
    if trainer.is_global_zero:
        how = f"; resume with ckpt_path={last}" if last is not None and last.is_file() else ""
        print(f"interrupted ({'SIGTERM' if sigterm else 'Ctrl-C'}) in epoch {trainer.current_epoch}, step "
              f"{trainer.global_step}{how}", file=sys.stderr, flush=True)
    return SystemExit(143 if sigterm else 130)  # 128 + the signal, as the shell reports it


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit a model as ``cfg`` describes, then test the best checkpoint on ``data.test_list`` if given;
    returns the run summary (best and last checkpoints, metrics)."""
    import pytorch_lightning as pl
    import torch

    from cropseg.models.callbacks import LastCheckpoint
    from cropseg.models.checkpoint import read_checkpoint

    t0 = time.time()
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    plain = to_container(cfg)
    init_from = plain.get("init_from")
    ckpt_path = plain.get("ckpt_path")
    if init_from and ckpt_path:
        raise UserError("init_from and ckpt_path both given: ckpt_path resumes a run, init_from starts a new one")
    if str(plain.get("optimized_metric", "")).startswith("test/"):
        raise UserError(f"optimized_metric={plain['optimized_metric']}: choosing by the test list makes it a second "
                        "validation list and its score optimistic; optimize a val/ metric and read test/ in the results")
    resume = None
    if ckpt_path:  # a missing or foreign file: one line, now. Lightning loads the weights itself in fit:
        # keep only the progress and callback states, not a second copy of weights and optimizer state.
        resume = {k: v for k, v in read_checkpoint(ckpt_path).items() if k in ("epoch", "global_step", "callbacks")}
    pl.seed_everything(plain["seed"], workers=True, verbose=False)
    dm = datamodule_from_config(plain["data"], seed=plain["seed"])
    model = model_from_config(plain, dm.spec)
    if init_from:
        init_weights(model, init_from, list(plain["data"]["bands"]))
    callbacks = _instantiate_all(plain.get("callbacks"), "callbacks")
    # last.ckpt after the best checkpoint's epoch-end update, so that it holds this epoch's best score and path
    callbacks.sort(key=lambda cb: isinstance(cb, LastCheckpoint))
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
    out = Path(trainer.default_root_dir)
    last_cb = next((cb for cb in callbacks if isinstance(cb, LastCheckpoint)), None)
    if resume is not None:
        run = checkpoint_run_dir(ckpt_path)
        if run is not None and run.resolve() == out.resolve():
            if trainer.is_global_zero:
                _resume_in_place(resume, Path(ckpt_path), callbacks, loggers)
        else:
            _carry_best(resume, callbacks)
        log.info("resume: from %s (epoch %s, step %s) in %s", ckpt_path, resume.get("epoch"), resume.get("global_step"),
                 out)
    if trainer.is_global_zero:
        env = environment()
        env.update(seed=plain["seed"], init_from=init_from, ckpt_path=ckpt_path)
        write_text_atomic(out / "environment.json", json.dumps(env, indent=2, default=str))
    if not (out / "metrics.csv").exists():
        # The run folder always holds .hydra/ already: the CSV logger's warning that "previous log files
        # will be deleted" would print on every fresh run. It stays on where a metrics.csv is replaced.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    except SystemExit as err:
        if not trainer.interrupted:
            raise
        raise _interrupted(trainer, err, last_cb.path if last_cb else None) from None

    ckpt_cb = next((cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.ModelCheckpoint)), None)
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    metric = plain.get("optimized_metric", "val/iou")
    value = trainer.callback_metrics.get(metric)
    best_score = getattr(ckpt_cb, "best_model_score", None)
    test: dict[str, float] = {}
    if len(getattr(dm, "test_set", [])) and not trainer.fast_dev_run:
        # The held-out score: the best checkpoint (as chosen on validation), on patches used for neither.
        tested = best if best and Path(best).is_file() else None
        results = trainer.test(model, datamodule=dm, ckpt_path=tested, verbose=False)
        test = {k: float(v) for k, v in (results[0] if results else {}).items()}
        log.info("test: %s on %d patches: %s", tested or "the last weights", len(dm.test_set),
                 ", ".join(f"{k} {v:.4f}" for k, v in test.items() if not k.startswith("test/loss_")))
    val = dm.index.get("val")
    baseline = None
    if val is not None and len(val):
        valid = (1 - val.nodata_frac) * val.height * val.width
        baseline = float((val.rp * valid).sum() / valid.sum())  # IoU of predicting cropland everywhere
    summary = {
        "output_dir": str(out),
        "best_checkpoint": best,
        "last_checkpoint": str(last_cb.path) if last_cb else "",
        "best_val_iou": float(best_score) if best_score is not None else None,
        metric: float(value) if value is not None else None,
        **test,
        "all_cropland_baseline_iou": baseline,
        "epochs": trainer.current_epoch,
        "train_patches": len(dm.train_set),
        "val_patches": len(dm.val_set),
        "test_patches": len(getattr(dm, "test_set", [])),
        "seconds": round(time.time() - t0, 1),
        "init_from": init_from,
        "resumed_from": ckpt_path,
        "world_size": trainer.world_size,
    }
    if trainer.is_global_zero:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        f"cropseg train: {s['epochs']} epoch(s) on {s['train_patches']} training / {s['val_patches']} validation "
        f"patches in {s['seconds']:.0f}s" + (f" (resumed from {s['resumed_from']})" if s.get("resumed_from") else ""),
    ]
    if s.get("best_val_iou") is not None:
        base = s.get("all_cropland_baseline_iou")
        lines.append(f"  best val IoU {s['best_val_iou']:.3f}" + (f" (predicting all cropland: {base:.3f})" if base is not None else ""))
    if s.get("test/iou") is not None:
        lines.append(f"  test IoU {s['test/iou']:.3f}, F1 {s.get('test/f1', float('nan')):.3f} on {s['test_patches']} "
                     "held-out patches (best checkpoint)")
    lines += [f"  best checkpoint: {s['best_checkpoint'] or '-'}", f"  last checkpoint: {s['last_checkpoint'] or '-'}",
              f"  run folder:      {s['output_dir']}",
              "  (config in .hydra/, train.log, metrics.csv, training_curves.png, previews/, tensorboard/)"]
    log.info("\n".join(lines))


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
@report_user_errors  # inside Hydra too: Hydra reports what escapes the task function with a traceback
def _hydra_main(cfg: DictConfig) -> float | None:
    logging.captureWarnings(True)  # Python warnings (Lightning's) into train.log too
    _check_search_space(cfg)
    summary = train(cfg)
    _print_summary(summary)
    value = summary.get(cfg.get("optimized_metric", "val/iou"))
    return float(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    return hydra_main("train", _hydra_main, argv, rewrite=resume_overrides)


if __name__ == "__main__":
    sys.exit(main())
