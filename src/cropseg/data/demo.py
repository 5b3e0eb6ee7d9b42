"""A deterministic generator of demo landscapes in the original workflow's formats.

The scenes are structured enough that a model has something real to learn: rectangular
field parcels (green, senescent and fallow crops, all labelled cropland) separated by
roads, forest and grassland with natural texture, water in the valleys, bare soil,
settlements, terrain, and occasional nodata at a scene edge. Green crops and forest, or
senescent crops and grassland, overlap spectrally: a pixel classifier is not enough,
shape and texture matter, as in real imagery.

``render_scene`` makes one landscape of any size (reused for GeoTIFF scenes);
``generate_demo`` writes H5 patches covering every oversampling class plus list files.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cropseg.bands import DEFAULT_BANDS, ndvi
from cropseg.command import Command
from cropseg.errors import UserError
from cropseg.io import ensure_output_dir, write_text_atomic
from cropseg.parallel import parallel_map

from .index import NUM_CLASSES, patch_class
from .patches import patch_name, patch_path, write_list, write_patch

#: Mean surface reflectance (B, G, R, NIR, SWIR1) of each land cover.
SPECTRA: dict[str, tuple[float, float, float, float, float]] = {
    "water": (0.06, 0.05, 0.03, 0.02, 0.01),
    "forest": (0.03, 0.05, 0.035, 0.30, 0.13),
    "grass": (0.05, 0.075, 0.07, 0.26, 0.23),
    "soil": (0.09, 0.12, 0.16, 0.24, 0.31),
    "settlement": (0.12, 0.13, 0.14, 0.19, 0.21),
    "road": (0.10, 0.11, 0.12, 0.18, 0.22),
    "crop_green": (0.04, 0.08, 0.045, 0.38, 0.19),
    "crop_senescent": (0.06, 0.085, 0.085, 0.27, 0.25),
    "crop_fallow": (0.08, 0.11, 0.14, 0.23, 0.29),
}
CROP_TYPES = ("crop_green", "crop_senescent", "crop_fallow")
CROP_PROBS = (0.55, 0.3, 0.15)


def smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), standardized: natural-looking texture at ``scale`` pixels."""
    h, w = shape
    white = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * scale) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=(h, w))
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def _cuts(length: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    cuts, pos = [], int(rng.integers(0, hi))
    while pos < length:
        cuts.append(pos)
        pos += int(rng.integers(lo, hi + 1))
    return np.asarray(cuts, dtype=np.int64)


def render_scene(
    height: int,
    width: int,
    rng: np.random.Generator,
    cropland_fraction: float | None = None,
    nodata: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One landscape: ``data`` (H, W, 7) float32 in DEFAULT_BANDS order and ``label`` (H, W) float32.

    ``cropland_fraction`` sets the labelled cropland fraction exactly (up to water and
    settlements); None draws one. ``nodata`` masks a scene-edge wedge with NaN.
    """
    shape = (height, width)
    terrain = smooth_noise(shape, max(height, width) / 5, rng) * 0.6 + smooth_noise(shape, 12, rng) * 0.2
    dem = 250 + 400 * terrain + 30 * smooth_noise(shape, 3, rng)

    # Field parcels: a random rectangular mosaic; roads along some of the cuts.
    ys, xs = np.arange(height), np.arange(width)
    cy, cx = _cuts(height, 7, 22, rng), _cuts(width, 7, 22, rng)
    row = np.searchsorted(cy, ys, side="right")
    col = np.searchsorted(cx, xs, side="right")
    field_id = row[:, None] * (len(cx) + 1) + col[None, :]
    if cropland_fraction is None:
        cropland_fraction = float(rng.uniform(0, 1))
    other = 1.0 - cropland_fraction  # room left for roads, water and settlements
    road_rows = np.isin(ys, cy[rng.random(len(cy)) < 0.02 + 0.2 * other])
    road_cols = np.isin(xs, cx[rng.random(len(cx)) < 0.02 + 0.2 * other])
    road = road_rows[:, None] | road_cols[None, :]

    water = terrain < np.quantile(terrain, float(rng.uniform(0.0, 0.15 * other)))
    settlement = np.zeros(shape, bool)
    for _ in range(int(rng.poisson(other * height * width / 30000))):
        y0, x0, r = int(rng.integers(0, height)), int(rng.integers(0, width)), int(rng.integers(4, 12))
        block = settlement[max(0, y0 - r): y0 + r, max(0, x0 - r): x0 + r]
        block |= rng.random(block.shape) < 0.7
    settlement &= ~water

    candidates = ~road & ~water & ~settlement
    region_noise = smooth_noise(shape, max(8.0, min(height, width) / 6), rng)
    region_noise = region_noise + 0.001 * rng.standard_normal(shape).astype(np.float32)  # break ties
    # Whole fields are cropland or not: rank fields by their mean noise, take the top ones.
    n_fields = int(field_id.max()) + 1
    sums = np.bincount(field_id.ravel(), weights=region_noise.ravel(), minlength=n_fields)
    counts = np.bincount(field_id.ravel(), minlength=n_fields)
    cand_counts = np.bincount(field_id.ravel(), weights=candidates.ravel(), minlength=n_fields)
    order = np.argsort(-(sums / np.maximum(counts, 1)))
    target = cropland_fraction * height * width
    cum = np.cumsum(cand_counts[order])
    n_take = int(np.searchsorted(cum, target - 0.5 * cand_counts[order].mean(), side="left")) + 1
    crop_fields = np.zeros(n_fields, bool)
    crop_fields[order[: max(0, min(n_take, n_fields))] if cropland_fraction > 0 else []] = True
    cropland = crop_fields[field_id] & candidates
    road &= crop_fields[field_id]  # roads run through farmland

    # Natural cover outside cropland.
    veg = smooth_noise(shape, 6, rng)
    cover = np.full(shape, "grass", dtype=object)
    cover[veg > 0.3] = "forest"
    cover[smooth_noise(shape, 10, rng) > 1.2] = "soil"
    cover[water] = "water"
    cover[settlement] = "settlement"
    cover[road] = "road"
    crop_kind = np.asarray(CROP_TYPES, dtype=object)[rng.choice(len(CROP_TYPES), size=n_fields, p=CROP_PROBS)]
    cover[cropland] = crop_kind[field_id][cropland]

    refl = np.zeros(shape + (5,), np.float32)
    for name, spectrum in SPECTRA.items():
        m = cover == name
        if m.any():
            refl[m] = spectrum
    # Per-field brightness and greenness (management, crop stage), natural texture elsewhere.
    field_gain = rng.normal(1.0, 0.08, n_fields).astype(np.float32)[field_id]
    field_green = rng.normal(0.0, 0.03, n_fields).astype(np.float32)[field_id]
    gain = np.where(cropland, field_gain, 1.0 + 0.12 * smooth_noise(shape, 2, rng))
    refl *= gain[..., None]
    refl[..., 3] += np.where(cropland, field_green, 0.04 * veg * (cover == "forest"))
    shade = 1.0 + 0.05 * np.gradient(dem, axis=1) / 20.0
    refl *= shade[..., None]
    refl += rng.normal(0, 0.008, refl.shape).astype(np.float32)
    refl = np.clip(refl, 0.001, 1.0)

    data = np.empty(shape + (len(DEFAULT_BANDS),), np.float32)
    data[..., :5] = refl
    data[..., 5] = ndvi(refl[..., 3], refl[..., 2])
    data[..., 6] = dem
    label = cropland.astype(np.float32)
    if nodata:
        a, b = rng.uniform(0.15, 0.35, 2)
        wedge = (ys[:, None] / height) * a + (xs[None, :] / width) * b < min(a, b) * 0.9
        data[wedge] = np.nan
        label[wedge] = 0.0
    return data, label


@dataclass(frozen=True)
class DemoSpec:
    num_patches: int = 110
    size: int = 192
    seed: int = 0
    val_every: int = 5  # every 5th patch goes to validation
    nodata_every: int = 10  # every 10th patch has a nodata wedge
    patches_per_grid: int = 10
    year: int = 2015


def _patch(spec: DemoSpec, i: int) -> tuple[str, np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng([spec.seed, i])
    cls = i % NUM_CLASSES  # every oversampling class, in turn
    lo, hi = max(0.0, (cls - 0.5) / 10), min(1.0, (cls + 0.5) / 10)
    rp = float(rng.uniform(lo + 0.01, hi - 0.01)) if cls else float(rng.uniform(0, 0.04))
    data, label = render_scene(spec.size, spec.size, rng, rp, nodata=(i % spec.nodata_every == spec.nodata_every - 1))
    grid_id, point_id = 900 + i // spec.patches_per_grid, i
    return patch_name(grid_id, point_id), data, label, grid_id, point_id


def _write_one(args: tuple[DemoSpec, int, str]) -> tuple[str, int]:
    spec, i, out = args
    name, data, label, grid_id, point_id = _patch(spec, i)
    path = patch_path(Path(out) / "data", name)
    if not path.exists():
        write_patch(path, data, label, DEFAULT_BANDS, grid_id=grid_id, point_id=point_id, year=spec.year, source="cropseg-demo")
    return name, int(patch_class(float(label[np.isfinite(data).all(-1)].mean())))


def generate_demo(out: str | Path, spec: DemoSpec = DemoSpec(), workers: int = 1, force: bool = False) -> Path:
    """Write ``out/data/*.h5``, ``out/train.txt``, ``out/val.txt`` and ``out/demo.json``.

    Rerunning with the same spec reuses what exists (patches are written atomically, the
    manifest last); a different spec in the same folder is an error unless ``force``.
    """
    out = Path(out)
    manifest = out / "demo.json"
    if manifest.exists() and not force:
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            old = None
        if old == asdict(spec):
            return out
        if old is not None:
            raise UserError(f"{manifest}: demo data with other parameters exists there; use another folder or force=true")
    jobs = [(spec, i, str(out)) for i in range(spec.num_patches)]
    results = list(parallel_map(_write_one, jobs, workers))
    names = [n for n, _ in results]
    val = [n for i, n in enumerate(names) if i % spec.val_every == spec.val_every - 1]
    train = [n for i, n in enumerate(names) if i % spec.val_every != spec.val_every - 1]
    write_list(out / "train.txt", train)
    write_list(out / "val.txt", val)
    write_text_atomic(manifest, json.dumps(asdict(spec), indent=2))
    return out


def ensure_demo(root: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Generate the demo dataset at ``root`` unless it is already there (used by ``data=demo``)."""
    return generate_demo(root, spec)


def run(cfg: dict) -> int:
    if cfg["num_patches"] < 1 or cfg["size"] < 16:
        raise UserError("num_patches must be >= 1 and size >= 16")
    ensure_output_dir(cfg["out"], "out")
    t0 = time.time()
    spec = DemoSpec(num_patches=cfg["num_patches"], size=cfg["size"], seed=cfg["seed"])
    out = generate_demo(cfg["out"], spec, workers=cfg["workers"], force=cfg["force"])
    print(f"demo dataset: {spec.num_patches} patches of {spec.size}x{spec.size} in {out}/data "
          f"(lists: {out}/train.txt, {out}/val.txt) in {time.time() - t0:.1f}s")
    return 0


main = Command("cropseg demo", "demo", run, "Generate the demo dataset of H5 patches.").main


if __name__ == "__main__":
    raise SystemExit(main())
