"""Benchmark: chips/s of ``cropseg prepare chips`` against the raw rasterio window read of the same windows,
and its peak memory for a raster 4x larger.

Builds a GeoTIFF like a Landsat composite (6 bands Blue..SWIR2, float32, LZW, tiled 256) by
tiling the real Landsat-5 scene of ../shared/data (mirrored, so values and compression are
real), and a label raster (uint8 class codes) on the same grid. Then, in one process each:

* raw: ``src.read(the 5 bands needed, window)`` plus the label window, for every window of the
  grid (size x size, stride = size) — the ceiling of any chip cutter;
* chips: ``make_chips`` over the same windows (band mapping, derived NDVI, constant Dem, label
  codes, H5 write) with each compression; and with 2 processes.

Peak RSS: ``make_chips`` (grid, default settings, quicklook on) run in a fresh process on the
raster and on one with 4x the pixels; the child's maximum resident set size is reported.

Usage: python bench/bench_chips.py [--size 2048] [--chip 192] [--repeats 2] [--out tables.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO.parent / "shared" / "data" / "landsat5-tm-subset.tif"
DESCRIPTIONS = ("Blue", "Green", "Red", "NIR", "SWIR1", "SWIR2")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers): a rate per CPU-second does not
    depend on what else the machine runs."""
    import resource

    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def build(folder: Path, n: int) -> tuple[Path, Path]:
    """An n x n 6-band composite (the real scene tiled with mirroring, or a synthetic one) and its labels."""
    import rasterio
    from rasterio.transform import from_origin

    if SCENE.exists():
        with rasterio.open(SCENE) as src:
            base = src.read()
    else:
        rng = np.random.default_rng(0)
        base = (rng.random((6, 310, 287)) * 0.3).astype(np.float32)
    tile = np.concatenate([base, base[:, :, ::-1]], 2)
    tile = np.concatenate([tile, tile[:, ::-1]], 1)  # 2 x 2 mirrored copies: a seamless tile
    prof = dict(driver="GTiff", width=n, height=n, crs="EPSG:32622", transform=from_origin(600000, 0, 30, 30),
                tiled=True, blockxsize=256, blockysize=256, compress="lzw")
    image, labels = folder / f"composite_{n}.tif", folder / f"labels_{n}.tif"
    cols = np.arange(n) % tile.shape[2]
    with rasterio.open(image, "w", count=6, dtype="float32", nodata=float("nan"), **prof) as dst, \
            rasterio.open(labels, "w", count=1, dtype="uint8", nodata=0, **prof) as lab:
        for r in range(0, n, 512):  # in strips: the benchmark itself holds no whole raster
            rows = np.arange(r, min(n, r + 512)) % tile.shape[1]
            img = tile[:, rows][:, :, cols]
            win = rasterio.windows.Window(0, r, n, len(rows))
            dst.write(img, window=win)
            nd = (img[3] - img[2]) / (img[3] + img[2] + 1e-6)
            lab.write(np.clip(np.floor((nd + 0.1) * 10), 1, 10).astype(np.uint8)[None], window=win)
        dst.descriptions = DESCRIPTIONS
    return image, labels


def raw_read(image: Path, labels: Path, chip: int) -> tuple[float, int]:
    """Seconds to read every grid window's 5 bands and label window with plain rasterio, and the count."""
    import rasterio
    from rasterio.windows import Window

    t0, c0 = time.perf_counter(), cpu_seconds()
    n = 0
    with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024), rasterio.open(image) as src, rasterio.open(labels) as lab:
        for r in range(0, src.height - chip + 1, chip):
            for c in range(0, src.width - chip + 1, chip):
                w = Window(c, r, chip, chip)
                src.read([1, 2, 3, 4, 5], window=w, out_dtype="float32")
                lab.read(1, window=w)
                n += 1
    return time.perf_counter() - t0, n, cpu_seconds() - c0


def read_path(image: Path, labels: Path, chip: int) -> tuple[float, int]:
    """Seconds for cropseg's read path alone over the same windows: SceneReader.read_window (bands by name,
    NDVI derived, Dem constant) and the label codes -> 1/0/NaN, without writing chips."""
    import rasterio

    from cropseg.data.chips import ChipSettings, ChipSource, parse_label_values

    settings = ChipSettings(out="", labels=str(labels), size=chip, extra_bands={"Dem": 250},
                            label_values=parse_label_values("5-10"))
    t0, c0 = time.perf_counter(), cpu_seconds()
    n = 0
    with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024):
        src = ChipSource(image, "bench", settings)
        for r in range(0, src.height - chip + 1, chip):
            for c in range(0, src.width - chip + 1, chip):
                src.reader.read_window(r, c, chip, chip)
                src.labels.read(r, c, chip, chip)
                n += 1
        src.close()
    return time.perf_counter() - t0, n, cpu_seconds() - c0


def chips(image: Path, labels: Path, out: Path, chip: int, workers: int, compression: str | None, level: int = 4):
    from cropseg.data.chips import make_chips

    shutil.rmtree(out, ignore_errors=True)
    c0 = cpu_seconds()
    s = make_chips(image, out, labels=labels, size=chip, extra_bands={"Dem": 250}, label_values="5-10",
                   compression=compression, level=level, workers=workers, quicklook=False)
    size = sum(p.stat().st_size for p in out.glob("*.h5")) / max(1, s.chips) / 1e3
    return s.seconds, s.chips, cpu_seconds() - c0, size


PEAK_CHILD = """
import json, resource, sys, time
from cropseg.data.chips import make_chips
t = time.time()
s = make_chips(sys.argv[1], sys.argv[3], labels=sys.argv[2], size=int(sys.argv[4]), extra_bands={"Dem": 250},
               label_values="5-10", workers=int(sys.argv[5]))
print(json.dumps({"chips": s.chips, "seconds": time.time() - t,
                  "self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def peak(image: Path, labels: Path, out: Path, chip: int, workers: int) -> dict:
    """make_chips in a fresh process: its chips, seconds, and peak RSS (MiB) of it and of its largest worker."""
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(image), str(labels), str(out), str(chip), str(workers)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048, help="side of the benchmark raster (the RSS run adds 2x that)")
    ap.add_argument("--chip", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables (Markdown) here")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-chips-"))
    try:
        t0 = time.perf_counter()
        image, labels = build(tmp, a.size)
        print(f"built {image.name} ({image.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f}s",
              file=sys.stderr)

        def best(fn):
            return min((fn() for _ in range(a.repeats)), key=lambda r: r[0])

        sec, n, cpu = best(lambda: raw_read(image, labels, a.chip))
        raw, raw_cpu = n / sec, n / cpu
        rows = [("raw rasterio window read (5 bands + label), 1 process", raw, 1.0, raw_cpu, 1.0, "the ceiling")]
        sec, got, cpu = best(lambda: read_path(image, labels, a.chip))
        rows.append(("cropseg read path only (SceneReader.read_window + labels), 1 process", got / sec, got / sec / raw,
                     got / cpu, got / cpu / raw_cpu, "band mapping, NDVI, Dem, label codes; no write"))
        for comp, level, workers, note in (("gzip", 4, 1, "default"), ("gzip", 1, 1, ""), ("lzf", 0, 1, ""),
                                           (None, 0, 1, "uncompressed"), ("gzip", 4, 2, "default"),
                                           (None, 0, 2, "uncompressed")):
            sec, got, cpu, kb = best(lambda: chips(image, labels, tmp / "chips", a.chip, workers, comp, level))
            assert got == n, (got, n)
            label = f"chips, compression={comp or 'none'}" + (f" level {level}" if comp == "gzip" else "")
            rows.append((label + (f", {workers} processes" if workers > 1 else ", 1 process"), got / sec,
                         got / sec / raw, got / cpu, got / cpu / raw_cpu,
                         f"{kb:.0f} KB/chip" + (f"; {note}" if note else "")))

        big_image, big_labels = build(tmp, 2 * a.size)
        mem = []
        for img, lab in ((image, labels), (big_image, big_labels)):
            for workers in (1, 2):
                info = peak(img, lab, tmp / "peak", a.chip, workers)
                side = int(img.stem.split("_")[1])
                mem.append((f"{side}x{side}", side * side / 1e6, workers, info["chips"], info["seconds"],
                            info["self_mib"], info["workers_mib"] if workers > 1 else None))
        lines = [f"Machine: {machine()}. Raster: {a.size}x{a.size}, 6 bands float32 (LZW, tiled 256), the real "
                 f"Landsat-5 scene tiled with mirroring, labels uint8 on the same grid; chips {a.chip}x{a.chip}, "
                 f"grid stride {a.chip} ({n} windows), bands B,G,R,NIR,SWIR1 + NDVI derived + Dem constant; "
                 f"best of {a.repeats}.", "",
                 "| run | chips/s | of raw read | chips per CPU-second | of raw read | note |",
                 "|---|---:|---:|---:|---:|---|"]
        lines += [f"| {r} | {v:.1f} | {f:.2f} | {cv:.1f} | {cf:.2f} | {note} |" for r, v, f, cv, cf, note in rows]
        lines += ["", "Peak RSS of `make_chips` (grid, quicklook on) in a fresh process, and of its largest worker:", "",
                  "| raster | megapixels | processes | chips | seconds | peak RSS MiB | worker peak RSS MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r} | {mp:.1f} | {w} | {c} | {s:.1f} | {m:.0f} | {'-' if wk is None else f'{wk:.0f}'} |"
                  for r, mp, w, c, s, m, wk in mem]
        ratios = []
        for w in (1, 2):
            small, large = [m for m in mem if m[2] == w]
            ratios.append(f"{w} process(es): {large[5] / small[5]:.2f}x"
                          + (f" (workers {large[6] / small[6]:.2f}x)" if w > 1 else ""))
        lines.append("\n4x the pixels -> peak RSS " + "; ".join(ratios))
        text = "\n".join(lines) + "\n"
        print(text)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(f"## prepare chips ({dt.date.today().isoformat()})\n\n" + text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
