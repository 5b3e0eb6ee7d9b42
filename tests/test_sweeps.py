"""Multirun sweeps, the runs table and an Optuna search, through the real command line."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from cropseg.runs import main as runs_main

from conftest import tiny_demo_overrides


def _cli(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "cropseg.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _tiny(tmp):
    # Hydra makes each job's folder; no previews/tensorboard to stay fast.
    return [a for a in tiny_demo_overrides(tmp) if not a.startswith("paths.output_dir")] + [
        "logger=csv", "callbacks.previews=null"]


def test_2x2_sweep_each_run_in_its_own_folder_and_summary_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    res = _cli(["-m", "model=unet,pspnet", "loss=bce_dice,jaccard", *_tiny(tmp_path), f"hydra.sweep.dir={sweep}"],
               tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 4
    # <n>_<short readable>, nothing Hydra would need quoted: a path from here goes back as an override.
    assert sorted(r.name for r in runs) == ["0_model-unet_loss-bce_dice", "1_model-unet_loss-jaccard",
                                            "2_model-pspnet_loss-bce_dice", "3_model-pspnet_loss-jaccard"]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    best = next(runs[0].glob("checkpoints/epoch*.ckpt"))
    assert OverridesParser.create().parse_override(f"ckpt={best}").value() == str(best)
    for run in runs:
        assert (run / ".hydra" / "config.yaml").exists() and (run / "summary.json").exists()
        env = yaml.safe_load((run / "environment.json").read_text())  # JSON is YAML
        assert env["versions"]["torch"] and "revision" in env["git"] and "cropseg.train" in " ".join(env["command"])

    assert runs_main(["summarize", str(sweep)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(sweep / "runs_summary.csv")
    assert (sweep / "runs_summary.md").read_text().startswith("| rank | model | loss | val/iou")
    assert len(table) == 4 and list(table["rank"]) == [1, 2, 3, 4]
    assert sorted(zip(table["model"], table["loss"])) == [("pspnet", "bce_dice"), ("pspnet", "jaccard"),
                                                          ("unet", "bce_dice"), ("unet", "jaccard")]
    assert table["val/iou"].is_monotonic_decreasing
    for _, row in table.iterrows():  # each row is its own run: overrides and metrics from that folder
        run = sweep / row["run"]
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"model={row['model']}" in overrides and f"loss={row['loss']}" in overrides
        summary = yaml.safe_load((run / "summary.json").read_text())
        assert row["val/iou"] == pytest.approx(summary["best_val_iou"])
        assert row["best_checkpoint"] == summary["best_checkpoint"]
    assert f"checkpoint: {table['best_checkpoint'][0]}" in out


def test_sweep_bad_input_is_clear(tmp_path, capsys):
    unknown = _cli(["-m", "model=segnet", *_tiny(tmp_path), f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert "model='segnet' is not a known option of model; choose one of:" in unknown.stderr and "pspnet" in unknown.stderr
    with pytest.raises(SystemExit) as e:
        runs_main(["summarize", str(tmp_path / "empty")])
    assert e.value.code == 2 and "folder not found" in capsys.readouterr().err


def test_optuna_search_3_trials_resumes_and_finds_best_checkpoint(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    logs = tmp_path / "logs"
    # The tiny overrides fix data.batch_size and model.encoder: a fixed value takes them out of the search.
    args = ["-m", "hparams_search=optuna", *_tiny(tmp_path), "hydra.sweeper.sampler.n_startup_trials=2"]
    res = _cli([*args, "hydra.sweeper.n_trials=3"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    db = logs / "train" / "optuna" / "cropseg.db"
    assert db.exists()
    study = optuna.load_study(study_name="cropseg", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert {"optimizer.lr", "optimizer.weight_decay", "loss"} <= set(study.best_params)
    sweeps = sorted((logs / "train" / "optuna" / "cropseg").iterdir())
    results = yaml.safe_load((sweeps[0] / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(study.best_value)

    # Interrupted or not: the same command again continues the same study.
    res = _cli([*args, "hydra.sweeper.n_trials=1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    study = optuna.load_study(study_name="cropseg", storage=f"sqlite:///{db}")
    assert len(study.trials) == 4

    # The best trial's checkpoint: first row of the runs table over the whole search.
    assert runs_main(["summarize", str(sweeps[0])]) == 0
    table = pd.read_csv(sweeps[0] / "runs_summary.csv")
    assert len(table) == 3 and table["val/iou"][0] == pytest.approx(results["best_value"])
    assert table["best_checkpoint"][0].endswith(".ckpt") and "optuna (" in capsys.readouterr().out


def test_empty_search_space_is_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    res = _cli(["-m", "hparams_search=optuna", *_tiny(tmp_path), "hydra.sweeper.params=null",
                "hydra.sweeper.n_trials=1"], tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: hparams_search: the search space is empty")
    assert "Traceback" not in res.stderr


def test_run_dirname_is_short_readable_and_safe():
    from cropseg.config import run_dirname

    assert run_dirname(3, ["model=unet", "loss.terms=bce+0.5*dice", "optimizer.lr=0.001"]) == \
        "3_model-unet_terms-bce+0.5-dice_lr-0.001"
    assert run_dirname(0, ["paths.log_dir=/x", "data.root=/data/patches", "seed=1"]) == "0"
    # what every job of the sweep shares (given as such on the command line) is left out
    assert run_dirname(1, ["model=unet", "trainer.max_epochs=2"], fixed=["-m", "model=unet,fpn", "trainer.max_epochs=2"]) \
        == "1_model-unet"
    # ... also when Hydra writes a shared value back in another form (1e-3 -> 0.001)
    assert run_dirname(2, ["model=fpn", "optimizer.lr=0.001"], fixed=["-m", "model=unet,fpn", "optimizer.lr=1e-3"]) \
        == "2_model-fpn"
    assert run_dirname(0, ["optimizer.lr=0.001"], fixed=["-m", "optimizer.lr=range(0.001,0.003,0.001)"]) == "0_lr-0.001"
    long = run_dirname(12, [f"k{i}=value{i}" for i in range(30)])
    assert long.startswith("12_k0-value0_") and len(long) <= 63 and "=" not in long and "," not in long


def test_summarize_logs_lists_training_runs_only(tiny_checkpoint, tmp_path, capsys):
    """A whole logs/ tree: a predict run and a config that failed before training are not training runs;
    a training run named by the user (task_name=my_sweep, as sweeps are) is one."""
    import shutil

    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    logs = tmp_path / "logs"
    shutil.copytree(tiny_checkpoint.parents[1], logs / "train" / "runs" / "2026-01-01_00-00-00_000000")
    named = logs / "my_sweep" / "runs" / "2026-01-02_00-00-00_000000"
    shutil.copytree(tiny_checkpoint.parents[1], named)
    from cropseg.config import compose

    (named / ".hydra").mkdir()
    (named / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose("train", ["task_name=my_sweep"])))
    bad = _cli(["data=h5", f"paths.log_dir={logs}"], tmp_path)  # data.root missing: stops before training
    assert bad.returncode == 2
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=7, dtype="float32", crs="EPSG:32622",
                       transform=from_origin(0, 0, 30, 30)) as f:
        f.write(np.random.default_rng(0).random((7, 64, 64), dtype=np.float32))
        f.descriptions = ("B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem")
    pred = subprocess.run([sys.executable, "-m", "cropseg.predict", f"ckpt={tiny_checkpoint}", f"input={scene}",
                           f"output={tmp_path / 'maps'}", f"paths.log_dir={logs}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert "cropseg predict: 1 done" in pred.stdout
    assert "[cropseg.predict][INFO] - cropseg predict: 1 done" in next((logs / "predict" / "runs").glob("*/predict.log")).read_text()
    assert len(list((logs / "train" / "runs").iterdir())) == 2 and len(list((logs / "predict" / "runs").iterdir())) == 1

    assert runs_main(["summarize", str(logs)]) == 0
    table = pd.read_csv(logs / "runs_summary.csv")
    assert sorted(table["run"]) == ["my_sweep/runs/2026-01-02_00-00-00_000000", "train/runs/2026-01-01_00-00-00_000000"]
    assert set(table["status"]) == {"finished"}
