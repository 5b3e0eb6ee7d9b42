"""Regenerate the tiny checkpoint committed beside this file: ``python tests/data/make_checkpoints.py``.

``format2.ckpt`` is a real training checkpoint of today's format (a Unet with a 150k-parameter
``tu-lcnet_035`` encoder, trained for 4 steps on generated demo patches by the real Lightning
loop, saved without optimizer state). ``format2.json`` holds what it predicts on a fixed raw
input with nodata holes. tests/test_checkpoint_format.py loads both: when a change to the
checkpoint layout, the model signature or the input contract would stop old checkpoints from
loading, or change what they predict, CI fails. Regenerate only for a new format (and keep
reading the old one through cropseg.models.checkpoint.upgrade).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OVERRIDES = ["model.encoder=tu-lcnet_035", "+model.arch_kwargs.encoder_depth=3",
             "+model.arch_kwargs.decoder_channels=[16,8,4]", "trainer.max_epochs=1", "data.epoch_length=16",
             "data.batch_size=4", "data.num_workers=0", "data.generate_demo.size=32",
             "data.generate_demo.num_patches=12", "data.patch_size=32", "data.crop_size=null", "callbacks.previews=null",
             "callbacks.curves=null",
             "logger=csv", "++trainer.limit_val_batches=1", "++trainer.enable_progress_bar=false"]


def fixed_input(bands: int = 7, size: int = 32) -> torch.Tensor:
    """Raw bands in physical units with a block of nodata and one band missing elsewhere."""
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(1, bands, size, size, generator=g) * 0.4
    x[:, 5] = x[:, 5] * 2 - 0.2  # NDVI
    x[:, 6] = x[:, 6] * 2000  # Dem metres
    x[0, :, :6, :9] = float("nan")
    x[0, 6, 20:, 20:] = float("nan")
    return x


def main() -> None:
    from cropseg.config import compose
    from cropseg.models.checkpoint import load_cropland_model, read_checkpoint
    from cropseg.train import train

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cfg = compose("train", OVERRIDES + [f"paths.data_dir={t / 'data'}", f"paths.log_dir={t / 'logs'}",
                                            f"paths.output_dir={t / 'run'}"])
        summary = train(cfg)
        ckpt = read_checkpoint(summary["last_checkpoint"])
    keep = {k: ckpt[k] for k in ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "hyper_parameters",
                                 "hparams_name")}
    keep["cropseg"] = {k: v for k, v in ckpt["cropseg"].items() if k != "read_from_format"}
    keep["hyper_parameters"]["train_config"] = None  # paths of the temporary folder mean nothing elsewhere
    torch.save(keep, HERE / "format2.ckpt")
    model, _ = load_cropland_model(HERE / "format2.ckpt")
    with torch.no_grad():
        p = model(fixed_input())[0, 0]
    (HERE / "format2.json").write_text(json.dumps({
        "note": "probabilities of format2.ckpt on tests/data/make_checkpoints.py:fixed_input(); NaN = nodata",
        "probability": [[None if v != v else round(float(v), 7) for v in row] for row in p.tolist()]}) + "\n")
    print(f"wrote {HERE / 'format2.ckpt'} ({(HERE / 'format2.ckpt').stat().st_size / 1e3:.0f} kB) and format2.json")


if __name__ == "__main__":
    sys.exit(main())
