"""Lightning training throughput vs a plain PyTorch loop on the same model and batches.

Run: python bench/bench_train_step.py [--arch unet --encoder resnet34 --size 192 --batch 8 --steps 12]
Both loops use the same SegmentationModule network, loss, optimizer and in-memory batches,
so the ratio is the cost of Lightning and cropseg's module (logging, metrics) per step.
On a GPU add --precision bf16-mixed --channels-last. With --store STORE (a `cropseg prepare
pack` store of the same patch size) a third row trains through the real DataModule from the
store, augmenting on the device (data=packed data.augment_on_device=true): the end-to-end rate
a user gets, data loading included, against the plain loop on in-memory tensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

import pytorch_lightning as pl  # noqa: E402

from cropseg.models.module import SegmentationModule  # noqa: E402


class _Timer(pl.Callback):
    """Times steps ``warmup`` .. ``total - 1``; synchronizes the GPU only at the ends, as the plain loop
    does, so that the host may queue work ahead."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total, self.t0, self.t1, self.n = warmup, total, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, idx):
        if idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, idx):
        if idx >= self.warmup:
            self.n += batch["image"].shape[0]
        if idx == self.total - 1 and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t1 = time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--store", type=Path, default=None, help="also train from this packed store (DataModule)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for --store")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    batches = [{"image": torch.rand(a.batch, 7, a.size, a.size),
                "mask": (torch.rand(a.batch, 1, a.size, a.size) > 0.7).float()} for _ in range(4)]

    def make() -> SegmentationModule:
        torch.manual_seed(0)
        return SegmentationModule(arch=a.arch, encoder=a.encoder, patch_size=a.size, channels_last=a.channels_last,
                                  optimizer={"name": "adamw", "lr": 3e-4}, scheduler=None)

    # Plain PyTorch: forward, loss, backward, step; nothing else.
    module = make().to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-4)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=a.precision.startswith("bf16"))
    n, t0 = 0, 0.0
    for i in range(a.steps + a.warmup):
        if i == a.warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        b = batches[i % len(batches)]
        x, y = b["image"].to(device, non_blocking=True), b["mask"].to(device, non_blocking=True)
        with autocast:
            logits = module(x)
        loss, _ = module.loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0] if i >= a.warmup else 0
    if device == "cuda":
        torch.cuda.synchronize()
    plain = n / (time.perf_counter() - t0)

    # Lightning with cropseg's module: logging and torchmetrics included.
    timer = _Timer(a.warmup, a.steps + a.warmup)
    data = [batches[i % len(batches)] for i in range(a.steps + a.warmup)]
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer = pl.Trainer(max_epochs=1, accelerator="auto", devices=1, precision=a.precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], num_sanity_val_steps=0)
    trainer.fit(make(), train_dataloaders=loader)
    light = timer.n / (timer.t1 - timer.t0)
    rows = [["plain PyTorch, in-memory batches", plain, 1.0], ["cropseg Lightning, in-memory batches", light, light / plain]]
    if a.store is not None:
        fed = _from_store(a, make())
        rows.append([f"cropseg Lightning, from the store ({a.workers} workers, aug on device)", fed, fed / plain])
    print(f"Training step, {a.arch}-{a.encoder}, batch {a.batch}x7x{a.size}x{a.size}, {a.precision}, "
          f"channels_last={a.channels_last}, {a.steps} timed steps, {machine()}\n")
    print(table(["loop", "img/s", "ratio"], rows))


def _from_store(a, module: SegmentationModule) -> float:
    """img/s of Lightning training fed by CroplandDataModule from a packed store, aug on the device."""
    from cropseg.bands import DEFAULT_BANDS, Normalization
    from cropseg.data.datamodule import CroplandDataModule
    from cropseg.data.transforms import AugmentConfig

    dm = CroplandDataModule(store=str(a.store), bands=DEFAULT_BANDS, normalization=Normalization.default(),
                            patch_size=a.size, batch_size=a.batch, num_workers=a.workers, oversample=0.5,
                            epoch_length=(a.steps + a.warmup) * a.batch, augment=AugmentConfig(),
                            augment_on_device=True, val_fraction=0.0, pin_memory=torch.cuda.is_available())
    timer = _Timer(a.warmup, a.steps + a.warmup)
    trainer = pl.Trainer(max_epochs=1, accelerator="auto", devices=1, precision=a.precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    return timer.n / (timer.t1 - timer.t0)


if __name__ == "__main__":
    main()
