"""Shared helpers for benchmarks: machine description and markdown tables."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED_DIR = REPO.parent / "shared" / "data" / "seed-c2-test"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}, {_dt.date.today().isoformat()}"


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def loader_throughput(loader) -> float:
    """Samples/s of a DataLoader from its first batch on: worker start-up (fork, imports, opening
    files) is paid once per run, not per sample, so it would blur short runs."""
    import time

    it = iter(loader)
    next(it)
    count, t = 0, time.perf_counter()
    for batch in it:
        count += len(batch["name"])
    return count / (time.perf_counter() - t)


def best_rate(fn, repeats: int) -> float:
    """The highest of ``repeats`` rates: on a shared machine, slow runs measure the neighbours."""
    return max(fn() for _ in range(max(1, repeats)))
