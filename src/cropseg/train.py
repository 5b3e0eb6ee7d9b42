"""Train a segmentation model: ``python -m cropseg.train [overrides]``.

Runs the demo by default; ``data=h5 data.root=...`` for real patches. Each run writes
its config, logs, checkpoints and pictures to its own folder under ``logs/train/runs``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from cropseg.config import CONFIG_DIR, datamodule_from_config, model_from_config, to_container
from cropseg.errors import UserError
from cropseg.io import write_text_atomic

log = logging.getLogger("cropseg.train")


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

    t0 = time.time()
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    plain = to_container(cfg)
    pl.seed_everything(plain["seed"], workers=True, verbose=False)
    dm = datamodule_from_config(plain["data"], seed=plain["seed"])
    model = model_from_config(plain, dm.norm)
    callbacks = _instantiate_all(plain.get("callbacks"), "callbacks")
    loggers = _instantiate_all(plain.get("logger"), "logger")
    try:
        trainer = pl.Trainer(**plain["trainer"], callbacks=callbacks, logger=loggers or False)
    except (TypeError, ValueError, pl.utilities.exceptions.MisconfigurationException) as err:
        raise UserError(f"trainer: {str(err).splitlines()[0]}") from None
    ckpt_path = plain.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path}: checkpoint not found")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)

    out = Path(trainer.default_root_dir)
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
    }
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
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    _print_summary(summary)
    value = summary.get(cfg.get("optimized_metric", "val/iou"))
    return float(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    _hydra_main()
    return 0


if __name__ == "__main__":
    main()
