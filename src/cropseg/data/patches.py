"""H5 patch files in the original workflow's format.

``{GridID}-{PointID}.h5`` holds ``data`` (H, W, C float32) and ``label`` (H, W, 1
float32, cropland 1 / other 0); list files hold names without ``.h5``. Files written
here add attributes (band names, grid and point id, year, source); files without them
(the original exports) read just the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from cropseg.bands import DEFAULT_BANDS
from cropseg.errors import UserError
from cropseg.io import atomic_path

SUFFIX = ".h5"


def patch_name(grid_id: int | str, point_id: int | str) -> str:
    """The file stem of a patch: ``{GridID}-{PointID}`` with integral ids written without decimals."""

    def fmt(v: int | str | float) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return f"{fmt(grid_id)}-{fmt(point_id)}"


def patch_path(root: str | Path, name: str) -> Path:
    return Path(root) / f"{name}{SUFFIX}"


@dataclass
class Patch:
    data: np.ndarray  # (H, W, C) float32
    label: np.ndarray  # (H, W, 1) float32
    bands: tuple[str, ...]
    attrs: dict[str, Any]


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The attributes of a patch file (empty for original exports)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: _decode(v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: not a readable H5 patch ({_short(err)})") from None


def file_bands(attrs: dict[str, Any], channels: int) -> tuple[str, ...]:
    """Band names recorded in a file, or the default order when a 7-band file records none."""
    bands = attrs.get("bands")
    if bands:
        return tuple(bands)
    if channels == len(DEFAULT_BANDS):
        return DEFAULT_BANDS
    return tuple(f"band{i + 1}" for i in range(channels))


def read_patch(path: str | Path, with_label: bool = True, with_attrs: bool = True) -> Patch:
    """Read one patch; a truncated, corrupt or malformed file raises a UserError naming it.

    ``with_attrs=False`` skips the attributes (bands then default by channel count): the
    training loader already knows each file's bands from the index, and h5py attribute
    reads cost ~5 % of a patch read.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise UserError(f"{path}: no 'data' dataset (has: {sorted(f.keys())})")
            data = f["data"][()]
            label = None
            if with_label:
                if "label" not in f:
                    raise UserError(f"{path}: no 'label' dataset (has: {sorted(f.keys())})")
                label = f["label"][()]
            attrs = {k: _decode(v) for k, v in f.attrs.items()} if with_attrs else {}
    except FileNotFoundError:
        raise UserError(f"{path}: patch file not found") from None
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"{path}: corrupt or truncated H5 patch ({_short(err)})") from None
    if data.ndim != 3:
        raise UserError(f"{path}: 'data' has shape {data.shape}; expected (height, width, bands)")
    if label is not None:
        if label.ndim == 2:
            label = label[..., None]
        if label.shape[:2] != data.shape[:2] or label.shape[2] != 1:
            raise UserError(f"{path}: 'label' has shape {label.shape}; expected {data.shape[:2] + (1,)}")
        label = label.astype(np.float32, copy=False)
    return Patch(data.astype(np.float32, copy=False), label, file_bands(attrs, data.shape[2]), attrs)


def write_patch(
    path: str | Path,
    data: np.ndarray,
    label: np.ndarray,
    bands: Sequence[str] = DEFAULT_BANDS,
    *,
    grid_id: int | str | None = None,
    point_id: int | str | None = None,
    year: int | None = None,
    source: str | None = None,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
    extra_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one patch atomically: a crash never leaves a half-written ``.h5``."""
    path = Path(path)
    data = np.asarray(data, dtype=np.float32)
    label = np.asarray(label, dtype=np.float32)
    if label.ndim == 2:
        label = label[..., None]
    if data.ndim != 3 or data.shape[2] != len(bands):
        raise ValueError(f"data shape {data.shape} does not match {len(bands)} bands")
    if label.shape != data.shape[:2] + (1,):
        raise ValueError(f"label shape {label.shape} does not match data {data.shape}")
    opts = compression_opts if compression == "gzip" else None
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=data, compression=compression, compression_opts=opts)
            f.create_dataset("label", data=label, compression=compression, compression_opts=opts)
            f.attrs["bands"] = np.array(list(bands), dtype=h5py.string_dtype())
            f.attrs["label_name"] = "Cropland"
            for key, value in (("grid_id", grid_id), ("point_id", point_id), ("year", year), ("source", source)):
                if value is not None:
                    f.attrs[key] = value
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value
    return path


def read_list(path: str | Path) -> list[str]:
    """Patch names from a list file: one per line, ``.h5`` optional, blanks and ``#`` comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read list file ({_short(err)})") from None
    names = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names.append(line[: -len(SUFFIX)] if line.endswith(SUFFIX) else line)
    return names


def write_list(path: str | Path, names: Sequence[str]) -> Path:
    from cropseg.io import write_text_atomic

    write_text_atomic(path, "".join(f"{n}\n" for n in names))
    return Path(path)


def list_patches(root: str | Path) -> list[str]:
    """Names of every ``.h5`` patch in ``root`` (sorted)."""
    return sorted(p.stem for p in Path(root).glob(f"*{SUFFIX}") if not p.name.startswith("."))


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
