"""Tiled, streaming prediction of GeoTIFF scenes: batching, I/O overlap, resume, sharding.

One scene runs as a three-stage pipeline:

- a **reader thread** reads the scene rows each row of windows needs (rasterio, block by
  block, rows shared by overlapping window rows are kept, not read again), maps the bands
  to the model's in physical units (NaN = nodata), pads with reflection at the scene edges
  and cuts the windows, dropping windows that are entirely nodata;
- the **calling thread** batches windows (across window rows) and runs the checkpoint's
  model on the raw windows: it normalizes and masks nodata itself, exactly as in training
  (cropseg.models.preprocess), on the device (float32 on CPU; bf16 autocast and
  channels_last on a GPU);
- a **writer thread** adds the weighted window probabilities into an accumulator that
  holds only the rows still open (at most one window high), turns rows that no window
  will touch again into uint8 and writes them to the output GeoTIFF.

Queues between the stages are short, so memory is bounded by a few window rows of the
scene: it depends on the scene's width and the window, never on its height.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cropseg.errors import UserError
from cropseg.io import process_alive
from cropseg.maps import OUTPUT_PATTERN, encode, encoding_tags, scene_year

from .raster import (RASTER_SUFFIXES, MapWriter, SceneReader, check_georeferenced, check_units, finish_output,
                     open_raster, output_profile, plan_bands)
from .quicklook import write_map_quicklook
from .tta import check_mode, with_tta
from .windows import WindowGrid, blend_weights, resolve_stride

GDAL_CACHE_MB = 64


# -- settings -------------------------------------------------------------------------------
@dataclass
class PredictSettings:
    window: int | None = None  # default: the checkpoint's patch size
    stride: int | None = None
    overlap: float = 0.125  # fraction of the window (< 1) or pixels; used when stride is None
    margin: int | None = None  # default: (window - stride) // 2
    blending: str = "cosine"
    padding: str = "reflect"  # or "constant"
    batch_size: int = 16
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, float32 on CPU; or fp32 / bf16 / fp16
    threshold: float | None = None  # default: the checkpoint's
    class_band: bool = True
    overviews: bool = False
    cog: bool = False
    sensor: str | None = None  # tm | etm | oli: how numbered band names (SR_B4) read; None: from metadata or year
    check_units: bool = True  # a sample of each scene must be in the units the model was trained on
    band_map: dict[str, Any] = field(default_factory=dict)
    extra_bands: dict[str, Any] = field(default_factory=dict)
    assume_order: bool = False
    band_scale: dict[str, Any] = field(default_factory=dict)  # stored * scale + offset, by band name
    band_offset: dict[str, Any] = field(default_factory=dict)
    skip_empty: bool = True
    quicklook: bool = True  # {stem}_cropland.png beside each map (cropseg.inference.quicklook)
    progress: bool | None = None  # None: a bar when stderr is a terminal
    tta: str = "none"  # test-time augmentation: none | hflip | flips | d4 (cropseg.inference.tta)

    def __post_init__(self) -> None:
        if self.padding not in ("reflect", "constant"):
            raise UserError(f"padding={self.padding!r} is not known; choose one of: reflect, constant")
        if int(self.batch_size) < 1:
            raise UserError(f"batch_size={self.batch_size}: must be >= 1")
        if self.sensor is not None and str(self.sensor).lower() not in ("auto", "none", "null", ""):
            from cropseg.bands import resolve_sensor

            self.sensor = resolve_sensor(self.sensor)
        else:
            self.sensor = None
        check_mode(self.tta)


# -- the model --------------------------------------------------------------------------------
def pick_device(name: str = "auto"):
    import torch

    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError as err:
            raise UserError(f"device={name!r}: {err}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device={name!r}: CUDA is not available on this machine")
        return dev
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return torch.device(f"cuda:{local % torch.cuda.device_count()}")
    return torch.device("cpu")


class Runner:
    """Calls a model on batches of raw windows and returns probabilities (N, h, w) float32.

    ``fn`` maps a float tensor of raw bands (N, C, h, w), NaN = nodata, to probabilities
    (N, 1, h, w): a :class:`cropseg.models.network.CroplandModel`, which owns normalization,
    the nodata rule, temperature and sigmoid (the same module export writes out). ``tta``:
    average the probabilities of flipped/rotated views (``cropseg.inference.tta``; each view
    is one more pass of ``fn``).
    """

    def __init__(self, fn: Callable, device: Any = "cpu", precision: str = "auto", channels_last: bool | None = None,
                 tta: str = "none"):
        import torch

        self.fn = fn
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if precision == "auto":
            precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision={precision!r} is not known; choose one of: auto, fp32, bf16, fp16")
        self.precision = precision
        self.channels_last = cuda if channels_last is None else channels_last
        self.tta = check_mode(tta)
        self.proba = with_tta(fn, self.tta)  # fn itself when tta=none

    @classmethod
    def from_model(cls, model, device: Any = "cpu", precision: str = "auto", tta: str = "none") -> "Runner":
        import torch

        model = model.to(device).eval()
        if torch.device(device).type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return cls(model, device, precision, tta=tta)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode():
            ctx = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with ctx:
                y = self.proba(x)
            return y[:, 0].float().cpu().numpy()


@dataclass
class ModelInfo:
    """What prediction needs to know about a checkpoint."""

    runner: Runner
    spec: Any  # cropseg.models.preprocess.InputSpec: bands, units
    patch_size: int
    threshold: float
    name: str
    description: str

    @property
    def bands(self) -> list[str]:
        return list(self.spec.bands)


def load_checkpoint_model(path: str | Path, device: str = "auto", precision: str = "auto", tta: str = "none") -> ModelInfo:
    from cropseg.models.checkpoint import load_cropland_model

    dev = pick_device(device)
    model, card = load_cropland_model(path, map_location="cpu")
    return ModelInfo(runner=Runner.from_model(model, dev, precision, tta), spec=model.spec, patch_size=card.patch_size,
                     threshold=card.threshold, name=card.name, description=card.description)


# -- one scene --------------------------------------------------------------------------------
_DONE = object()


class _Failure:
    def __init__(self, err: BaseException):
        self.err = err


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def _pad(a: np.ndarray, pads: Sequence[tuple[int, int]], mode: str) -> np.ndarray:
    if not any(p for pair in pads for p in pair):
        return a
    if mode == "reflect":
        return np.pad(a, pads, mode="reflect")
    # Raw bands are padded with nodata (NaN): the model input contract turns it into what training saw.
    return np.pad(a, pads, mode="constant", constant_values=np.nan if a.dtype.kind == "f" else 0)


@dataclass
class SceneResult:
    scene: str
    output: str
    status: str  # done | skipped | failed
    windows: int = 0
    windows_skipped: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    message: str = ""


def predict_array_stream(reader: SceneReader, grid: WindowGrid, runner: Runner, weights: np.ndarray,
                         settings: PredictSettings, emit: Callable[[np.ndarray, np.ndarray, int], None],
                         progress: Any = None) -> tuple[int, int]:
    """Run the pipeline over ``grid``; ``emit(prob_rows, valid_rows, r0)`` gets finished rows in order.

    Returns (windows run, windows skipped as all-nodata).
    """
    H, W, win = grid.height, grid.width, grid.window
    left, right = grid.pads_x()
    stop = threading.Event()
    q_in: queue.Queue = queue.Queue(maxsize=2)
    q_out: queue.Queue = queue.Queue(maxsize=4)
    counts = {"run": 0, "skipped": 0}

    def read_strips() -> None:
        try:
            buf_lo, buf_hi = 0, 0
            buf_x = np.zeros((len(reader.plan.bands), 0, W), np.float32)
            buf_v = np.zeros((0, W), bool)
            for i, y in enumerate(grid.ys):
                a, b = max(0, int(y)), min(H, int(y) + win)
                if a > buf_lo:  # drop rows no later window needs
                    buf_x, buf_v = buf_x[:, a - buf_lo:], buf_v[a - buf_lo:]
                    buf_lo = a
                if b > buf_hi:
                    x, v = reader.read_rows(max(buf_hi, a), b)
                    buf_x = np.concatenate([buf_x, x], axis=1) if buf_x.shape[1] else x
                    buf_v = np.concatenate([buf_v, v], axis=0) if buf_v.shape[0] else v
                    buf_hi = b
                sx, sv = buf_x[:, a - buf_lo:b - buf_lo], buf_v[a - buf_lo:b - buf_lo]
                top, bottom = a - int(y), int(y) + win - b
                px = _pad(sx, [(0, 0), (top, bottom), (left, right)], settings.padding)
                pv = _pad(sv, [(top, bottom), (left, right)], "reflect" if settings.padding == "reflect" else "constant")
                js, wins = [], []
                for j, x0 in enumerate(grid.xs):
                    c0 = int(x0) + left
                    if settings.skip_empty and not pv[:, c0:c0 + win].any():
                        counts["skipped"] += 1
                        continue
                    js.append(j)
                    wins.append(px[:, :, c0:c0 + win])
                stack = np.stack(wins) if wins else np.zeros((0, px.shape[0], win, win), np.float32)
                if not _put(q_in, (i, js, stack, sv.copy(), a, b), stop):
                    return
            _put(q_in, _DONE, stop)
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            _put(q_in, _Failure(err), stop)

    def write_rows() -> None:
        acc = np.zeros((win, W), np.float32)
        wsum = np.zeros((win, W), np.float32)
        valid = np.zeros((win, W), bool)
        lo = 0  # scene row of acc[0]
        current = None
        try:
            while True:
                item = _get(q_out, stop)
                if item is _DONE:
                    break
                i, js, probs, strip_valid, a, b, last = item
                if current != i:
                    valid[a - lo:b - lo] = strip_valid
                    current = i
                y = int(grid.ys[i])
                for j, p in zip(js, probs):
                    x0 = int(grid.xs[j])
                    c0, c1 = max(0, x0), min(W, x0 + win)
                    pw = (p * weights)[a - y:b - y, c0 - x0:c1 - x0]
                    acc[a - lo:b - lo, c0:c1] += pw
                    wsum[a - lo:b - lo, c0:c1] += weights[a - y:b - y, c0 - x0:c1 - x0]
                if not last:
                    continue
                final = grid.rows_final_after(i)
                n = final - lo
                if n > 0:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        prob = acc[:n] / wsum[:n]
                    ok = valid[:n] & (wsum[:n] > 0)
                    emit(np.where(ok, prob, 0.0), ok, lo)
                    for arr in (acc, wsum, valid):
                        if n < win:
                            arr[:-n] = arr[n:].copy()
                        arr[-n:] = 0
                    lo = final
                if progress is not None:
                    progress.update(1)
        except BaseException as err:  # noqa: BLE001
            failures.append(err)
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q_out.get_nowait()

    failures: list[BaseException] = []
    reader_t = threading.Thread(target=read_strips, name="cropseg-read", daemon=True)
    writer_t = threading.Thread(target=write_rows, name="cropseg-write", daemon=True)
    reader_t.start()
    writer_t.start()
    bs = int(settings.batch_size)
    pending: list[list] = []  # [i, js, stack, valid, a, b, taken]

    def run_batch(final: bool) -> None:
        while pending and (final or sum(len(p[1]) - p[6] for p in pending) >= bs):
            parts, n = [], 0
            for p in pending:
                take = min(bs - n, len(p[1]) - p[6])
                if take > 0:
                    parts.append((p, p[6], p[6] + take))
                    n += take
                if n >= bs:
                    break
            probs = runner(np.concatenate([p[2][s:e] for p, s, e in parts])) if n else np.zeros((0, win, win), np.float32)
            counts["run"] += n
            off = 0
            for p, s, e in parts:
                p[6] = e
                done = e == len(p[1])
                if not _put(q_out, (p[0], p[1][s:e], probs[off:off + e - s], p[3], p[4], p[5], done), stop):
                    return
                off += e - s
            while pending and pending[0][6] == len(pending[0][1]):
                pending.pop(0)
            if not parts:
                break

    try:
        while True:
            item = _get(q_in, stop)
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.err
            if failures:
                break
            i, js, stack, sv, a, b = item
            if not js:  # every window of this row was nodata: still finish its rows
                if not _put(q_out, (i, [], [], sv, a, b, True), stop):
                    break
                continue
            pending.append([i, js, stack, sv, a, b, 0])
            run_batch(final=False)
        if not failures:
            run_batch(final=True)
            _put(q_out, _DONE, stop)
    except BaseException:
        stop.set()
        raise
    finally:
        if failures:
            stop.set()
        writer_t.join()
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q_in.get_nowait()
        reader_t.join(timeout=10)
    if failures:
        raise failures[0]
    return counts["run"], counts["skipped"]


def predict_scene(scene: str | Path, output: str | Path, model: ModelInfo, settings: PredictSettings,
                  overwrite: bool = False) -> SceneResult:
    """Predict one scene into ``output`` (atomically); a finished output is skipped unless ``overwrite``."""
    from cropseg.io import atomic_path

    import cropseg

    t0 = time.time()
    scene, output = Path(scene), Path(output)
    if output.exists() and not overwrite:
        return SceneResult(str(scene), str(output), "skipped", message="output exists (overwrite=true to redo)")
    remove_stale_temporaries(output)
    import rasterio

    # Every row is read once and written once: a small GDAL block cache keeps memory flat.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024), open_raster(scene) as src:
        check_georeferenced(src, scene)
        plan = plan_bands(src, scene, model.bands, settings.band_map, settings.extra_bands, settings.assume_order,
                          settings.band_scale, settings.band_offset, settings.sensor)
        if settings.check_units:
            check_units(src, scene, plan, model.spec)
        window = int(settings.window or model.patch_size)
        stride = resolve_stride(window, settings.stride, settings.overlap if settings.stride is None else None)
        grid = WindowGrid.build(src.height, src.width, window, stride, settings.margin)
        weights = blend_weights(window, settings.blending, window - stride)
        threshold = float(model.threshold if settings.threshold is None else settings.threshold)
        tags = {
            "cropseg_version": cropseg.__version__, "model": model.description, "checkpoint": model.name,
            "bands": ",".join(model.bands), "band_sources": "; ".join(f"{k}={v}" for k, v in plan.describe().items()),
            "sensor": plan.sensor_note(), "input_contract": model.spec.nodata,
            "threshold": threshold, **encoding_tags(),
            "window": window, "stride": stride, "margin": grid.margin, "blending": settings.blending,
            "padding": settings.padding, "tta": settings.tta, "source": scene.name,
        }
        descriptions = ["cropland_probability"] + (["cropland_class"] if settings.class_band else [])
        profile = output_profile(src, settings.class_band)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{output.parent}: cannot create the output folder ({err.strerror or err})") from None
        reader = SceneReader(src, plan)
        try:
            with atomic_path(output) as tmp:
                try:
                    writer = MapWriter(tmp, profile, tags, descriptions)
                except Exception as err:  # rasterio raises its own kinds for unwritable paths
                    raise UserError(f"{output}: cannot write the output ({str(err).splitlines()[0]})") from None
                thr = threshold if settings.class_band else None
                show = settings.progress if settings.progress is not None else sys.stderr.isatty()
                bar = None
                if show:
                    from tqdm import tqdm

                    bar = tqdm(total=len(grid.ys), desc=scene.name, unit="row", leave=False)
                try:
                    run, skipped = predict_array_stream(
                        reader, grid, model.runner, weights, settings,
                        lambda prob, ok, r0: writer.write(encode(prob, ok, thr)), bar)
                finally:
                    writer.close()
                    if bar is not None:
                        bar.close()
                finish_output(tmp, settings.overviews, settings.cog)
            if settings.quicklook:  # the finished map, small: {stem}_cropland.png beside it
                write_map_quicklook(output, src, plan, threshold)
        finally:
            reader.close()
        mp = src.width * src.height / 1e6
    return SceneResult(str(scene), str(output), "done", run, skipped, mp, time.time() - t0)


def remove_stale_temporaries(output: Path) -> None:
    """Remove temporary files a crashed run left for ``output`` (those of live processes stay)."""
    for tmp in output.parent.glob(f".{output.name}.*.tmp*"):
        m = re.match(rf"\.{re.escape(output.name)}\.(\d+)-", tmp.name)
        pid = int(m.group(1)) if m else None
        if pid is not None and pid != os.getpid() and process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


# -- many scenes --------------------------------------------------------------------------------
def _is_raster_name(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def output_path(scene: Path, output: str | Path, pattern: str = OUTPUT_PATTERN, single: bool = False) -> Path:
    out = Path(output)
    if single and out.suffix.lower() in (".tif", ".tiff"):
        return out
    return out / pattern.format(stem=scene.stem, name=scene.name)


year_of = scene_year  # the year in a ``{year}_{grid}.tif`` name, else None


def checkpoint_for(scene: Path, ckpt: str | None, models: Sequence[Mapping[str, Any]] | None) -> str:
    """The checkpoint for a scene: ``models`` maps year ranges (``from``/``to``, inclusive) to checkpoints."""
    if not models:
        if not ckpt:
            raise UserError("ckpt is required (ckpt=path/to/model.ckpt), or models=[{ckpt: ..., from: ..., to: ...}]")
        return str(ckpt)
    year = year_of(scene)
    if year is None:
        if ckpt:
            return str(ckpt)
        raise UserError(f"{scene}: no year in the file name ({{year}}_{{grid}}.tif) to choose a model by")
    for entry in models:
        lo, hi = entry.get("from"), entry.get("to")
        if (lo is None or year >= int(lo)) and (hi is None or year <= int(hi)):
            return str(entry["ckpt"])
    if ckpt:
        return str(ckpt)
    raise UserError(f"{scene}: no model in models covers the year {year}")


def shard_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's (rank, world size): config, else torchrun's RANK/WORLD_SIZE, else SLURM's, else (0, 1)."""
    env = os.environ
    if rank is None:
        rank = int(env.get("RANK", env.get("SLURM_PROCID", 0)))
    if world_size is None:
        world_size = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", 1)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"shard: rank {rank} is not within world size {world_size}")
    return rank, world_size


def shard(scenes: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """This rank's part of the (sorted) scene list: every scene goes to exactly one rank."""
    ordered = sorted(scenes, key=str)
    return ordered[rank::world_size]


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".cropseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output={folder}: cannot write there ({err.strerror or type(err).__name__})") from None


def predict_many(scenes: Sequence[Path], output: str | Path, settings: PredictSettings, ckpt: str | None = None,
                 models: Sequence[Mapping[str, Any]] | None = None, overwrite: bool = False,
                 pattern: str = OUTPUT_PATTERN, single_output: bool = False,
                 on_result: Callable[[SceneResult], None] | None = None) -> list[SceneResult]:
    """Predict every scene (already sharded); one bad scene is reported and skipped."""
    out = Path(output)
    check_writable(out.parent if single_output and out.suffix.lower() in (".tif", ".tiff") else out)
    loaded: dict[str, ModelInfo] = {}
    results = []
    for scene in scenes:
        target = output_path(scene, output, pattern, single_output)
        try:
            if target.exists() and not overwrite:
                res = SceneResult(str(scene), str(target), "skipped", message="output exists (overwrite=true to redo)")
            else:
                path = checkpoint_for(scene, ckpt, models)
                if path not in loaded:
                    loaded[path] = load_checkpoint_model(path, settings.device, settings.precision, settings.tta)
                res = predict_scene(scene, target, loaded[path], settings, overwrite)
        except UserError as err:
            if models is None and ckpt and ckpt not in loaded and str(err).startswith(f"{ckpt}:"):
                raise  # a bad checkpoint fails every scene: stop at once
            res = SceneResult(str(scene), str(target), "failed", message=str(err))
        results.append(res)
        if on_result:
            on_result(res)
    return results


def settings_from_dict(d: Mapping[str, Any]) -> PredictSettings:
    known = {f for f in PredictSettings.__dataclass_fields__}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"unknown prediction setting(s): {', '.join(unknown)}")
    return PredictSettings(**{k: v for k, v in d.items()})


def summary_dict(results: Iterable[SceneResult]) -> dict[str, Any]:
    results = list(results)
    return {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")} | {
        "megapixels": round(sum(r.megapixels for r in results), 3),
        "seconds": round(sum(r.seconds for r in results), 2),
        "results": [asdict(r) for r in results],
    }
