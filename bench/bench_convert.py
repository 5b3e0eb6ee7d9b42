"""Benchmark: records/s of ``cropseg prepare convert`` against the ceiling of only reading and parsing.

Builds Earth Engine-format TFRecords (GZIP, 193x193 float lists) from the real patches in
../shared/data/seed-c2-test (the demo generator when absent), then on ``--workers``
processes measures:

* ceiling (cropseg reader): read, CRC-check, parse and crop every record, write nothing;
* ceiling (tfrecord package): ``tfrecord.reader.example_loader`` over the same files;
* convert: the full conversion to H5 with each compression (gzip level 4 is the format's default).

Usage: python bench/bench_convert.py [--files 4] [--workers 2] [--out bench/results/convert.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "data" / "seed-c2-test"


def build(src: Path, files: int, level: int) -> int:
    from cropseg.data.patches import list_patches, patch_path, read_patch
    from cropseg.data.tfrecord import ee_record, serialize_record, write_ee_tfrecord

    if SEED.exists():
        root = SEED / "data"
    else:
        from cropseg.data.demo import DemoSpec, generate_demo

        generate_demo(src.parent / "demo", DemoSpec(num_patches=50, size=192))
        root = src.parent / "demo" / "data"
    patches = [(n, read_patch(patch_path(root, n))) for n in list_patches(root)]
    n = 0
    for k in range(files):
        recs = [serialize_record(ee_record(p.data, p.label, 5000 + k, float(name.split("-")[1]), pad=1)) for name, p in patches]
        write_ee_tfrecord(src / f"{5000 + k}.tfrecord.gz", recs, level=level)
        n += len(recs)
    return n


def _ceiling_cropseg(path: str) -> int:
    from cropseg.data.tfrecord import ConvertSpec, read_file_arrays

    return read_file_arrays(path, ConvertSpec())[0]


def _ceiling_tfrecord(path: str) -> int:
    from tfrecord.reader import example_loader

    return sum(1 for _ in example_loader(path, None, compression_type="gzip"))


def timed_pool(fn, files: list[str], workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        n = sum(pool.map(fn, files))
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4, help="TFRecord files of 50 records each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--level", type=int, default=6, help="GZIP level of the TFRecords")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    a = ap.parse_args()
    from cropseg.data.tfrecord import ConvertSpec, convert_many

    tmp = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        src = tmp / "tfr"
        src.mkdir()
        t0 = time.perf_counter()
        total = build(src, a.files, a.level)
        print(f"built {a.files} files, {total} records ({sum(f.stat().st_size for f in src.iterdir()) / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        files = sorted(str(f) for f in src.iterdir())
        rows = []

        def best(fn):
            return min((fn() for _ in range(a.repeats)), key=lambda r: r[0])

        sec, n = best(lambda: timed_pool(_ceiling_cropseg, files, a.workers))
        assert n == total
        ceiling = total / sec
        rows.append(("ceiling: read + CRC + parse + crop (cropseg reader)", total / sec, 1.0, ""))
        sec, n = best(lambda: timed_pool(_ceiling_tfrecord, files, a.workers))
        rows.append(("read + parse (tfrecord package example_loader)", total / sec, total / sec / ceiling, "reference"))
        for comp, level, note in (("gzip", 4, "default (format of the original workflow)"), ("gzip", 1, ""),
                                  ("lzf", 0, "h5py built-in filter"), (None, 0, "uncompressed")):
            def run():
                out = tmp / "h5"
                shutil.rmtree(out, ignore_errors=True)
                s = convert_many(files, out, ConvertSpec(compression=comp, level=level), workers=a.workers, progress=False)
                assert s.written == total and s.ok
                size = sum(p.stat().st_size for p in out.glob("*.h5")) / total / 1e3
                return s.seconds, size
            sec, size = best(run)
            label = f"convert, compression={comp or 'none'}" + (f" level {level}" if comp == "gzip" else "")
            rows.append((label, total / sec, total / sec / ceiling, f"{size:.0f} KB/patch; {note}".rstrip("; ")))
        lines = [f"## convert: Earth Engine TFRecords -> H5 ({dt.date.today().isoformat()})", "",
                 f"Machine: {machine()}. {a.workers} processes, {a.files} GZIP TFRecord files x 50 records of "
                 f"193x193x8 float lists (real patches of seed-c2-test, GZIP level {a.level}), best of {a.repeats}.", "",
                 "| run | records/s | of ceiling | note |", "|---|---:|---:|---|"]
        lines += [f"| {r} | {v:.1f} | {f:.2f} | {note} |" for r, v, f, note in rows]
        text = "\n".join(lines) + "\n"
        print(text)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
