"""Benchmark tiled inference: end-to-end GeoTIFF -> GeoTIFF megapixels/s against the raw forward pass.

    python bench/bench_predict.py                       # CPU defaults (1024² throughput, 1000² vs 3000² memory)
    python bench/bench_predict.py --device cuda --size 8192 --mem-sizes 2000 8000 --batch 64
    python bench/bench_predict.py --size 1536 --defaults-only --set quicklook=false   # without the PNG preview

A Unet-ResNet34 with random weights (no download) is saved as a cropseg checkpoint of
patch size 192. For each setting (the original 192 window / stride 72 / mean, and
cropseg's defaults) one run reports, on the same device and batch:

- raw: megapixels/s of a bare forward pass over batches of windows (window pixels), the ceiling;
- e2e: megapixels of map per second, GeoTIFF in to GeoTIFF out (the whole scene read,
  band-mapped, blended and written, LZW-compressed);
- e2e / raw: the fraction of the ceiling reached for the unique output area.

Each scene runs in a fresh process so that its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

SETTINGS = {
    "original (192, stride 72, mean)": dict(window=192, stride=72, margin=0, blending="mean", padding="constant"),
    "cropseg defaults (192, overlap 1/8, cosine)": dict(),
}


def make_checkpoint(path: Path, encoder: str = "resnet34") -> Path:
    import torch

    import cropseg
    from cropseg.models.module import CHECKPOINT_FORMAT, SegmentationModule

    torch.manual_seed(0)
    m = SegmentationModule(arch="unet", encoder=encoder, encoder_weights=None, patch_size=192)
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "cropseg": {"format": CHECKPOINT_FORMAT, "version": cropseg.__version__}}, path)
    return path


def make_scene(path: Path, size: int) -> Path:
    """A size x size 7-band float32 scene (tiled LZW like an Earth Engine export), written in row blocks."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from cropseg.bands import DEFAULT_BANDS
    from cropseg.data.demo import render_scene

    tile, _ = render_scene(512, 512, np.random.default_rng(0))
    tile = np.nan_to_num(tile).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=7, dtype="float32",
                       crs="EPSG:32622", transform=from_origin(500000, 9000000, 30, 30), nodata=float("nan"),
                       tiled=True, blockxsize=256, blockysize=256, compress="lzw") as dst:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            row = np.tile(tile[:, :h], (1, 1, (size + 511) // 512))[:, :, :size]
            dst.write(row, window=Window(0, r0, size, h))
        dst.descriptions = DEFAULT_BANDS
    return path


def child(args: argparse.Namespace) -> None:
    import torch

    from cropseg.inference.predictor import PredictSettings, load_checkpoint_model, predict_scene

    setting = json.loads(args.setting)
    model = load_checkpoint_model(args.ckpt, args.device, args.precision)
    window = setting.get("window", model.patch_size)
    x = np.random.default_rng(0).uniform(0, 1, (args.batch, 7, window, window)).astype(np.float32)
    model.runner(x)  # warm-up
    raw = None
    if args.raw:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.raw_seconds or n < 2:
            model.runner(x)
            n += 1
        if model.runner.device.type == "cuda":
            torch.cuda.synchronize()
        raw = n * args.batch * window * window / 1e6 / (time.perf_counter() - t0)
    out = Path(args.out)
    t0 = time.perf_counter()
    res = predict_scene(args.scene, out, model, PredictSettings(batch_size=args.batch, device=args.device,
                                                                precision=args.precision, **setting), overwrite=True)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"raw_mps": raw, "e2e_mps": res.megapixels / secs, "seconds": secs, "windows": res.windows,
                      "peak_rss_mib": rss, "megapixels": res.megapixels}))


def run_child(ckpt, scene, setting, args, raw: bool) -> dict:
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        cmd = [sys.executable, __file__, "--child", "--ckpt", str(ckpt), "--scene", str(scene), "--out",
               str(Path(tmp) / "map.tif"), "--setting", json.dumps(setting), "--device", args.device,
               "--precision", args.precision, "--batch", str(args.batch), "--raw-seconds", str(args.raw_seconds)]
        if raw:
            cmd.append("--raw")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"benchmark child failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="throughput scene size (pixels per side)")
    p.add_argument("--mem-sizes", type=int, nargs="+", default=[1000, 3000], help="scene sizes for peak memory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--raw-seconds", type=float, default=5.0)
    p.add_argument("--work", default=None, help="folder for temporary scenes (default: system temp)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--only-memory", action="store_true", help="skip the throughput table")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="prediction settings for every run, as in conf/predict.yaml (e.g. quicklook=false)")
    p.add_argument("--defaults-only", action="store_true", help="throughput of cropseg's defaults only (not the original's)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    for k in ("--ckpt", "--scene", "--out", "--setting"):
        p.add_argument(k, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import torch

    import cropseg

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(tmp / "unet-resnet34.ckpt")
        scene = make_scene(tmp / "scene.tif", args.size)
        rows = []
        chosen = {} if args.only_memory else SETTINGS
        if args.defaults_only:
            chosen = {k: v for k, v in chosen.items() if k.startswith("cropseg defaults")}
        extra = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in args.set)}
        for name, setting in chosen.items():
            r = run_child(ckpt, scene, {**setting, **extra}, args, raw=True)
            rows.append((name, r))
        mem = []
        for size in args.mem_sizes:
            s = make_scene(tmp / f"mem{size}.tif", size)
            mem.append((size, run_child(ckpt, s, {**SETTINGS["cropseg defaults (192, overlap 1/8, cosine)"], **extra}, args,
                                        raw=False)))
            s.unlink()

    dev = args.device if args.device != "cpu" else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    if args.device.startswith("cuda"):
        dev = torch.cuda.get_device_name(0)
    print(f"# cropseg {cropseg.__version__} tiled inference benchmark — {time.strftime('%Y-%m-%d')}, {dev}, "
          f"torch {torch.__version__}, Unet-ResNet34 (random weights), batch {args.batch}, precision {args.precision}\n")
    print(f"Throughput, {args.size}x{args.size} 7-band float32 GeoTIFF (LZW) -> uint8 map (2 bands, LZW):\n")
    print("| setting | windows | raw forward MP/s | end-to-end MP/s of map | e2e / raw | window pixels / raw (pipeline) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        win = SETTINGS[name].get("window", 192)
        pipe = r["windows"] * win * win / 1e6 / r["seconds"] / r["raw_mps"]
        print(f"| {name} | {r['windows']} | {r['raw_mps']:.3f} | {r['e2e_mps']:.3f} | {r['e2e_mps'] / r['raw_mps']:.2f} "
              f"| {pipe:.2f} |")
    print("\nPeak memory (process RSS, cropseg defaults):\n")
    print("| scene | megapixels | seconds | end-to-end MP/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for size, r in mem:
        print(f"| {size}x{size} | {r['megapixels']:.1f} | {r['seconds']:.1f} | {r['e2e_mps']:.3f} | {r['peak_rss_mib']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": dict(rows), "memory": {str(k): v for k, v in mem}}, indent=2))


if __name__ == "__main__":
    main()
