"""Training you can leave running: last.ckpt every epoch, kill -9 / SIGTERM and resume, held-out test.

The interrupted runs are real training subprocesses that a callback kills from inside at a chosen
batch (SIGKILL: nothing is saved; SIGTERM: what a cluster sends before preempting a job).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl

from cropseg.config import compose
from cropseg.data.patches import read_list, write_list
from cropseg.models.checkpoint import read_checkpoint
from cropseg.models.module import SegmentationModule
from cropseg.train import train

from conftest import tiny_demo_overrides, tiny_overrides


class KillAt(pl.Callback):
    """Sends its own process the signal in ``CROPSEG_TEST_KILL`` (``SIGKILL:epoch:batch``) at that batch."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        spec = os.environ.get("CROPSEG_TEST_KILL")
        if spec:
            sig, epoch, index = spec.split(":")
            if trainer.current_epoch == int(epoch) and batch_idx == int(index):
                os.kill(os.getpid(), getattr(signal, sig))


def _cli(args, cwd, kill=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("CROPSEG_TEST_KILL", None)
    env["OMP_NUM_THREADS"] = "1"  # tiny networks: one thread is as fast, and idles nothing on a shared machine
    if kill:
        env["CROPSEG_TEST_KILL"] = kill
    return subprocess.run([sys.executable, "-m", "cropseg.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


#: A network of 0.4 M parameters: checkpoints of 5 MB instead of 170 MB, written every epoch here.
SMALL = ["model.encoder=tu-mobilenetv3_small_050", "+model.arch_kwargs.decoder_channels=[32,16,16,16,16]"]


def _args(tmp, *extra):
    # Augmentation on: samples and their crops and augmentations depend on (seed, epoch, rank, position) only
    # (cropseg.data.sampler.Draw), so the resumed epochs draw exactly what the uninterrupted run's drew and
    # the two trainings can be compared number for number.
    return [a for a in tiny_demo_overrides(tmp, size=32) if not a.startswith("paths.output_dir")] + SMALL + [
        "logger=csv", "callbacks.previews=null", "callbacks.curves=null", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "+callbacks.kill._target_=test_resume.KillAt",
        *extra]


def _val_curve(run: Path) -> list[float]:
    return pd.read_csv(run / "metrics.csv").groupby("epoch")["val/iou"].mean().dropna().tolist()


def test_kill_9_in_epoch_3_of_4_then_resume_gives_the_uninterrupted_best(tmp_path):
    args = _args(tmp_path, "trainer.max_epochs=4")  # 2 batches per epoch
    full = _cli([*args, f"hydra.run.dir={tmp_path / 'full'}"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    run = tmp_path / "run"
    killed = _cli([*args, f"hydra.run.dir={run}"], tmp_path, kill="SIGKILL:2:1")
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the end of epoch 2, whether or not it was the best

    # Only the checkpoint on the command line: the run's own overrides, in the run's own folder.
    resumed = _cli([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "logs" / "train" / "runs").exists()  # no second run folder
    a = json.loads((tmp_path / "full" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert b["epochs"] == 4 and b["resumed_from"].endswith("last.ckpt")
    assert b["best_val_iou"] == pytest.approx(a["best_val_iou"], abs=1e-6)
    assert Path(b["best_checkpoint"]).name == Path(a["best_checkpoint"]).name
    assert Path(b["best_checkpoint"]).parent == run / "checkpoints" and Path(b["best_checkpoint"]).is_file()
    assert _val_curve(run) == pytest.approx(_val_curve(tmp_path / "full"), abs=1e-6)
    # metrics.csv holds the whole training once: the rows before the kill, then the resumed ones.
    rows = [pd.read_csv(r / "metrics.csv")[["epoch", "step"]].fillna(-1).values.tolist() for r in (tmp_path / "full", run)]
    assert rows[0] == rows[1]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert "resume: from" in (run / "train.log").read_text()


def test_sigterm_saves_last_checkpoint_mid_epoch_and_the_run_resumes(tmp_path):
    args = _args(tmp_path, "trainer.max_epochs=2", "data.epoch_length=12")  # 3 batches per epoch
    run = tmp_path / "run"
    term = _cli([*args, f"hydra.run.dir={run}"], tmp_path, kill="SIGTERM:0:1")
    assert term.returncode == 143, term.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert term.stderr.strip().splitlines()[-1] == f"interrupted (SIGTERM) in epoch 0, step " \
        f"{read_checkpoint(last)['global_step']}; resume with ckpt_path={last}"
    assert 0 < read_checkpoint(last)["global_step"] < 3  # saved inside epoch 0, not at an epoch end
    resumed = _cli([f"ckpt_path={last}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_checkpoint(last)["global_step"] == 6
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def _split_lists(demo_root, tmp_path):
    val = read_list(demo_root / "val.txt")
    return (write_list(tmp_path / "val.txt", val[:2]), write_list(tmp_path / "test.txt", val[2:]), len(val) - 2)


@pytest.fixture
def one_thread():
    """Tiny networks: one thread is as fast, and does not spin against the other processes of a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_last_checkpoint_every_epoch_best_apart_and_best_tested_on_held_out_list(demo_root, tmp_path, one_thread):
    val, test, n_test = _split_lists(demo_root, tmp_path)
    # Monitoring the epoch number (mode min) the best is epoch 0 for good: later epochs never improve.
    cfg = compose("train", tiny_overrides(tmp_path) + SMALL + [
        "logger=csv", "data=h5", f"data.root={demo_root / 'data'}", "data.patch_size=64",
        f"data.train_list={demo_root / 'train.txt'}", f"data.val_list={val}", f"data.test_list={test}",
        "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"])
    summary = train(cfg)
    run = tmp_path / "run"
    assert read_checkpoint(summary["last_checkpoint"])["epoch"] == 1
    assert Path(summary["best_checkpoint"]).name.startswith("epoch000-")
    assert summary["test_patches"] == n_test
    metrics = pd.read_csv(run / "metrics.csv")
    for m in ("test/iou", "test/f1", "test/precision", "test/recall", "test/accuracy", "test/kappa", "test/loss"):
        assert summary[m] == pytest.approx(metrics[m].dropna().iloc[-1])
    # The tested weights are the best checkpoint's, not the last epoch's.
    from cropseg.config import datamodule_from_config, to_container

    dm = datamodule_from_config(to_container(cfg)["data"])
    dm.setup()
    again = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        SegmentationModule.from_checkpoint(summary["best_checkpoint"]), dataloaders=dm.test_dataloader(), verbose=False)[0]
    assert summary["test/iou"] == pytest.approx(again["test/iou"], abs=1e-6)

    from cropseg.runs import main as runs_main

    assert runs_main(["summarize", str(run)]) == 0
    table = pd.read_csv(run / "runs_summary.csv")
    assert table["test/iou"][0] == pytest.approx(summary["test/iou"])


def test_test_list_overlapping_training_is_refused(demo_root, tmp_path):
    from cropseg.errors import UserError

    cfg = compose("train", tiny_overrides(tmp_path) + [
        "logger=csv", "data=h5", f"data.root={demo_root / 'data'}", "data.patch_size=64",
        f"data.train_list={demo_root / 'train.txt'}", f"data.val_list={demo_root / 'val.txt'}",
        f"data.test_list={demo_root / 'val.txt'}"])
    with pytest.raises(UserError, match=r"data.test_list=.*val.txt: \d+ patch\(es\) also in the training or validation"):
        train(cfg)


def test_resume_command_line_takes_the_runs_overrides(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cropseg.train import resume_overrides

    run = tmp_path / "it's a run, really"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- data=h5\n- data.root=/p\n- trainer.max_epochs=10\n")
    last = run / "checkpoints" / "last.ckpt"
    args = resume_overrides([f"ckpt_path={last}", "trainer.max_epochs=20"])
    assert args[:-1] == ["data=h5", "data.root=/p", f"ckpt_path={last}", "trainer.max_epochs=20"]  # given ones win
    run_dir = OverridesParser.create().parse_override(args[-1])
    assert run_dir.key_or_group == "hydra.run.dir" and run_dir.value() == str(run)
    # A best checkpoint, or resume_in_place=false: the run's config, but a new folder.
    best = resume_overrides([f"ckpt_path={run / 'checkpoints' / 'epoch003-iou0.5.ckpt'}"])
    assert best[:2] == ["data=h5", "data.root=/p"] and not any(a.startswith("hydra.run.dir") for a in best)
    assert not any(a.startswith("hydra.run.dir") for a in resume_overrides([f"ckpt_path={last}", "resume_in_place=false"]))
    assert resume_overrides(["-m", f"ckpt_path={last}"]) == ["-m", f"ckpt_path={last}"]
    assert resume_overrides([f"ckpt_path={tmp_path / 'x.ckpt'}"]) == [f"ckpt_path={tmp_path / 'x.ckpt'}"]
