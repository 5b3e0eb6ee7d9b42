"""What runs on the GPU when training from a packed store: checked against the CPU's results.

Skipped without CUDA (CI has none); `bench/gpu_check.sh` runs them on a GPU machine.
CROPSEG_TEST_DEVICE=cpu runs the same code on the CPU (a dry run of this file).
"""

import os

import pytest
import torch
from torch.utils.data import default_collate

from cropseg.bands import Normalization
from cropseg.data.datamodule import CroplandDataModule
from cropseg.data.store import StoreDataset, pack
from cropseg.data.transforms import IGNORE, AugmentConfig, augment

DEVICE = os.environ.get("CROPSEG_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def store(demo_root, tmp_path_factory):
    return pack(demo_root / "data", tmp_path_factory.mktemp("gpu") / "demo.store", workers=2, measure=False)["out"]


def test_raw_store_batches_finish_on_the_device_as_in_the_workers(demo_root, store):
    bands = ("Dem", "NIR", "B", "NDVI")
    dm = CroplandDataModule(store=str(store), patch_size=64, bands=bands, normalization=Normalization.default(bands),
                            augment_on_device=True, val_fraction=0.5, seed=1)
    dm.setup("fit")
    cpu_way = StoreDataset(dm.store, dm.train_set.names, dm.bands, dm.norm)  # items finished in the workers
    finished = default_collate([cpu_way[i] for i in range(len(cpu_way))])
    batch = default_collate([dm.train_set[i] for i in range(len(dm.train_set))])
    on_device = dm.device_transforms({k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in batch.items()},
                                     training=False)
    assert on_device["image"].device.type == torch.device(DEVICE).type
    assert torch.equal(on_device["image"].cpu(), finished["image"])
    assert torch.equal(on_device["mask"].cpu(), finished["mask"])
    assert (finished["mask"] == IGNORE).any(), "nodata pixels were part of the check"


def test_batched_augmentation_on_the_device_matches_the_cpu():
    g = torch.Generator().manual_seed(2)
    image, label = torch.rand(9, 7, 48, 48, generator=g), (torch.rand(9, 1, 48, 48, generator=g) > 0.5).float()
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, affine=0.5, gamma=0.5, blur=0.5)
    cpu = augment(image, label, cfg, torch.Generator().manual_seed(7))
    dev = augment(image.to(DEVICE), label.to(DEVICE), cfg, torch.Generator().manual_seed(7))
    assert torch.allclose(dev[0].cpu(), cpu[0], atol=1e-4)
    # Nearest-neighbour label sampling may round a rare exactly-halfway coordinate differently.
    assert (dev[1].cpu() != cpu[1]).float().mean() < 1e-3


def test_lightning_on_the_device_trains_from_the_store_with_auto_settings(demo_root, store, tmp_path):
    import pytorch_lightning as pl

    from cropseg.models.module import SegmentationModule

    dm = CroplandDataModule(store=str(store), patch_size=64, crop_size=48, batch_size=4, epoch_length=8,
                            augment=AugmentConfig(), augment_on_device="auto", pin_memory="auto", num_workers=2)
    trainer = pl.Trainer(accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    module = SegmentationModule(arch="unet", encoder="resnet18", patch_size=48)
    trainer.fit(module, datamodule=dm)
    assert dm.augment_on_device is (DEVICE == "cuda") and dm.pin_memory is (DEVICE == "cuda")
    assert dm.train_set.raw is (DEVICE == "cuda")
    assert trainer.global_step == 2
