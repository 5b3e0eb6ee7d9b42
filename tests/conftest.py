"""Shared fixtures: a small demo dataset, a tiny trained checkpoint, the real data folder.

Everything is real: H5 files written by cropseg, Hydra configs composed from conf/,
Lightning Trainers that run. Sizes are tiny so the suite stays fast on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_DIR = SHARED_DATA / "seed-c2-test"
LANDSAT5 = SHARED_DATA / "landsat5-tm-subset.tif"

#: Overrides that make any training run tiny (CPU, few steps, small patches).
TINY = [
    "model.encoder=resnet18",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.epoch_length=8",
    "callbacks.previews.num_samples=2",
]


def tiny_overrides(tmp: Path) -> list[str]:
    """TINY plus data, log and output folders under ``tmp``."""
    return TINY + [f"paths.data_dir={tmp / 'data'}", f"paths.log_dir={tmp / 'logs'}", f"paths.output_dir={tmp / 'run'}"]


def tiny_demo_overrides(tmp: Path, size: int = 64, num_patches: int = 22) -> list[str]:
    return tiny_overrides(tmp) + [
        f"data.generate_demo.size={size}",
        f"data.generate_demo.num_patches={num_patches}",
        f"data.patch_size={size}",
        "data.crop_size=null",
    ]


def needs(path: Path):
    """Skip a test when real data from ../shared/data is absent (a fresh clone has none)."""
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path} (../shared/data absent)")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["CROPSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A 22-patch demo dataset of 64×64 patches: root/data/*.h5, train.txt, val.txt."""
    from cropseg.data.demo import DemoSpec, generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, DemoSpec(num_patches=22, size=64, seed=0))
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a tiny Unet-ResNet18 trained for one short epoch on the demo data."""
    from cropseg.config import compose
    from cropseg.train import train

    tmp = tmp_path_factory.mktemp("tiny-train")
    cfg = compose("train", tiny_demo_overrides(tmp) + ["logger=csv"])
    summary = train(cfg)
    return Path(summary["last_checkpoint"])
