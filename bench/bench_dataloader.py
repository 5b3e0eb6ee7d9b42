"""Training DataLoader throughput vs the raw ceiling of reading the same H5 files with h5py.

Run: python bench/bench_dataloader.py [--root DIR] [--samples N] [--repeats N]
Uses the real Earth Engine patches in ../shared/data/seed-c2-test when present, else
the demo data. Per-worker rates: ours with num_workers=0 vs a plain h5py loop in one
process, and with 2 workers vs two plain processes.
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SEED_DIR, best_rate, loader_throughput, machine, table  # noqa: E402

from cropseg.bands import Normalization  # noqa: E402
from cropseg.data.datamodule import CroplandDataModule  # noqa: E402
from cropseg.data.patches import list_patches  # noqa: E402
from cropseg.data.transforms import AugmentConfig  # noqa: E402


def _read(paths: list[str]) -> int:
    for p in paths:
        with h5py.File(p, "r") as f:
            f["data"][()]
            f["label"][()]
    return len(paths)


def raw_rate(paths: list[str], processes: int) -> float:
    t = time.perf_counter()
    if processes == 1:
        n = _read(paths)
    else:
        with Pool(processes) as pool:
            n = sum(pool.map(_read, [paths[i::processes] for i in range(processes)]))
    return n / (time.perf_counter() - t)


def ours_rate(root: Path, n: int, workers: int, augment: bool) -> float:
    dm = CroplandDataModule(str(root), bands=("B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"),
                            normalization=Normalization.default(), patch_size=192, batch_size=8, num_workers=workers,
                            oversample=1.0, epoch_length=n, augment=AugmentConfig() if augment else None,
                            val_fraction=0.0, persistent_workers=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return loader_throughput(loader)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=SEED_DIR / "data" if SEED_DIR.exists() else None)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2, help="best of N runs per cell")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # per-core comparison: h5py reads on one thread, DataLoader workers use one
    root = a.root
    if root is None:
        from cropseg.data.demo import generate_demo

        root = generate_demo("data/demo") / "data"
    names = list_patches(root)
    rng = np.random.default_rng(0)
    paths = [str(root / f"{names[i]}.h5") for i in rng.integers(0, len(names), a.samples)]
    raw_rate(paths[:20], 1)  # warm the page cache
    rows = []
    for workers in (0, 2):
        procs = max(1, workers)
        ceiling = best_rate(lambda: raw_rate(paths, procs), a.repeats)
        plain = best_rate(lambda: ours_rate(root, a.samples, workers, augment=False), a.repeats)
        aug = best_rate(lambda: ours_rate(root, a.samples, workers, augment=True), a.repeats)
        rows.append([f"{workers} workers" if workers else "main process", ceiling, plain, aug, aug / ceiling])
    print(f"Data loading, {root} ({len(names)} patches, 192x192x7, {a.samples} samples/run, best of {a.repeats}), {machine()}\n")
    print(table(["loader", "raw h5py patches/s", "cropseg no aug", "cropseg + aug", "ratio (aug / raw)"], rows))


if __name__ == "__main__":
    main()
