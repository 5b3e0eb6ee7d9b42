"""Tiled inference: ``python -m cropseg.predict ckpt=model.ckpt input=scene.tif output=out/``.

Writes one ``{stem}_cropland.tif`` per scene (probability DN = round(200 p), optional
class band, 255 nodata; the input's CRS, transform and size) and its quicklook
``{stem}_cropland.png`` (``quicklook=false`` skips it). See docs/inference.md and
conf/predict.yaml for every option. Reruns skip finished maps; the scene list is split
over processes by RANK/WORLD_SIZE (torchrun) or SLURM_PROCID/SLURM_NTASKS.
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

from cropseg.config import CONFIG_DIR, to_container
from cropseg.command import hydra_main
from cropseg.errors import UserError, report_user_errors
from cropseg.maps import OUTPUT_PATTERN, SCENE_GLOBS

log = logging.getLogger("cropseg.predict")

SETTING_KEYS = ("window", "stride", "overlap", "margin", "blending", "padding", "batch_size", "device", "precision",
                "threshold", "class_band", "overviews", "cog", "band_map", "extra_bands", "assume_order",
                "band_scale", "band_offset", "sensor", "check_units",
                "skip_empty", "quicklook", "progress", "tta")


def predict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Run inference as ``cfg`` (conf/predict.yaml) describes; returns the summary."""
    from cropseg.inference.predictor import predict_many, settings_from_dict, shard, shard_info, summary_dict
    from cropseg.inputs import expand_inputs

    t0 = time.time()
    if isinstance(cfg, DictConfig):
        if "hydra" in cfg:
            cfg = cfg.copy()
            with open_dict(cfg):
                del cfg["hydra"]
        plain = to_container(cfg)
    else:
        plain = dict(cfg)
    settings = settings_from_dict({k: plain[k] for k in SETTING_KEYS if k in plain})
    if not plain.get("ckpt") and not plain.get("models"):
        raise UserError("ckpt is required (ckpt=path/to/model.ckpt), or models=[{ckpt: ..., from: ..., to: ...}]")
    # A missing or unreadable scene fails on its own (reported in the summary), not the whole run.
    scenes_all = expand_inputs(plain["input"], SCENE_GLOBS, key="input", what="scenes", missing_ok=True)
    sh = plain.get("shard") or {}
    rank, world = shard_info(sh.get("rank"), sh.get("world_size"))
    scenes = shard(scenes_all, rank, world)
    single = len(scenes_all) == 1

    def report(res) -> None:
        if res.status == "failed":
            print(f"error: {res.message}", file=sys.stderr, flush=True)
        elif res.status == "done":
            log.info("%s -> %s (%.2f MP in %.1fs)", res.scene, res.output, res.megapixels, res.seconds)

    results = predict_many(scenes, plain.get("output") or "predictions", settings, plain.get("ckpt"),
                           plain.get("models"), bool(plain.get("overwrite")), plain.get("pattern") or OUTPUT_PATTERN,
                           single, report)
    summary = summary_dict(results)
    summary.update(rank=rank, world_size=world, scenes_total=len(scenes_all), scenes_this_rank=len(scenes),
                   output=str(plain.get("output")), wall_seconds=round(time.time() - t0, 2))
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    shard_note = f" (rank {s['rank']} of {s['world_size']}: {s['scenes_this_rank']} of {s['scenes_total']} scenes)" \
        if s["world_size"] > 1 else ""
    mp, secs = s["megapixels"], s["seconds"]
    rate = f", {mp / secs:.2f} MP/s" if secs > 0 and s["done"] else ""
    lines = [f"cropseg predict: {s['done']} done, {s['skipped']} skipped (already there), {s['failed']} failed"
             f"{shard_note}; {mp:.1f} MP in {s['wall_seconds']:.1f}s{rate}",
             f"  maps in: {s['output']}"]
    for r in s["results"]:
        if r["status"] == "failed":
            lines.append(f"  failed: {r['scene']}")
    log.info("\n".join(lines))  # the console (plainly) and the run folder's predict.log


@hydra.main(config_path=str(CONFIG_DIR), config_name="predict", version_base="1.3")
@report_user_errors  # inside Hydra too: Hydra reports what escapes the task function with a traceback
def _hydra_main(cfg: DictConfig) -> None:
    summary = predict(cfg)
    _print_summary(summary)
    try:
        out_dir = Path(cfg.paths.output_dir)
        (out_dir / "predict_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    except Exception:  # noqa: BLE001 - the summary file is a convenience
        pass
    if summary["failed"]:
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    return hydra_main("predict", _hydra_main, argv)


if __name__ == "__main__":
    sys.exit(main())
