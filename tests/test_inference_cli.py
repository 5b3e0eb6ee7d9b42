"""The commands as a user runs them: python -m cropseg.predict, tools/predict.py, bad input as one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import rasterio

from conftest import REPO
from cropseg.data.demo_scene import write_demo_scene


def run(args, tmp_path):
    env = dict(os.environ, CROPSEG_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_list_with_bad_scenes_reports_each_and_runs_the_rest(tiny_checkpoint, tmp_path):
    good = write_demo_scene(tmp_path / "2015_1.tif", 64, 72, seed=1)
    nodem = write_demo_scene(tmp_path / "2015_2.tif", 64, 72, seed=2, bands=["B", "G", "R", "NIR", "SWIR1"])
    nocrs = tmp_path / "2015_3.tif"
    with rasterio.open(good) as src:
        prof = dict(src.profile, crs=None)
        data, desc = src.read(), src.descriptions
    with rasterio.open(nocrs, "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = desc
    text = tmp_path / "2015_4.tif"
    text.write_text("not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text("\n".join(p.name for p in (good, nodem, nocrs, text)) + "\n")
    r = run([str(REPO / "tools" / "predict.py"), f"ckpt={tiny_checkpoint}", f"input={listing}", "output=maps"], tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, r.stderr
    assert any("2015_2.tif" in e and "Dem" in e and "SWIR1" in e for e in errors)  # which band, which it has
    assert any("2015_3.tif" in e and "CRS" in e for e in errors)
    assert any("2015_4.tif" in e and "not a readable raster" in e for e in errors)
    assert (tmp_path / "maps" / "2015_1_cropland.tif").exists()
    assert "1 done" in r.stdout and "3 failed" in r.stdout


def test_bad_checkpoint_and_unwritable_output(tiny_checkpoint, tmp_path):
    scene = write_demo_scene(tmp_path / "s.tif", 40, 40, seed=1)
    fake = tmp_path / "fake.ckpt"
    import torch

    torch.save({"state_dict": {}}, fake)
    r = run(["-m", "cropseg.predict", f"ckpt={fake}", f"input={scene}", "output=o"], tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "not a cropseg checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run(["-m", "cropseg.predict", f"ckpt={tiny_checkpoint}", f"input={scene}", f"output={blocker}/sub"], tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot write there" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run(["-m", "cropseg.predict", f"ckpt={tiny_checkpoint}", f"input={tmp_path}/none/*.tif"], tmp_path)
    assert r.returncode == 2 and "the pattern matches no scenes" in r.stderr and "Traceback" not in r.stderr


def test_cli_single_scene_and_mosaic(tiny_checkpoint, tmp_path):
    scene = write_demo_scene(tmp_path / "2012_5.tif", 50, 60, seed=4)
    r = run(["-m", "cropseg.predict", f"ckpt={tiny_checkpoint}", f"input={scene}", "output=out", "predict=original",
             "window=64", "stride=24"], tmp_path)
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "out" / "2012_5_cropland.tif") as src:
        assert src.tags()["blending"] == "mean" and src.tags()["stride"] == "24"
        assert src.shape == (50, 60) and np.any(src.read(1) != 255)
    r = run(["-m", "cropseg.cli", "mosaic", "out", "out=m.vrt"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "m.vrt").exists(), r.stderr
