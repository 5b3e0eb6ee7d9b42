"""The packed patch store: built from real H5 patches, read back as the H5 path reads them, trained on."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cropseg.bands import Normalization
from cropseg.config import compose, datamodule_from_config, to_container
from cropseg.data import store as store_mod
from cropseg.data.datamodule import CroplandDataModule
from cropseg.data.patches import write_list
from cropseg.data.store import PackedStore, pack
from cropseg.errors import UserError
from cropseg.train import train

from conftest import SEED_DIR, needs, tiny_overrides

EPS16 = 2.0 ** -11  # float16 relative rounding


@pytest.fixture(scope="module")
def demo_store(demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "demo.store"
    s = pack(demo_root / "data", out, workers=2)
    assert s["status"] == "built" and s["patches"] == 22 and s["read_rate"]["patches_per_s"] > 0
    return out


def _pair(root, store, size, **kw):
    a = CroplandDataModule(str(root / "data"), patch_size=size, **kw)
    b = CroplandDataModule(store=str(store), patch_size=size, **kw)
    a.setup("fit")
    b.setup("fit")
    return a, b


def _assert_same(a: CroplandDataModule, b: CroplandDataModule) -> None:
    """Index equal; masks identical; images equal within float16 rounding (float32 bands exact)."""
    for split in ("train", "val"):
        pd.testing.assert_frame_equal(a.index[split], b.index[split][a.index[split].columns])
        sa, sb = getattr(a, f"{split}_set"), getattr(b, f"{split}_set")
        assert len(sa) == len(sb) > 0
        norm = a.norm
        span = torch.tensor(np.subtract(norm.max, norm.min), dtype=torch.float32).view(-1, 1, 1)
        for i in range(len(sa)):
            x, y = sa[i], sb[i]
            assert x["name"] == y["name"]
            assert x["image"].dtype == y["image"].dtype == torch.float32 and x["image"].shape == y["image"].shape
            assert torch.equal(x["mask"], y["mask"])
            raw = torch.tensor(np.maximum(np.abs(norm.min), np.abs(norm.max)), dtype=torch.float32).view(-1, 1, 1)
            tol = raw * EPS16 / span + 1e-6
            assert ((x["image"] - y["image"]).abs() <= tol).all(), x["name"]
            dem = list(a.bands).index("Dem")
            assert torch.equal(x["image"][dem], y["image"][dem]), "Dem is stored as float32: exact"
            ignored = y["mask"][0] == 255
            assert (y["image"][:, ignored] == 0).all()


def test_demo_store_reads_as_the_h5_files(demo_root, demo_store):
    a, b = _pair(demo_root, demo_store, 64, train_list=str(demo_root / "train.txt"), val_list=str(demo_root / "val.txt"))
    assert (b.index["train"].nodata_frac > 0).any() or (b.index["val"].nodata_frac > 0).any(), "demo has nodata"
    assert (b.train_set[0]["mask"] != 255).any()
    _assert_same(a, b)
    m = json.loads((demo_store / "manifest.json").read_text())
    assert m["dtypes"]["Dem"] == "float32" and m["dtypes"]["NIR"] == "float16" and m["dtypes"]["label"] == "uint8"
    assert not (demo_store / ".parts").exists()
    # Without lists: the same seeded split of all patches as the H5 path.
    a, b = _pair(demo_root, demo_store, 64)
    assert a.index["val"].name.tolist() == b.index["val"].name.tolist()


def test_subset_of_bands_and_crops(demo_root, demo_store):
    bands = ("NDVI", "R", "Dem")
    kw = dict(bands=bands, normalization=Normalization.default(bands), train_list=str(demo_root / "train.txt"),
              val_list=str(demo_root / "val.txt"))
    a, b = _pair(demo_root, demo_store, 64, **kw)
    _assert_same(a, b)
    c = CroplandDataModule(store=str(demo_store), patch_size=64, crop_size=32, batch_size=4, **kw)
    c.setup("fit")
    batch = next(iter(c.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)


def test_workers_that_only_read_give_the_same_batches(demo_root, demo_store, tmp_path):
    """data.augment_on_device: workers send stored float16/uint8 values, normalization and the
    nodata mask run on the batch after transfer; batches are bit-identical to finished items."""
    bands = ("Dem", "NIR", "B", "NDVI")  # reordered, float32 and float16 bands mixed
    kw = dict(store=str(demo_store), patch_size=64, crop_size=48, batch_size=6, bands=bands,
              normalization=Normalization.default(bands), epoch_length=36, seed=5,
              train_list=str(write_list(tmp_path / "train.txt", ["900-0", "900-5", "900-9", "901-19"])),  # 2 with nodata
              val_list=str(write_list(tmp_path / "val.txt", ["900-4", "901-14"])))
    finished, raw = CroplandDataModule(**kw), CroplandDataModule(augment_on_device=True, **kw)
    finished.setup("fit")
    raw.setup("fit")
    seen_nodata = False
    for a, b in zip(finished.train_dataloader(), raw.train_dataloader(), strict=True):
        assert b["image16"].dtype == torch.float16 and b["label8"].dtype == torch.uint8 and "image" not in b
        assert b["image16"].shape == (6, 3, 48, 48) and b["image32"].shape == (6, 1, 48, 48)
        b = raw.device_transforms(b, training=False)
        assert set(b) == set(a) and a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        seen_nodata |= bool((a["mask"] == 255).any())
    assert seen_nodata, "the demo patches have nodata: the mask path was exercised"
    val = next(iter(raw.val_dataloader()))
    assert val["image"].dtype == torch.float32, "validation items stay finished in the workers"


def test_device_transforms_are_automatic_by_accelerator(demo_store, tmp_path):
    """data.augment_on_device and data.pin_memory default to auto: on for a GPU trainer, off on the CPU."""
    import pytorch_lightning as pl

    cfg = to_container(compose("train", ["data=packed", f"data.store={demo_store}", "data.patch_size=64",
                                        f"paths.output_dir={tmp_path}"]))
    assert cfg["data"]["augment_on_device"] == "auto" and cfg["data"]["pin_memory"] == "auto"
    dm = datamodule_from_config(cfg["data"])
    dm.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    dm.setup("fit")
    assert dm.augment_on_device is False and dm.pin_memory is False and not dm.train_set.raw
    assert next(iter(dm.train_dataloader()))["image"].dtype == torch.float32  # augmented in the workers
    cfg["data"]["augment_on_device"] = "yes"
    with pytest.raises(UserError, match=r"^data.augment_on_device='yes': expected true, false or auto$"):
        datamodule_from_config(cfg["data"])


@needs(SEED_DIR)
def test_real_patches_store_reads_as_the_h5_files(tmp_path):
    out = tmp_path / "seed.store"
    s = pack(SEED_DIR / "data", out, workers=2)
    assert s["patches"] == 50 and s["bytes"] > 0
    a, b = _pair(SEED_DIR, out, 192, train_list=str(SEED_DIR / "train.txt"), val_list=str(SEED_DIR / "val.txt"))
    _assert_same(a, b)


def test_interrupted_build_is_refused_then_resumed(demo_root, tmp_path, monkeypatch):
    out = tmp_path / "s.store"
    monkeypatch.setattr(store_mod, "CHUNK", 8)
    real = store_mod._pack_chunk
    calls = []

    def crash_on_second(job):
        calls.append(job["start"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the build dies after one finished chunk
        return real(job)

    monkeypatch.setattr(store_mod, "_pack_chunk", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        pack(demo_root / "data", out, workers=1)
    assert not (out / "manifest.json").exists()
    with pytest.raises(UserError, match=r"s.store: incomplete packed store \(its build was interrupted\)"):
        PackedStore(out)
    dm = CroplandDataModule(store=str(out), patch_size=64)
    with pytest.raises(UserError, match="incomplete packed store"):
        dm.setup("fit")
    monkeypatch.setattr(store_mod, "_pack_chunk", real)
    s = pack(demo_root / "data", out, workers=1)
    assert s["status"] == "resumed" and s["resumed_from"] == 8 and s["packed_now"] == 14
    a, b = _pair(demo_root, out, 64, train_list=str(demo_root / "train.txt"), val_list=str(demo_root / "val.txt"))
    _assert_same(a, b)
    assert pack(demo_root / "data", out)["status"] == "already complete"


def test_training_from_the_store(demo_root, demo_store, tmp_path):
    cfg = compose("train", tiny_overrides(tmp_path) + [
        "data=packed", f"data.store={demo_store}", "data.patch_size=64", "data.crop_size=48",
        f"data.train_list={demo_root / 'train.txt'}", f"data.val_list={demo_root / 'val.txt'}",
        "data.augment_on_device=true", "data.epoch_length=8", "logger=csv"])
    summary = train(cfg)
    assert summary["train_patches"] == len((demo_root / "train.txt").read_text().split())
    assert Path(summary["last_checkpoint"]).exists()


def test_bad_inputs_are_one_line_errors(demo_root, demo_store, tmp_path):
    with pytest.raises(UserError, match=r"data.store=.*nowhere: packed store not found"):
        CroplandDataModule(store=str(tmp_path / "nowhere"), patch_size=64).setup("fit")
    with pytest.raises(UserError, match="patch size 64x64 differs from data.patch_size=128"):
        CroplandDataModule(store=str(demo_store), patch_size=128).setup("fit")
    three = tmp_path / "three.store"
    pack(demo_root / "data", three, bands=["B", "G", "R"], measure=False)
    with pytest.raises(UserError, match=r"built with bands \['B', 'G', 'R'\], data.bands asks for .*'Dem'\]"):
        CroplandDataModule(store=str(three), patch_size=64).setup("fit")
    lst = write_list(tmp_path / "train.txt", ["900-0", "no-such-1"])
    with pytest.raises(UserError, match=r"train.txt: 1 listed patch\(es\) not found in the packed store .*no-such-1"):
        CroplandDataModule(store=str(demo_store), patch_size=64, train_list=str(lst)).setup("fit")
    broken = tmp_path / "broken.store"
    shutil.copytree(demo_store, broken)
    (broken / "label.npy").unlink()
    with pytest.raises(UserError, match=r"label.npy: store file missing"):
        PackedStore(broken)
    with open(broken / "image16.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserError, match=r"image16.npy: store file has 1000 bytes"):
        PackedStore(broken)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="non-empty folder that is not a packed store"):
        pack(demo_root / "data", other)
    with pytest.raises(UserError, match="holds a store of different input.*overwrite=true"):
        pack(demo_root / "data", three)  # all bands now: different input


def test_pack_command_line(demo_root, tmp_path):
    out = tmp_path / "cli.store"
    cmd = [sys.executable, "-m", "cropseg.cli", "prepare", "pack", f"root={demo_root / 'data'}", f"out={out}",
           f"list={demo_root / 'train.txt'},{demo_root / 'val.txt'}", "workers=2"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "22 patch(es)" in ok.stdout and "MB" in ok.stdout and "measured read rate" in ok.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout
    bad = subprocess.run(cmd[:5] + [f"root={tmp_path / 'nowhere'}", f"out={out}"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == f"error: prepare pack: root={tmp_path / 'nowhere'}: folder not found"
