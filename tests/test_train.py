"""Training through real Hydra composition and real Lightning Trainers, on tiny demo data."""

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from cropseg.config import CONFIG_DIR, compose
from cropseg.data.patches import write_list, write_patch
from cropseg.errors import UserError
from cropseg.models.checkpoint import load_cropland_model, read_checkpoint
from cropseg.train import train

from conftest import SEED_DIR, TINY, needs, tiny_demo_overrides, tiny_overrides

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_builds_and_runs_on_7_bands(model, tmp_path):
    from cropseg.config import model_from_config, to_container
    from cropseg.models.preprocess import InputSpec

    cfg = to_container(compose("train", [f"model={model}", "model.encoder=resnet18", f"paths.output_dir={tmp_path}"]))
    m = model_from_config(cfg, InputSpec.build(cfg["data"]["bands"])).eval()
    with torch.no_grad():
        out = m(torch.rand(1, 7, 192, 192))
    assert out.shape == (1, 1, 192, 192)


def test_checkpoint_is_self_describing(tiny_checkpoint):
    ckpt = read_checkpoint(tiny_checkpoint)
    hp = ckpt["hyper_parameters"]
    assert hp["input_spec"]["bands"] == ["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"]
    assert hp["input_spec"]["normalization"]["min"] == [0, 0, 0, 0, 0, -1, -400]
    assert hp["patch_size"] == 64 and hp["arch"] == "unet" and hp["threshold"] == 0.5
    assert hp["train_config"]["data"]["root"].endswith("data/demo/data")
    # No config file needed: the model comes back from the checkpoint alone and predicts.
    model, card = load_cropland_model(tiny_checkpoint)
    with torch.no_grad():
        p = model(torch.rand(2, 7, 64, 64))
    assert p.shape == (2, 1, 64, 64) and float(p.min()) >= 0 and float(p.max()) <= 1 and card.patch_size == 64


def test_run_folder_has_logs_checkpoints_and_pictures(tiny_checkpoint):
    run = tiny_checkpoint.parents[1]
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "checkpoints").glob("epoch000-iou*.ckpt")), "best checkpoint on val IoU"
    assert (run / "metrics.csv").exists() and (run / "training_curves.png").exists()
    assert list((run / "previews").glob("epoch_000.png")) and (run / "summary.json").exists()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    for metric in ("val/iou", "val/f1", "val/precision", "val/recall", "val/accuracy", "val/kappa", "train/iou"):
        assert metric in header


def test_resume_into_a_new_folder_keeps_the_best_so_far(tiny_checkpoint, tmp_path):
    cfg = compose("train", tiny_demo_overrides(tmp_path) + ["logger=csv", "trainer.max_epochs=2",
                                                            f"ckpt_path={tiny_checkpoint}"])
    summary = train(cfg)
    ckpt = read_checkpoint(summary["last_checkpoint"])
    first = read_checkpoint(tiny_checkpoint)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * first["global_step"]
    # Another run folder than the checkpoint's: the best of epoch 0 still counts (Lightning alone forgets it).
    before = json.loads((tiny_checkpoint.parents[1] / "summary.json").read_text())
    assert summary["best_val_iou"] >= before["best_val_iou"]
    if summary["best_val_iou"] == before["best_val_iou"]:
        assert summary["best_checkpoint"] == before["best_checkpoint"]


def _bad_cfg(tmp_path, *extra):
    base = tiny_overrides(tmp_path) if "data=h5" in extra else tiny_demo_overrides(tmp_path)
    return compose("train", base + ["logger=csv", *extra])


def test_user_errors_name_the_key_or_file(demo_root, tmp_path):
    root = demo_root / "data"
    h5 = ["data=h5", f"data.root={root}", "data.patch_size=64"]
    with pytest.raises(UserError, match="data.root=.*nowhere: folder not found"):
        train(_bad_cfg(tmp_path, "data=h5", f"data.root={tmp_path / 'nowhere'}"))
    with pytest.raises(UserError, match="model.arch='segnet' is not a known architecture; choose one of: unet"):
        train(_bad_cfg(tmp_path, "model.arch=segnet"))
    with pytest.raises(UserError, match="model.encoder='resnet7' is not a known encoder; choose one of: .*resnet18"):
        train(_bad_cfg(tmp_path, "model.encoder=resnet7"))
    with pytest.raises(UserError, match="loss term 'bce_dice' is not known; choose from: bce, dice"):
        train(_bad_cfg(tmp_path, "loss.terms=bce_dice"))
    missing = write_list(tmp_path / "missing.txt", ["900-0", "no-such-1", "no-such-2"])
    with pytest.raises(UserError, match=r"missing.txt: 2 listed patch\(es\) not found .*no-such-1, no-such-2"):
        train(_bad_cfg(tmp_path, *h5, f"data.train_list={missing}"))
    empty = write_list(tmp_path / "empty.txt", [])
    with pytest.raises(UserError, match="training set is empty"):
        train(_bad_cfg(tmp_path, *h5, f"data.train_list={empty}"))
    with pytest.raises(UserError, match="patch size 64x64 differs from data.patch_size=128"):
        train(_bad_cfg(tmp_path, *h5, "data.patch_size=128"))


def test_bad_patches_are_reported(tmp_path):
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad"
    write_patch(bad / "1-1.h5", rng.random((64, 64, 7)), np.full((64, 64, 1), 2.0))
    with pytest.raises(UserError, match="labels outside \\[0, 1\\] in 1-1.h5"):
        train(_bad_cfg(tmp_path, "data=h5", f"data.root={bad}", "data.patch_size=64"))
    five = tmp_path / "five"
    write_patch(five / "1-1.h5", rng.random((64, 64, 5)), np.zeros((64, 64, 1)), bands=["B", "G", "R", "NIR", "SWIR1"])
    with pytest.raises(UserError, match="1-1.h5: has 5 bands .*data.bands asks for"):
        train(_bad_cfg(tmp_path, "data=h5", f"data.root={five}", "data.patch_size=64"))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "1-1.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(UserError, match="unreadable patch.*1-1.h5: corrupt or truncated"):
        train(_bad_cfg(tmp_path, "data=h5", f"data.root={corrupt}", "data.patch_size=64"))


def test_skip_missing_trains_on_the_rest(demo_root, tmp_path):
    names = (demo_root / "train.txt").read_text().split()[:6] + ["no-such-1"]
    lst = write_list(tmp_path / "train.txt", names)
    summary = train(_bad_cfg(tmp_path, "data=h5", f"data.root={demo_root / 'data'}", "data.patch_size=64",
                             f"data.train_list={lst}", f"data.val_list={demo_root / 'val.txt'}", "data.skip_missing=true",
                             "trainer.max_epochs=1", "data.epoch_length=4"))
    assert summary["train_patches"] == 6


def _cli(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "cropseg.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_runs_in_its_own_folder_and_bad_input_is_one_line(tmp_path):
    args = [a for a in tiny_demo_overrides(tmp_path) if not a.startswith("paths.output_dir")]  # Hydra's own folder
    # Any Trainer argument is a key: no '+' needed.
    ok = _cli(args + ["trainer=debug", "trainer.limit_val_batches=1", "trainer.gradient_clip_val=1.0"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / ".hydra" / "config.yaml").exists()
    # The run log holds the INFO lines: Lightning's and the closing summary (also on the console, plainly).
    run_log = (runs[0] / "train.log").read_text()
    assert "[pytorch_lightning" in run_log and "[cropseg.train][INFO] - \ncropseg train: " in run_log
    assert "cropseg train: " in ok.stdout and "[cropseg.train]" not in ok.stdout
    bad = _cli(["data=h5"], tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: data.root is required (e.g. data.root=...)"
    assert "Traceback" not in bad.stderr
    unknown = _cli(["model=segnet"], tmp_path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert "model='segnet' is not a known option of model; choose one of:" in unknown.stderr and "unet" in unknown.stderr


@needs(SEED_DIR)
def test_real_earth_engine_patches_train_with_overrides_only(tmp_path):
    """The seed-format data trains with nothing but command-line overrides and leaves a loadable checkpoint."""
    res = _cli(["data=h5", f"data.root={SEED_DIR / 'data'}", f"data.train_list={SEED_DIR / 'train.txt'}",
                f"data.val_list={SEED_DIR / 'val.txt'}", "data.crop_size=96", "data.oversample=1.0",
                f"paths.log_dir={tmp_path / 'logs'}", *[t for t in TINY if not t.startswith("callbacks")]], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = list((tmp_path / "logs").rglob("last.ckpt"))
    assert len(ckpts) == 1
    model, card = load_cropland_model(ckpts[0])
    hp = read_checkpoint(ckpts[0])["hyper_parameters"]
    assert card.patch_size == 192 and hp["train_config"]["data"]["root"].endswith("seed-c2-test/data")


def test_every_trainer_argument_is_a_key_with_lightnings_default(tmp_path):
    import inspect

    import pytorch_lightning as pl

    cfg = compose("train", [f"paths.output_dir={tmp_path}", "trainer.limit_train_batches=2", "trainer.max_time=null"])
    sig = inspect.signature(pl.Trainer.__init__).parameters
    assert set(sig) - set(cfg.trainer) == {"self", "logger", "callbacks"}  # those come from their own groups
    assert cfg.trainer.limit_train_batches == 2
    ours = {"default_root_dir", "max_epochs", "accelerator", "devices", "precision", "log_every_n_steps",
            "deterministic", "use_distributed_sampler", "num_sanity_val_steps", "limit_train_batches"}
    for name, value in cfg.trainer.items():
        if name not in ours:
            assert value == sig[name].default, name


def test_seed_c2_usage_line_works(tmp_path):
    """The command in conf/experiment/seed_c2.yaml's header composes as written."""
    line = next(ln for ln in (CONFIG_DIR / "experiment" / "seed_c2.yaml").read_text().splitlines()
                if "python -m cropseg.train" in ln)
    args = shlex.split(line.split("python -m cropseg.train", 1)[1].replace("[", "").replace("]", ""))
    cfg = compose("train", args + [f"paths.output_dir={tmp_path}"])
    assert cfg.data.root.endswith("seed-c2-test/data") and cfg.data.train_list.endswith("seed-c2-test/train.txt")
