"""The dataset index: one row per patch, built once and cached.

Sampling needs every patch's cropland fraction and class, and validation needs shapes;
reading thousands of H5 files at every epoch start would be slow, so the index is
computed once and reused while the files are unchanged (same size and mtime).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cropseg.errors import UserError
from cropseg.io import atomic_path
from cropseg.parallel import parallel_map

from .patches import patch_path, read_patch

#: Number of oversampling classes: c = floor((rp + 0.05) * 10) takes values 0..10.
NUM_CLASSES = 11
INDEX_COLUMNS = ["name", "height", "width", "channels", "bands", "rp", "c", "nodata_frac",
                 "label_min", "label_max", "size", "mtime_ns"]


def patch_class(rp: float | np.ndarray) -> int | np.ndarray:
    """Oversampling class from the cropland fraction: ``floor((rp + 0.05) * 10)`` (0.23 → 2).

    A small epsilon absorbs floating-point error at the class edges (0.25 → 3, not 2).
    """
    c = np.floor((np.asarray(rp, dtype=np.float64) + 0.05) * 10 + 1e-9).astype(np.int64)
    c = np.clip(c, 0, NUM_CLASSES - 1)
    return int(c) if np.ndim(c) == 0 else c


def describe_arrays(name: str, data: np.ndarray, label: np.ndarray, bands: Sequence[str], st: os.stat_result) -> dict:
    """One index row from a patch's arrays (H, W, C) and (H, W, 1) and its file's stat."""
    valid = np.isfinite(data).all(axis=2) & np.isfinite(label[..., 0])
    lab = label[..., 0][valid]
    rp = float(lab.mean()) if lab.size else 0.0
    return {
        "name": name,
        "height": data.shape[0],
        "width": data.shape[1],
        "channels": data.shape[2],
        "bands": ",".join(bands),
        "rp": rp,
        "c": patch_class(rp),
        "nodata_frac": float(1.0 - valid.mean()),
        "label_min": float(lab.min()) if lab.size else 0.0,
        "label_max": float(lab.max()) if lab.size else 0.0,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def describe_patch(path: str | Path) -> dict:
    """One index row: shape, bands, cropland fraction over valid pixels, class, nodata fraction."""
    path = Path(path)
    st = path.stat()
    patch = read_patch(path)
    return describe_arrays(path.stem, patch.data, patch.label, patch.bands, st)


def _describe_or_error(path: Path) -> dict | str:
    try:
        return describe_patch(path)
    except UserError as err:
        return str(err)


def default_cache_path(root: str | Path) -> Path:
    """Where the index of ``root`` is cached: beside the user's other caches, not in the data folder.

    Data folders are often shared or read-only; the cache is keyed by the folder's absolute path.
    """
    base = Path(os.environ.get("CROPSEG_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cropseg")
    key = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return base / "index" / f"{Path(root).resolve().name}-{key}.csv"


def _load_cache(path: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path, dtype={"name": str, "bands": str})
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if list(df.columns) != INDEX_COLUMNS:
        return None
    return df


def build_index(
    root: str | Path,
    names: Sequence[str],
    *,
    cache: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Index rows for ``names`` in ``root`` (in that order), reading only files not in the cache.

    Missing files are the caller's business (see ``find_missing``); corrupt files raise a
    UserError listing the first few.
    """
    root = Path(root)
    cache_path = Path(cache) if cache else default_cache_path(root)
    cached = _load_cache(cache_path)
    rows: dict[str, dict] = {}
    if cached is not None:
        for rec in cached.to_dict("records"):
            rows[rec["name"]] = rec
    todo = []
    for name in dict.fromkeys(names):
        path = patch_path(root, name)
        rec = rows.get(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UserError(f"{path}: patch file not found") from None
        if rec is None or int(rec["size"]) != st.st_size or int(rec["mtime_ns"]) != st.st_mtime_ns:
            todo.append(path)
    if todo:
        results = _describe_many(todo, workers, progress)
        errors = [r for r in results if isinstance(r, str)]
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise UserError(f"{len(errors)} unreadable patch(es): " + "; ".join(errors[:3]) + more)
        for rec in results:
            rows[rec["name"]] = rec
        df_all = pd.DataFrame(list(rows.values()), columns=INDEX_COLUMNS)
        try:
            with atomic_path(cache_path) as tmp:
                df_all.to_csv(tmp, index=False)
        except OSError:
            pass  # a cache that cannot be written only costs time
    df = pd.DataFrame([rows[n] for n in names], columns=INDEX_COLUMNS)
    return df.reset_index(drop=True)


def _describe_many(paths: list[Path], workers: int, progress: bool) -> list[dict | str]:
    from tqdm.auto import tqdm

    bar = dict(total=len(paths), desc="indexing patches", unit="patch", disable=not progress)
    # A handful of patches is read faster than processes start.
    return list(tqdm(parallel_map(_describe_or_error, paths, workers if len(paths) > 8 else 1), **bar))


def find_missing(root: str | Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not patch_path(root, n).is_file()]
