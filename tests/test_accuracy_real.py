"""A real learning signal: a short training on real Landsat-8 patches (agnet-l8-cdl, USDA CDL
labels) must map cropland on the validation stripe better than calling everything cropland."""

from __future__ import annotations

import csv


from conftest import SHARED_DATA, needs
from cropseg.config import compose
from cropseg.train import train

AGNET = SHARED_DATA / "agnet-l8-cdl"

#: The agnet_l8 recipe, shortened to ~45 s on 2 CPU cores: fewer, lighter samples, one validation
#: (it reaches IoU ~0.76 against all-cropland's 0.54 here).
SHORT = ["trainer.max_epochs=4", "data.epoch_length=256", "data.crop_size=64", "trainer.check_val_every_n_epoch=4",
         "data.num_workers=0", "callbacks.previews=null", "callbacks.curves=null", "logger=csv"]


@needs(AGNET)
def test_short_training_on_real_patches_beats_all_cropland(tmp_path):
    cfg = compose("train", ["experiment=agnet_l8", f"agnet_dir={AGNET}", *SHORT, f"paths.output_dir={tmp_path / 'run'}"])
    summary = train(cfg)
    baseline = summary["all_cropland_baseline_iou"]  # on val.txt: its cropland fraction, ~0.54
    assert summary["val_patches"] == 96 and 0.5 < baseline < 0.6
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv")) if r.get("val/iou")]
    last = rows[-1]
    iou, accuracy = float(last["val/iou"]), float(last["val/accuracy"])
    # All cropland scores IoU = overall accuracy = the cropland fraction; a model that learned
    # nothing but the majority class cannot beat both by these margins.
    assert iou > baseline + 0.10, (iou, baseline)
    assert accuracy > baseline + 0.20, (accuracy, baseline)
