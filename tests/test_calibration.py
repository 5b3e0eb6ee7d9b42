"""Threshold and temperature calibration, and fine-tuning from a checkpoint (real models, demo data)."""

import json

import pytest
import torch

from cropseg.calibrate import main as calibrate_main
from cropseg.config import compose
from cropseg.errors import UserError
from cropseg.models import calibration as cal
from cropseg.models.checkpoint import load_cropland_model, read_checkpoint
from cropseg.train import train

from conftest import tiny_demo_overrides


def test_temperature_scaling_undoes_overconfidence_and_threshold_is_best():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(50_000, generator=g) * 2 - 1
    targets = (torch.rand(50_000, generator=g) < torch.sigmoid(true_logits)).float()
    logits = true_logits * 3  # an overconfident model: T = 3 undoes it
    t = cal.fit_temperature(logits, targets)
    assert t == pytest.approx(3.0, rel=0.1)
    before = cal.expected_calibration_error(torch.sigmoid(logits), targets)
    after = cal.expected_calibration_error(torch.sigmoid(logits / t), targets)
    assert after < 0.02 < before
    c = cal.collect(torch.nn.Identity(), [{"image": logits, "mask": targets}])
    thr, f1 = cal.best_threshold(c, "f1", t)
    for other in (0.1, 0.3, 0.5, 0.7):
        assert f1 >= cal.score_at(c, other, "f1", t) - 1e-9
    pred = torch.sigmoid(logits / t) > thr  # the score reported is the score of that threshold
    tp = float((pred & (targets > 0)).sum())
    assert f1 == pytest.approx(2 * tp / (float(pred.sum()) + float(targets.sum())), abs=2e-3)


def test_calibrate_command_on_the_demo_model(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "calibrated.ckpt"
    assert calibrate_main([f"ckpt={tiny_checkpoint}", f"out={out}", f"out_dir={tmp_path / 'report'}", "metric=iou"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "calibration.json").read_text())
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 10_000
    assert "ECE" in printed and str(out) in printed
    # Calibration shows its effect: a likelier temperature (what it fits; ECE need not fall for a
    # model trained two steps, the synthetic test above checks it), a threshold at least as good.
    assert report["nll_after"] < report["nll_before"] and 0 <= report["ece_after"] <= 1
    assert report["iou_at_threshold"] >= report["iou_at_threshold_before"] - 1e-9
    hp = read_checkpoint(out)["hyper_parameters"]
    assert hp["temperature"] == pytest.approx(report["temperature"]) and hp["temperature"] != 1.0
    assert hp["threshold"] == pytest.approx(report["threshold"])
    model, card = load_cropland_model(out)  # what prediction loads: threshold and temperature come with it
    assert card.threshold == pytest.approx(report["threshold"])
    x = torch.rand(1, 7, 64, 64)
    with torch.no_grad():
        logits = model.net(model.network_input(x)[0])
        assert torch.allclose(model(x), torch.sigmoid(logits / report["temperature"]))
    with pytest.raises(SystemExit) as e:
        calibrate_main([f"ckpt={tmp_path / 'nope.ckpt'}"])
    assert e.value.code == 2 and "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        calibrate_main([str(out), "metric=auc"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "metric='auc' is not a known metric; choose one of: f1, iou" in err
    # Too few pixels of a class to fit a threshold on: refused in one line, nothing written.
    scarce = tmp_path / "scarce.ckpt"
    with pytest.raises(SystemExit) as e:
        calibrate_main([f"ckpt={tiny_checkpoint}", f"out={scarce}", f"out_dir={tmp_path / 'scarce'}",
                        "min_class_pixels=1000000000"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "min_class_pixels=1000000000" in err and "cropland" in err and not scarce.exists()


def test_finetune_from_checkpoint_with_frozen_encoder(tiny_checkpoint, tmp_path):
    cfg = compose("train", tiny_demo_overrides(tmp_path) + ["logger=csv", "callbacks.previews=null",
                                                            f"init_from={tiny_checkpoint}",
                                                            "finetune.freeze_encoder_epochs=1"])
    summary = train(cfg)
    start = read_checkpoint(tiny_checkpoint)["state_dict"]
    tuned = read_checkpoint(summary["last_checkpoint"])
    assert tuned["epoch"] == 0 and summary["init_from"] == str(tiny_checkpoint)  # a new run, not a resume
    enc = [k for k in start if k.startswith("net.encoder.")]
    dec = [k for k in start if k.startswith("net.decoder.") and start[k].is_floating_point()]
    assert enc and dec
    assert all(torch.equal(start[k], tuned["state_dict"][k]) for k in enc), "frozen encoder (and its BN stats) kept"
    assert any(not torch.equal(start[k], tuned["state_dict"][k]) for k in dec), "decoder adapted"


def test_finetune_from_checkpoint_with_other_bands_is_one_line(tiny_checkpoint, tmp_path):
    cfg = compose("train", tiny_demo_overrides(tmp_path) + ["logger=csv", f"init_from={tiny_checkpoint}",
                                                            "data.bands=[B,G,R,NIR,SWIR1]"])
    with pytest.raises(UserError, match=r"init_from=.*: the checkpoint's bands \['B', 'G', 'R', 'NIR', 'SWIR1', "
                                        r"'NDVI', 'Dem'\] differ from data.bands \['B', 'G', 'R', 'NIR', 'SWIR1'\]"):
        train(cfg)
