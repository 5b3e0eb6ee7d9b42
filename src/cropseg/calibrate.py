"""Calibrate a checkpoint on its validation patches: ``cropseg calibrate CKPT [key=value ...]``.

Finds the threshold that maximizes F1 (or IoU), fits temperature scaling, draws a
reliability diagram with the expected calibration error before and after, and writes a
new checkpoint whose ``threshold`` and ``temperature`` prediction then uses.

Options are ``key=value`` (conf/calibrate.yaml; ``cropseg calibrate --help`` lists them);
``data.KEY=VALUE`` changes the checkpoint's data config (e.g. ``data.val_list=...``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cropseg.command import Command
from cropseg.errors import UserError, choose
from cropseg.io import atomic_path, ensure_output_dir, ensure_output_file, write_text_atomic

log = logging.getLogger("cropseg.calibrate")


def check_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The options of conf/calibrate.yaml, checked."""
    opts = dict(opts)
    opts["metric"] = choose("metric", str(opts["metric"]).lower(), ("f1", "iou"), key="metric")
    opts["device"] = choose("device", str(opts["device"]), ("cpu", "cuda", "auto"), key="device")
    return opts


def _validation_data(hp: dict[str, Any], data_overrides: list[str], batch_size: int | None):
    from cropseg.config import datamodule_from_config

    train_cfg = hp.get("train_config") or {}
    data = OmegaConf.create(train_cfg.get("data") or {})
    try:
        data.merge_with_dotlist(data_overrides)
    except Exception as err:
        raise UserError(f"data overrides: {str(err).splitlines()[0]}") from None
    data = OmegaConf.to_container(data, resolve=True)
    if not data.get("root"):
        raise UserError("the checkpoint has no data config: give data.root=... and data.val_list=...")
    spec = hp["input_spec"]
    bands = list(data.get("bands") or spec["bands"])
    if bands != list(spec["bands"]):
        raise UserError(f"data.bands={bands} differ from the checkpoint's bands {list(spec['bands'])}")
    data["bands"] = bands
    norm = spec["normalization"]  # the model's input contract, whatever the data config says
    data["normalization"] = {"kind": "minmax", "min": norm["min"], "max": norm["max"], "clip": norm.get("clip", True)}
    data["num_workers"] = data.get("num_workers", 0)
    if batch_size:
        data["batch_size"] = int(batch_size)
    dm = datamodule_from_config(data, seed=int(train_cfg.get("seed", 0)))
    dm.setup("validate")
    if not len(dm.val_set):
        raise UserError(f"{data['root']}: the validation set is empty (give data.val_list=...)")
    return dm


def reliability_figure(path: Path, before: dict, after: dict, ece_before: float, ece_after: float,
                       temperature: float, t_before: float = 1.0, scores: dict | None = None, threshold: float | None = None,
                       metric: str = "f1") -> Path:
    from cropseg.plots import plt, save_figure

    ncols = 2 if scores is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 5), squeeze=False)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    for curve, label, color in ((before, f"before (T={t_before:.2f}): ECE {ece_before:.3f}", "tab:red"),
                                (after, f"after (T={temperature:.2f}): ECE {ece_after:.3f}", "tab:blue")):
        ok = curve["count"] > 0
        ax.plot(curve["confidence"][ok], curve["frequency"][ok], marker="o", color=color, label=label)
    ax.set(xlabel="predicted cropland probability", ylabel="observed cropland frequency", xlim=(0, 1), ylim=(0, 1),
           title="reliability diagram (validation pixels)")
    ax.legend(fontsize=8, loc="upper left")
    if scores is not None:
        ax2 = axes[0, 1]
        for name, color in (("f1", "tab:green"), ("iou", "tab:purple")):
            ax2.plot(scores["threshold"], scores[name], label=name.upper(), color=color)
        if threshold is not None:
            ax2.axvline(threshold, color="black", ls=":", label=f"best {metric.upper()} threshold {threshold:.3f}")
        ax2.set(xlabel="threshold (calibrated probability)", ylabel="score", xlim=(0, 1), ylim=(0, 1),
                title="validation score by threshold")
        ax2.legend(fontsize=8)
    return save_figure(fig, path)


def calibrate(ckpt_path: str | Path, metric: str = "f1", out: str | Path | None = None,
              out_dir: str | Path | None = None, data_overrides: list[str] | None = None, bins: int = 15,
              max_pixels: int = 2_000_000, device: str = "cpu", batch_size: int | None = None,
              min_class_pixels: int = 1000) -> dict[str, Any]:
    """Calibrate ``ckpt_path``; returns the report (also written as ``calibration.json``)."""
    from cropseg.models import calibration as cal
    from cropseg.models.checkpoint import load_cropland_model, read_checkpoint

    ckpt_path = Path(ckpt_path)
    raw = read_checkpoint(ckpt_path)
    hp = dict(raw["hyper_parameters"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_cropland_model(raw, map_location=device, name=str(ckpt_path))
    dm = _validation_data(hp, list(data_overrides or []), batch_size)
    if dm.spec != model.spec:  # the loader finishes items by the checkpoint's contract (Preprocess)
        raise UserError(f"{ckpt_path}: the validation data's input spec differs from the checkpoint's")
    total = len(dm.val_set) * int(hp["patch_size"]) ** 2
    c = cal.collect(model.net, dm.val_dataloader(), max_pixels=max_pixels, total_pixels=total, device=device)
    if c.pixels == 0 or c.targets.numel() == 0:
        raise UserError(f"{ckpt_path}: no valid validation pixels to calibrate on")
    crop, other = int(c.pos_hist.sum()), int(c.neg_hist.sum())
    if min(crop, other) < min_class_pixels:
        raise UserError(f"{ckpt_path}: the validation set has {crop} cropland and {other} other pixels; "
                        f"calibration needs min_class_pixels={min_class_pixels} of each (a threshold fitted on fewer "
                        "does not generalize): give data.val_list=... with more of both, or min_class_pixels=0")

    old_t, old_thr = float(hp.get("temperature", 1.0)), float(hp.get("threshold", 0.5))
    temperature = cal.fit_temperature(c.logits, c.targets)
    p_before, p_after = torch.sigmoid(c.logits / old_t), torch.sigmoid(c.logits / temperature)
    ece_before = cal.expected_calibration_error(p_before, c.targets, bins)
    ece_after = cal.expected_calibration_error(p_after, c.targets, bins)
    threshold, score = cal.best_threshold(c, metric, temperature)
    warnings = []
    if not 0.02 <= threshold <= 0.98:
        warnings.append(f"the best threshold {threshold:.3f} labels almost every pixel "
                        f"{'cropland' if threshold < 0.02 else 'non-cropland'}: the model separates the classes "
                        "poorly on this validation set; check the model before predicting with it")
    report = {
        "checkpoint": str(ckpt_path), "validation_patches": len(dm.val_set), "validation_pixels": c.pixels,
        "sampled_pixels": int(c.targets.numel()), "cropland_fraction": float(c.targets.mean()),
        "metric": metric, "temperature_before": old_t, "temperature": temperature,
        "threshold_before": old_thr, "threshold": threshold,
        f"{metric}_at_threshold_before": cal.score_at(c, old_thr, metric, old_t),
        f"{metric}_at_threshold": score,
        "ece_before": ece_before, "ece_after": ece_after,
        "nll_before": cal.nll(c.logits, c.targets, old_t), "nll_after": cal.nll(c.logits, c.targets, temperature),
        "bins": bins, "warnings": warnings,
    }
    stem = ckpt_path.name[: -len(".ckpt")] if ckpt_path.name.endswith(".ckpt") else ckpt_path.name
    out = Path(out) if out else ckpt_path.with_name(f"{stem}-calibrated.ckpt")
    out_dir = Path(out_dir) if out_dir else ckpt_path.with_name(f"{stem}-calibration")
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_figure(out_dir / "reliability.png", cal.reliability_curve(p_before, c.targets, bins),
                       cal.reliability_curve(p_after, c.targets, bins), ece_before, ece_after, temperature, old_t,
                       cal.threshold_scores(c, temperature), threshold, metric)

    raw["hyper_parameters"]["threshold"] = threshold
    raw["hyper_parameters"]["temperature"] = temperature
    raw["cropseg"] = {**raw["cropseg"], "calibration": {k: v for k, v in report.items() if k != "checkpoint"}}
    with atomic_path(out) as tmp:
        torch.save(raw, tmp)
    report.update(calibrated_checkpoint=str(out), reliability_png=str(out_dir / "reliability.png"))
    write_text_atomic(out_dir / "calibration.json", json.dumps(report, indent=2))
    return report


def run(cfg: dict[str, Any]) -> int:
    opts = check_options(cfg)
    if opts["out"]:
        ensure_output_file(opts["out"], "out")
    if opts["out_dir"]:
        ensure_output_dir(opts["out_dir"], "out_dir")
    r = calibrate(opts["ckpt"], opts["metric"], opts["out"], opts["out_dir"], opts["data"], opts["bins"],
                  opts["max_pixels"], opts["device"], opts["batch_size"], opts["min_class_pixels"])
    m = r["metric"]
    print("\n".join([
        f"cropseg calibrate: {r['validation_patches']} validation patches, {r['validation_pixels']} pixels "
        f"(cropland {r['cropland_fraction']:.3f})",
        f"  temperature {r['temperature_before']:.3f} -> {r['temperature']:.3f}: ECE {r['ece_before']:.4f} -> "
        f"{r['ece_after']:.4f}, NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}",
        f"  threshold   {r['threshold_before']:.3f} -> {r['threshold']:.3f}: {m.upper()} "
        f"{r[f'{m}_at_threshold_before']:.4f} -> {r[f'{m}_at_threshold']:.4f}",
        f"  calibrated checkpoint: {r['calibrated_checkpoint']}",
        f"  reliability diagram:   {r['reliability_png']}",
    ] + [f"  warning: {w}" for w in r["warnings"]]), flush=True)
    return 0


main = Command("cropseg calibrate", "calibrate", run, __doc__.splitlines()[0], ("ckpt",), passthrough="data").main


if __name__ == "__main__":
    sys.exit(main())
