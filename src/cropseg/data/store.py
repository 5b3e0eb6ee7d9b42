"""A packed patch store: H5 patches repacked once for fast random access during training.

The per-patch H5 files (gzip, small chunks) decode at ~150 patches/s per core, far below
what a GPU trains on. ``pack`` rewrites them once into a folder of a few raw,
memory-mappable ``.npy`` arrays, one contiguous block per patch, plus the training index:

``STORE/``
  ``image16.npy``   (N, C16, H, W) float16: bands whose values fit float16 (reflectance, NDVI)
  ``image32.npy``   (N, C32, H, W) float32: wide-range bands (Dem by default; exact)
  ``label.npy``     (N, 1, H, W)   uint8: 0/1, ``255`` where the label is nodata (NaN)
  ``index.csv``     the training index (cropseg.data.index columns + ``row``), one row per patch
  ``manifest.json`` bands, dtypes, shapes, sizes, rounding error, measured read rate: written last

Raw values are stored (not normalized), so the normalization stays a training option.
Nodata in the image stays NaN (float16 and float32 hold NaN), so validity is computed
exactly as from the H5 files. A store without ``manifest.json`` is an unfinished build:
readers refuse it and ``pack`` resumes it (finished chunks are recorded in ``.parts/``).

Readers open their memory maps lazily in each process (after DataLoader workers fork),
so one store serves any number of workers without copies.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import pandas as pd

from cropseg.bands import Normalization
from cropseg.errors import UserError
from cropseg.io import atomic_path, write_text_atomic
from cropseg.maps import NODATA

from .datamodule import PatchDataset
from .index import INDEX_COLUMNS, describe_arrays
from .patches import list_patches, patch_path, read_list, read_patch
from .transforms import IGNORE, AugmentConfig, crop_window

FORMAT = "cropseg-packed-store"
VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"
PARTS = ".parts"
INDEX = "index.csv"
ARRAYS = {"image16": np.float16, "image32": np.float32, "label": np.uint8}
LABEL_NODATA = NODATA  # cropseg's one nodata value (cropseg.maps.NODATA), the training IGNORE
#: Bands stored as float32 by default: Dem in metres reaches ~9000, where float16's step is 8 m.
DEFAULT_FLOAT32_BANDS = ("Dem",)
F16_MAX = float(np.finfo(np.float16).max)
CHUNK = 32  # patches per unit of work (and of resumption)


# --------------------------------------------------------------------------- reading


def _load_manifest(store: Path, key: str = "data.store") -> dict:
    if not store.exists():
        raise UserError(f"{key}={store}: packed store not found (build it with: cropseg prepare pack root=DIR out={store})")
    if not store.is_dir():
        raise UserError(f"{key}={store}: not a packed store folder")
    path = store / MANIFEST
    if not path.is_file():
        if (store / PLAN).is_file():
            raise UserError(f"{store}: incomplete packed store (its build was interrupted); rerun "
                            f"cropseg prepare pack with out={store} to finish it")
        raise UserError(f"{key}={store}: not a packed store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable store manifest ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{path}: not a version-{VERSION} cropseg packed store; rebuild it with cropseg prepare pack")
    return manifest


class PackedStore:
    """A finished store: its manifest, index and (lazily, per process) memory-mapped arrays."""

    def __init__(self, path: str | Path, key: str = "data.store") -> None:
        self.path = Path(path)
        self.manifest = _load_manifest(self.path, key)
        m = self.manifest
        self.bands: tuple[str, ...] = tuple(m["bands"])
        self.bands16: tuple[str, ...] = tuple(m["bands16"])
        self.bands32: tuple[str, ...] = tuple(m["bands32"])
        self.count, self.height, self.width = int(m["count"]), int(m["height"]), int(m["width"])
        for name, dtype in ARRAYS.items():
            f = self.path / f"{name}.npy"
            if not f.is_file():
                raise UserError(f"{f}: store file missing; rebuild the store with cropseg prepare pack")
            if f.stat().st_size != m["files"][name]:
                raise UserError(f"{f}: store file has {f.stat().st_size} bytes, manifest says {m['files'][name]} "
                                "(truncated or replaced); rebuild the store")
        try:
            self.index = pd.read_csv(self.path / INDEX, dtype={"name": str, "bands": str})
        except FileNotFoundError:
            raise UserError(f"{self.path / INDEX}: store file missing; rebuild the store with cropseg prepare pack") from None
        if len(self.index) != self.count or list(self.index.columns) != INDEX_COLUMNS + ["row"]:
            raise UserError(f"{self.path / INDEX}: does not match the store manifest; rebuild the store")
        self.names: list[str] = self.index.name.tolist()
        self.rows: dict[str, int] = dict(zip(self.names, self.index.row.astype(int)))
        self._maps: dict[str, np.ndarray] | None = None
        self._pid = -1

    def __getstate__(self) -> dict:  # pickled into workers without open maps
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = None, -1
        return state

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._maps is None or self._pid != os.getpid():
            # Copy-on-write maps: read like "r", but torch can wrap their slices without a read-only warning.
            self._maps = {name: np.load(self.path / f"{name}.npy", mmap_mode="c") for name in ARRAYS}
            self._pid = os.getpid()
        return self._maps

    def read_raw(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored blocks of one patch, copied: float16 (C16, H, W), float32 (C32, H, W), uint8 (1, H, W)."""
        a = self.arrays
        return np.array(a["image16"][row]), np.array(a["image32"][row]), np.array(a["label"][row])

    def band_source(self, bands: Sequence[str]) -> list[tuple[str, int]]:
        """For each of ``bands``: which array holds it and at which channel."""
        out = []
        for b in bands:
            if b in self.bands16:
                out.append(("image16", self.bands16.index(b)))
            elif b in self.bands32:
                out.append(("image32", self.bands32.index(b)))
            else:
                raise UserError(f"{self.path}: store has bands {list(self.bands)}, data.bands asks for {list(bands)}")
        return out

    def read(self, row: int, bands: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Float32 (C, H, W) raw image (NaN nodata) and float32 (1, H, W) label (NaN nodata) of one patch."""
        bands = self.bands if bands is None else bands
        a = self.arrays
        image = np.empty((len(bands), self.height, self.width), np.float32)
        for k, (arr, ch) in enumerate(self.band_source(bands)):
            image[k] = a[arr][row, ch]
        label = np.array(a["label"][row], dtype=np.float32)
        label[label == LABEL_NODATA] = np.nan
        return image, label


class StoreDataset(PatchDataset):
    """Patches of one split read from a packed store; yields exactly what ``PatchDataset`` yields.

    Cropping and augmentation are PatchDataset's (shared ``__getitem__``); only ``load`` differs.
    With ``raw=True`` (training with augmentation on the device) items are the stored values
    instead, and ``finish_batch`` turns a transferred batch of them into finished items' batch.
    """

    def __init__(self, store: PackedStore, names: Sequence[str], bands: Sequence[str], normalization: Normalization,
                 crop_size: int | None = None, augment_cfg: AugmentConfig | None = None, seed: int = 0,
                 raw: bool = False) -> None:
        super().__init__(store.path, names, bands, normalization, None, crop_size, augment_cfg, seed)
        self.store = store
        self.rows = np.array([store.rows[n] for n in self.names], dtype=np.int64)
        sources = store.band_source(self.bands)
        # Runs of consecutive channels of one array: (array, first channel, first output channel, count).
        self.runs: list[tuple[str, int, int, int]] = []
        for k, (arr, ch) in enumerate(sources):
            last = self.runs[-1] if self.runs else None
            if last and last[0] == arr and last[1] + last[3] == ch:
                self.runs[-1] = (arr, last[1], last[2], last[3] + 1)
            else:
                self.runs.append((arr, ch, k, 1))
        # raw=True: items hold the stored values (no conversion, normalization or mask) and
        # finish_batch completes whole batches after transfer; augmentation must then be batched too.
        if raw and augment_cfg is not None:
            raise ValueError("raw store items are augmented after finish_batch, not per item")
        self.raw = raw
        # Per array: its channels to read, and where they go in the finished image (a slice when
        # they stay consecutive, the usual case, else an index for index_copy_).
        self.raw_channels: dict[str, list[int]] = {}
        self.raw_targets: dict[str, slice | torch.Tensor] = {}
        for arr in ("image16", "image32"):
            self.raw_channels[arr] = [ch for a, ch in sources if a == arr]
            pos = [k for k, (a, _) in enumerate(sources) if a == arr]
            if pos and pos == list(range(pos[0], pos[0] + len(pos))):
                self.raw_targets[arr] = slice(pos[0], pos[0] + len(pos))
            else:
                self.raw_targets[arr] = torch.tensor(pos, dtype=torch.long)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a = self.store.arrays
        row = int(self.rows[i])
        # float16 -> float32 through torch: ~10x numpy's conversion, the largest cost of a store read.
        image = torch.empty((len(self.bands), self.store.height, self.store.width), dtype=torch.float32)
        for arr, ch, k, n in self.runs:
            image[k:k + n].copy_(torch.from_numpy(a[arr][row, ch:ch + n]))
        image = image.numpy()
        label = np.array(a["label"][row], dtype=np.float32)  # nodata 255 == IGNORE
        return self.finish(image, label, label[0] != LABEL_NODATA)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not self.raw:
            return super().__getitem__(i)
        a, row = self.store.arrays, int(self.rows[i])
        window = (slice(None), slice(None))
        if self.crop_size:
            window = crop_window(self.store.height, self.store.width, self.crop_size, self.generator(i)) or window
        # Crop the memory-mapped view first: one copy per array, of the window's pixels only.
        item: dict[str, Any] = {arr: torch.from_numpy(a[arr][row][(slice(None), *window)][self.raw_channels[arr]])
                                for arr in ("image16", "image32")}
        item["label8"] = torch.from_numpy(np.ascontiguousarray(a["label"][row][(slice(None), *window)]))
        return self.item(i, item)

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of raw items (on any device) → what a batch of finished items holds: the network
        input ``image`` (model-input contract), float32 ``mask`` with IGNORE where image or label has
        no data. Bit-identical to finishing each item in the worker (the same Preprocess)."""
        x16, x32, label = batch.pop("image16"), batch.pop("image32"), batch.pop("label8")
        n, _, h, w = x16.shape
        image = torch.empty((n, len(self.bands), h, w), dtype=torch.float32, device=x16.device)
        for arr, x in (("image16", x16), ("image32", x32)):
            target = self.raw_targets[arr]
            if isinstance(target, slice):
                image[:, target].copy_(x)  # converts while copying
            elif len(target):
                image.index_copy_(1, target.to(x.device), x.float())
        ignore = self.preprocess.finish_(image) | (label == LABEL_NODATA)
        mask = label.float()
        if image.device.type != "cpu" or bool(ignore.any()):  # no host sync on a GPU
            mask.masked_fill_(ignore, IGNORE)
        batch["image"], batch["mask"] = image, mask
        return batch


# --------------------------------------------------------------------------- packing


def _pack_chunk(job: dict) -> dict:
    """Pack rows [start, stop) of the plan into the open arrays; record the chunk as done."""
    out, root, plan = Path(job["out"]), Path(job["root"]), job["plan"]
    b16, b32 = plan["bands16"], plan["bands32"]
    maps = {name: np.load(out / f"{name}.npy", mmap_mode="r+") for name in ARRAYS}
    rows, err16 = [], np.zeros(len(b16))
    for row in range(job["start"], job["stop"]):
        name = plan["names"][row]
        path = patch_path(root, name)
        try:
            st = path.stat()
            patch = read_patch(path)
        except FileNotFoundError:
            return {"error": f"{path}: patch file not found"}
        except UserError as err:
            return {"error": str(err)}
        have = patch.bands
        if patch.data.shape[:2] != (plan["height"], plan["width"]):
            return {"error": f"{path}: patch size {patch.data.shape[0]}x{patch.data.shape[1]} differs from the "
                             f"store's {plan['height']}x{plan['width']} (first patch)"}
        missing = [b for b in plan["bands"] if b not in have]
        if missing:
            return {"error": f"{path}: has bands {list(have)}, the store needs {plan['bands']}"}
        data = patch.data[..., [have.index(b) for b in plan["bands"]]]
        label = patch.label
        chw = data.transpose(2, 0, 1)
        if b16:
            src = chw[[plan["bands"].index(b) for b in b16]]
            f16 = src.astype(np.float16)
            finite = np.isfinite(src)
            if (np.isinf(f16) & finite).any():
                k = int(np.argmax((np.isinf(f16) & finite).any(axis=(1, 2))))
                return {"error": f"{path}: band {b16[k]} has values beyond float16's range (±{F16_MAX:.0f}); "
                                 f"pack it as float32 (float32_bands={','.join(list(b32) + [b16[k]])})"}
            diff = np.where(finite, np.abs(f16.astype(np.float32) - src), 0.0)
            err16 = np.maximum(err16, diff.max(axis=(1, 2)))
            maps["image16"][row] = f16
        if b32:
            maps["image32"][row] = chw[[plan["bands"].index(b) for b in b32]]
        lab = label[..., 0]
        finite = np.isfinite(lab)
        bad = finite & ((lab != np.round(lab)) | (lab < 0) | (lab >= LABEL_NODATA))
        if bad.any():
            return {"error": f"{path}: label values must be integers 0..254 to pack (found {float(lab[bad][0])})"}
        maps["label"][row, 0] = np.where(finite, lab, LABEL_NODATA).astype(np.uint8)
        rec = describe_arrays(name, data, label, plan["bands"], st)
        rec["row"] = row
        rows.append(rec)
    for m in maps.values():
        m.flush()
    del maps
    part = out / PARTS / f"{job['start']:09d}.json"
    write_text_atomic(part, json.dumps({"rows": rows, "err16": err16.tolist()}))
    return {"done": job["stop"] - job["start"]}


def _plan(root: Path, names: Sequence[str], float32_bands: Sequence[str], bands: Sequence[str] | None) -> dict:
    first = read_patch(patch_path(root, names[0]))
    bands = tuple(bands) if bands else first.bands
    missing = [b for b in bands if b not in first.bands]
    if missing:
        raise UserError(f"{patch_path(root, names[0])}: has bands {list(first.bands)}, pack bands= asks for {list(bands)}")
    f32 = set(first.bands if "all" in float32_bands else float32_bands)
    h, w = first.data.shape[:2]
    sources = []
    for n in names:
        try:
            st = patch_path(root, n).stat()
        except FileNotFoundError:
            raise UserError(f"{patch_path(root, n)}: patch file not found") from None
        sources.append([st.st_size, st.st_mtime_ns])
    return {"format": FORMAT, "version": VERSION, "root": str(root.resolve()), "names": list(names),
            "sources": sources, "bands": list(bands), "bands16": [b for b in bands if b not in f32],
            "bands32": [b for b in bands if b in f32], "height": int(h), "width": int(w)}


def _same_plan(a: dict, b: dict) -> bool:
    keys = ("format", "version", "names", "sources", "bands", "bands16", "bands32", "height", "width")
    return all(a.get(k) == b.get(k) for k in keys)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _create_arrays(out: Path, plan: dict) -> None:
    n, h, w = len(plan["names"]), plan["height"], plan["width"]
    shapes = {"image16": (n, len(plan["bands16"]), h, w), "image32": (n, len(plan["bands32"]), h, w), "label": (n, 1, h, w)}
    for name, dtype in ARRAYS.items():
        with atomic_path(out / f"{name}.npy") as tmp:
            m = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shapes[name])  # sparse until written
            m.flush()
            del m


def measure_read_rate(store: PackedStore, samples: int = 500, seed: int = 0) -> dict:
    """Random patch reads from the store (raw blocks copied out of the memory maps): patches/s and MB/s."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, store.count, min(samples, max(store.count, 1) * 4))
    t, nbytes = time.perf_counter(), 0
    for r in rows:
        a, b, c = store.read_raw(int(r))
        nbytes += a.nbytes + b.nbytes + c.nbytes
    dt = max(time.perf_counter() - t, 1e-9)
    return {"patches_per_s": len(rows) / dt, "mb_per_s": nbytes / dt / 1e6, "samples": int(len(rows)),
            "note": "random reads, one process, page cache as left by the build"}


def pack(root: str | Path, out: str | Path, *, names: Sequence[str] | None = None, bands: Sequence[str] | None = None,
         float32_bands: Sequence[str] = DEFAULT_FLOAT32_BANDS, workers: int = 0, overwrite: bool = False,
         progress: bool = False, measure: bool = True) -> dict:
    """Build (or resume, or confirm) a packed store of the H5 patches ``names`` (default: all) in ``root``.

    Returns a summary: counts, seconds, size in bytes, read rate. A finished store of the
    same input is left as it is; an interrupted build of the same input resumes.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise UserError(f"prepare pack: root={root}: folder not found")
    names = sorted(dict.fromkeys(names)) if names is not None else list_patches(root)
    if not names:
        raise UserError(f"prepare pack: root={root}: no .h5 patches to pack")
    t0 = time.perf_counter()
    plan = _plan(root, names, float32_bands, bands)
    if out.exists() and not out.is_dir():
        raise UserError(f"prepare pack: out={out} exists and is not a folder")
    old_plan = _read_json(out / PLAN)
    if out.is_dir() and any(out.iterdir()) and old_plan is None:
        raise UserError(f"prepare pack: out={out} is a non-empty folder that is not a packed store; choose another out=")
    finished = (out / MANIFEST).is_file()
    if old_plan is not None and (overwrite or not _same_plan(old_plan, plan)):
        if finished and not overwrite:
            raise UserError(f"prepare pack: out={out} holds a store of different input (patches, bands or files "
                            "changed); give overwrite=true to rebuild it")
        shutil.rmtree(out)  # our own store (plan.json present), stale or to be overwritten
        old_plan, finished = None, False
    if finished:
        store = PackedStore(out, key="out")
        summary = {**store.manifest["summary"], "status": "already complete", "seconds": time.perf_counter() - t0}
        return summary
    out.mkdir(parents=True, exist_ok=True)
    resumed = old_plan is not None
    if not resumed:
        _create_arrays(out, plan)
        write_text_atomic(out / PLAN, json.dumps(plan))
    (out / PARTS).mkdir(exist_ok=True)
    done = {int(p.stem) for p in (out / PARTS).glob("*.json")}
    n = len(names)
    jobs = [{"out": str(out), "root": str(root), "plan": plan, "start": s, "stop": min(s + CHUNK, n)}
            for s in range(0, n, CHUNK) if s not in done]
    skipped = n - sum(j["stop"] - j["start"] for j in jobs)
    from tqdm.auto import tqdm

    from cropseg.parallel import parallel_map

    errors: list[str] = []
    with tqdm(total=n, initial=skipped, desc="packing patches", unit="patch", disable=not progress) as bar:
        for res in parallel_map(_pack_chunk, jobs, workers, chunksize=1):
            errors += [res["error"]] if "error" in res else []
            bar.update(res.get("done", 0))
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise UserError(f"prepare pack: {len(errors)} patch(es) could not be packed: " + "; ".join(errors[:3]) + more
                        + f"; fix them (or pass list=) and rerun: finished chunks in {out} are kept")
    rows, err16 = [], np.zeros(len(plan["bands16"]))
    for p in sorted((out / PARTS).glob("*.json")):
        part = json.loads(p.read_text())
        rows += part["rows"]
        err16 = np.maximum(err16, part["err16"])
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS + ["row"]).sort_values("row").reset_index(drop=True)
    if len(index) != n or not (index.row.to_numpy() == np.arange(n)).all():
        raise UserError(f"{out}: build records are inconsistent; remove {out} and pack again")
    with atomic_path(out / INDEX) as tmp:
        index.to_csv(tmp, index=False)
    files = {name: (out / f"{name}.npy").stat().st_size for name in ARRAYS}
    size = sum(files.values()) + (out / INDEX).stat().st_size
    source_bytes = int(sum(s for s, _ in plan["sources"]))
    seconds = time.perf_counter() - t0
    manifest = {
        "format": FORMAT, "version": VERSION, "bands": plan["bands"], "bands16": plan["bands16"],
        "bands32": plan["bands32"], "dtypes": {**{b: "float16" for b in plan["bands16"]},
                                               **{b: "float32" for b in plan["bands32"]}, "label": "uint8"},
        "label_nodata": LABEL_NODATA, "layout": "N,C,H,W", "count": n, "height": plan["height"],
        "width": plan["width"], "source_root": plan["root"], "files": files,
        "float16_max_abs_error": dict(zip(plan["bands16"], map(float, err16))),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary = {"status": "resumed" if resumed else "built", "patches": n, "packed_now": n - skipped,
               "resumed_from": skipped, "bytes": size, "source_bytes": source_bytes, "seconds": seconds, "out": str(out)}
    manifest["summary"] = summary
    # Written last, atomically: its presence is what makes the store readable.
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    if measure:
        rate = measure_read_rate(PackedStore(out, key="out"))
        summary["read_rate"] = rate
        manifest["summary"] = summary
        write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    shutil.rmtree(out / PARTS, ignore_errors=True)
    return summary


def format_summary(s: dict) -> str:
    lines = [f"packed store {s['out']}: {s['status']}, {s['patches']} patch(es)"
             + (f" ({s['packed_now']} packed now, {s['resumed_from']} from an interrupted build)" if s.get("resumed_from") else "")
             + f" in {s['seconds']:.1f}s",
             f"  size {s['bytes'] / 1e6:,.1f} MB (H5 source {s['source_bytes'] / 1e6:,.1f} MB)"]
    rate = s.get("read_rate")
    if rate:
        lines.append(f"  measured read rate: {rate['patches_per_s']:,.0f} patches/s ({rate['mb_per_s']:,.0f} MB/s), "
                     f"{rate['samples']} random reads, one process")
    lines.append(f"  train from it: python -m cropseg.train data=packed data.store={s['out']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        v = v.strip("[]").split(",")
    return [str(s).strip() for s in v if str(s).strip()]


def run_pack(o: dict) -> int:
    """``cropseg prepare pack`` with its parsed options (declared in cropseg.prepare); prints the summary."""
    if not o.get("root"):
        raise UserError("prepare pack: root=DIR is required")
    if not o.get("out"):
        raise UserError("prepare pack: out=STORE is required")
    names = [n for f in _as_list(o.get("list")) for n in read_list(f)] if o.get("list") else None
    f32 = o.get("float32_bands", DEFAULT_FLOAT32_BANDS)
    summary = pack(o["root"], o["out"], names=names, bands=_as_list(o.get("bands")) or None,
                   float32_bands=_as_list(f32), workers=int(o.get("workers") or 0),
                   overwrite=bool(o.get("overwrite")), progress=sys.stderr.isatty())
    print(format_summary(summary))
    return 0
