"""Training DataLoader throughput: packed store vs per-patch H5 files vs the raw ceiling of the store.

Run: python bench/bench_store.py [--root DIR] [--samples N] [--repeats N] [--workers 0 2] [--out bench/results/store.md]
Uses the real Earth Engine patches in ../shared/data/seed-c2-test when present, else the
demo data; packs them into a temporary store first (and reports the build). Per-core
numbers: torch.set_num_threads(1), the loader in the main process (num_workers=0); then
2 workers. Augmentation either per patch in the loader ("aug in loader", the default) or
after transfer (data.augment_on_device=true: the loader only reads stored values, and
normalization and augmentation run on whole batches on the device; their CPU cost is
printed separately).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SEED_DIR, best_rate, loader_throughput, machine, table  # noqa: E402

from cropseg.bands import DEFAULT_BANDS, Normalization  # noqa: E402
from cropseg.data.datamodule import CroplandDataModule  # noqa: E402
from cropseg.data.store import PackedStore, format_summary, pack  # noqa: E402
from cropseg.data.transforms import AugmentConfig  # noqa: E402


def raw_store_rate(store: Path, n: int, seed: int = 1) -> float:
    s = PackedStore(store)
    rows = np.random.default_rng(seed).integers(0, s.count, n)
    t = time.perf_counter()
    for r in rows:
        s.read_raw(int(r))
    return n / (time.perf_counter() - t)


def loader_rate(n: int, workers: int, mode: str, *, root: Path | None = None, store: Path | None = None,
                size: int = 192) -> float:
    """mode: none | loader (per-patch augmentation in the DataLoader) | raw (data.augment_on_device: the
    loader only reads stored values; normalization and augmentation are left to the device)."""

    cfg = AugmentConfig()
    dm = CroplandDataModule(str(root) if root else None, store=str(store) if store else None, bands=DEFAULT_BANDS,
                            normalization=Normalization.default(), patch_size=size, batch_size=8, num_workers=workers,
                            oversample=1.0, epoch_length=n, augment=cfg if mode != "none" else None,
                            augment_on_device=mode == "raw", val_fraction=0.0, persistent_workers=False)
    dm.setup("fit")
    return loader_throughput(dm.train_dataloader())


def device_transform_ms(store: Path, batches: int = 20, batch_size: int = 8) -> float:
    """ms per sample of what data.augment_on_device runs after transfer (finishing raw store batches,
    then batched augmentation), here on the CPU with one thread; on a GPU it is a few kernels."""
    from torch.utils.data import default_collate

    dm = CroplandDataModule(store=str(store), bands=DEFAULT_BANDS, normalization=Normalization.default(),
                            batch_size=batch_size, augment=AugmentConfig(), augment_on_device=True, val_fraction=0.0)
    dm.setup("fit")
    items = [dm.train_set[i % len(dm.train_set)] for i in range(batch_size)]
    t = 0.0
    for _ in range(batches):
        batch = default_collate(items)
        t0 = time.perf_counter()
        dm.device_transforms(batch, training=True)
        t += time.perf_counter() - t0
    return t / (batches * batch_size) * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=SEED_DIR / "data" if SEED_DIR.exists() else None)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--repeats", type=int, default=2, help="best of N runs per cell")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers per row (0: main process)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # per-core numbers
    root = a.root
    if root is None:
        from cropseg.data.demo import generate_demo

        root = generate_demo("data/demo") / "data"
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    store = tmp / "bench.store"
    built = pack(root, store, workers=2)
    size = PackedStore(store).height
    n_patches = built["patches"]
    lines = [f"## packed store vs H5 patches ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {machine()}.", f"Data: {root} ({n_patches} patches, {size}x{size}x7), {a.samples} samples "
             f"per run, best of {a.repeats}, class-stratified sampler (oversample=1), batch 8, "
             "torch.set_num_threads(1); loaders timed from their first batch (worker start-up excluded).", "",
             "Build: `cropseg prepare pack` (2 processes):", "", "```", format_summary(built), "```", ""]
    loader_rate(40, 0, "none", root=root)  # warm the page cache and imports
    rows = []
    for workers in a.workers:
        cores = max(1, workers)
        ceiling = best_rate(lambda: raw_store_rate(store, a.samples), a.repeats)  # one process
        h5_aug = best_rate(lambda: loader_rate(a.samples, workers, "loader", root=root, size=size), a.repeats)
        h5_none = best_rate(lambda: loader_rate(a.samples, workers, "none", root=root, size=size), a.repeats)
        st_none = best_rate(lambda: loader_rate(a.samples, workers, "none", store=store, size=size), a.repeats)
        st_aug = best_rate(lambda: loader_rate(a.samples, workers, "loader", store=store, size=size), a.repeats)
        st_raw = best_rate(lambda: loader_rate(a.samples, workers, "raw", store=store, size=size), a.repeats)
        label = f"{workers} workers" if workers else "main process (1 core)"
        rows.append([label, ceiling * cores, h5_none, h5_aug, st_none, st_aug, st_raw,
                     f"{st_aug / h5_aug:.1f}x", f"{st_none / h5_none:.1f}x"])
    lines.append(table(["loader", "raw store reads/s (ceiling)", "H5 no aug", "H5 + aug", "store no aug",
                        "store + aug in loader", "store, loader only reads", "store/H5 (+aug)", "store/H5 (no aug)"],
                       rows))
    ms = min(device_transform_ms(store) for _ in range(a.repeats))
    lines += ["", "Samples/s. Ceiling for N workers = one process's rate x N. \"store, loader only reads\" is "
              "data.augment_on_device=true: workers send stored float16/uint8 values, and normalization, nodata "
              f"mask and augmentation run on whole batches after transfer (on this CPU, one thread: {ms:.2f} ms per "
              "sample; on a GPU a few kernels). Command: "
              f"`python bench/bench_store.py --samples {a.samples} --repeats {a.repeats} --workers {' '.join(map(str, a.workers))}`"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
