"""Earth Engine TFRecords: read (robustly), inspect, convert to H5 patches, and write (for the demo and tests).

Earth Engine's ``Export.table.toDrive(fileFormat='TFRecord')`` after ``neighborhoodToArray``
+ ``sampleRegions`` writes one GZIP TFRecord file per export (one per grid cell), one
``tf.train.Example`` per sample point: every band a flat float list of (2k+1)² values
(row-major) and scalar properties such as ``ID`` and ``GridID``.

No TensorFlow: protos come from the ``tfrecord`` package (``tfrecord.example_pb2``) and its
writer serializes records. Its reader is not used for conversion because it cannot survive
bad input: it decompresses a GZIP file twice (once only to learn its length, so a truncated
file fails before its first record), never checks the CRCs, and stops a whole file at the
first malformed record. ``iter_records`` here frames records itself, checks both CRCs
(masked CRC32C, as TensorFlow writes them) and reports what went wrong where, yielding every
good record before the damage.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tfrecord import example_pb2
from tfrecord.writer import TFRecordWriter

from cropseg.bands import DEFAULT_BANDS, LABEL_BAND
from cropseg.errors import UserError
from cropseg.io import atomic_path, process_alive

from .patches import patch_name, patch_path, read_attrs, write_patch

#: Folder (in the output) where the workers of one conversion claim patch names; its owner's pid follows.
CLAIMS_PREFIX = ".convert-claims-"
#: Scalar properties of every Earth Engine sample record.
ID_KEY = "ID"
GRID_KEY = "GridID"
GZIP_MAGIC = b"\x1f\x8b"
_MAX_RECORD = 1 << 31  # a length above 2 GiB is a corrupt header, not a record


class RecordError(Exception):
    """One record cannot be used; the message says why (it goes to the summary and log)."""


class FileDamage(Exception):
    """The rest of a file cannot be read (truncated, corrupt stream, bad length CRC)."""


def masked_crc(data: bytes | memoryview) -> bytes:
    """TensorFlow's masked CRC32C of ``data`` (4 bytes, little-endian)."""
    return TFRecordWriter.masked_crc(bytes(data))


def _open(path: Path) -> io.BufferedIOBase:
    f = open(path, "rb")
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def iter_records(path: str | Path, check_crc: bool = True) -> Iterator[tuple[int, bytes | RecordError]]:
    """Yield ``(index, record_bytes)`` for each record, or ``(index, RecordError)`` for a bad one.

    GZIP or plain TFRecord (detected from the magic bytes). A record whose data CRC does not
    match is yielded as a RecordError and reading goes on (its length was trustworthy); a
    truncated file, a corrupt GZIP stream or a length whose CRC does not match raises
    FileDamage after every good record before it has been yielded.
    """
    path = Path(path)
    try:
        f = _open(path)
    except FileNotFoundError:
        raise UserError(f"{path}: TFRecord file not found") from None
    index = 0
    try:
        with f:
            while True:
                header = f.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise FileDamage(f"truncated after {index} record(s) (incomplete record header)")
                length_bytes, length_crc = header[:8], header[8:]
                if check_crc and masked_crc(length_bytes) != length_crc:
                    raise FileDamage(f"record {index}: length CRC mismatch (corrupt file); rest of file unreadable")
                (length,) = struct.unpack("<Q", length_bytes)
                if length > _MAX_RECORD:
                    raise FileDamage(f"record {index}: implausible length {length}")
                data = f.read(length)
                crc = f.read(4)
                if len(data) < length or len(crc) < 4:
                    raise FileDamage(f"truncated after {index} record(s) (record {index} incomplete)")
                if check_crc and masked_crc(data) != crc:
                    yield index, RecordError("data CRC mismatch (corrupt record)")
                else:
                    yield index, data
                index += 1
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        kind = "truncated GZIP stream" if isinstance(err, EOFError) else f"corrupt GZIP stream ({err})"
        raise FileDamage(f"{kind} after {index} record(s)") from None


def parse_example(record: bytes) -> dict[str, np.ndarray | bytes | list]:
    """All features of a serialized ``tf.train.Example``: float and int lists as arrays."""
    ex = example_pb2.Example()
    try:
        ex.ParseFromString(record)
    except Exception as err:  # protobuf's DecodeError and friends
        raise RecordError(f"not a tf.train.Example ({type(err).__name__})") from None
    out: dict[str, Any] = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "float_list":
            out[key] = np.array(feat.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[key] = np.array(feat.int64_list.value, dtype=np.int64)
        elif kind == "bytes_list":
            out[key] = list(feat.bytes_list.value)
        else:
            out[key] = np.zeros(0, np.float32)
    return out


def _scalar_id(features: dict, key: str) -> int | float | str:
    if key not in features:
        raise RecordError(f"property {key!r} missing")
    v = features[key]
    if isinstance(v, list):
        if len(v) != 1:
            raise RecordError(f"property {key!r} has {len(v)} values; expected 1")
        return v[0].decode(errors="replace")
    if v.size != 1:
        raise RecordError(f"property {key!r} has {v.size} values; expected 1")
    x = v.item()
    if isinstance(x, float):
        if not math.isfinite(x):
            raise RecordError(f"property {key!r} is {x}")
        return int(x) if x.is_integer() else x
    return x


@dataclass(frozen=True)
class ConvertSpec:
    """How records become patches."""

    bands: tuple[str, ...] = DEFAULT_BANDS
    label: str = LABEL_BAND
    in_size: int | None = None  # None: from each record's band length (must be a square)
    out_size: int = 192
    max_nodata: float = 0.5  # skip a record whose cropped patch has more nodata than this
    year: int | None = None
    compression: str | None = "gzip"
    level: int = 4

    @property
    def offset(self) -> int | None:
        return None if self.in_size is None else (self.in_size - self.out_size) // 2


def record_to_patch(features: dict, spec: ConvertSpec) -> tuple[str, Any, Any, np.ndarray, np.ndarray, int]:
    """``(name, grid_id, point_id, data (H, W, C), label (H, W, 1), crop offset)`` of one record, or RecordError."""
    grid_id = _scalar_id(features, GRID_KEY)
    point_id = _scalar_id(features, ID_KEY)
    name = patch_name(grid_id, point_id)
    missing = [b for b in spec.bands if b not in features]
    if missing:
        raise RecordError(f"band(s) {missing} missing")
    if spec.label not in features:
        raise RecordError(f"label band {spec.label!r} absent")
    if spec.in_size is not None:
        size = spec.in_size
    else:
        n0 = features[spec.bands[0]].size if isinstance(features[spec.bands[0]], np.ndarray) else 0
        size = math.isqrt(n0)
        if size * size != n0 or size == 0:
            raise RecordError(f"band {spec.bands[0]!r} has {n0} values, not a square patch")
    if size < spec.out_size:
        raise RecordError(f"patch size {size} is smaller than out_size {spec.out_size}")
    want = size * size
    off = (size - spec.out_size) // 2
    sl = slice(off, off + spec.out_size)
    data = np.empty((spec.out_size, spec.out_size, len(spec.bands)), np.float32)
    for i, key in enumerate((*spec.bands, spec.label)):
        v = features[key]
        if not isinstance(v, np.ndarray) or v.dtype != np.float32:
            raise RecordError(f"band {key!r} is not a float list")
        if v.size != want:
            raise RecordError(f"band {key!r} has {v.size} values; expected {want} ({size}x{size})")
        img = v.reshape(size, size)[sl, sl]
        if i < len(spec.bands):
            data[..., i] = img
        else:
            label = img[..., None].astype(np.float32, copy=True)
    valid = np.isfinite(data).all(axis=2)
    nodata = 1.0 - float(valid.mean())
    if nodata > spec.max_nodata:
        raise RecordError(f"nodata fraction {nodata:.2f} > max_nodata {spec.max_nodata}")
    return name, grid_id, point_id, data, label, off


@dataclass
class FileResult:
    """What converting one file did; ``log`` holds (file, record, name, reason) of every problem."""

    file: str
    records: int = 0
    written: int = 0
    existing: int = 0
    failed: int = 0
    file_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str, str]] = field(default_factory=list)

    def fail(self, record: int | str, name: str, reason: str, kind: str) -> None:
        self.failed += 1
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        self.log.append((self.file, str(record), name, reason))


def _reason_kind(reason: str) -> str:
    """A short category for counting reasons in the summary."""
    for key, kind in (("CRC", "CRC mismatch"), ("label band", "label absent"), ("missing", "missing band/property"),
                      ("values; expected", "wrong band length"), ("not a square", "wrong band length"),
                      ("smaller than", "wrong band length"), ("nodata", "too much nodata"),
                      ("duplicate", "duplicate GridID-ID"), ("not a float", "wrong band type"),
                      ("tf.train.Example", "unparseable record")):
        if key in reason:
            return kind
    return "other"


def _claim(claims: Path, name: str, owner: str) -> str | None:
    """Atomically claim ``name`` for this run; None if claimed, else the earlier owner."""
    try:
        fd = os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            return (claims / name).read_text() or "another record"
        except OSError:
            return "another record"
    with os.fdopen(fd, "w") as f:
        f.write(owner)
    return None


def convert_file(path: str | Path, out: str | Path, spec: ConvertSpec, claims: str | Path | None = None) -> FileResult:
    """Convert every record of one TFRecord file to ``out/{GridID}-{ID}.h5``.

    Patches already in ``out`` are skipped (reruns). ``claims`` is a folder shared by the
    workers of one run, so that a GridID-ID seen twice in the run is written once and the
    second one is reported as a duplicate. Bad records are skipped with a reason; damage
    that ends the file is reported in ``file_error`` after the good records are written.
    """
    path, out = Path(path), Path(out)
    res = FileResult(str(path))
    claim_dir = Path(claims) if claims else None
    try:
        for index, rec in iter_records(path):
            res.records += 1
            name = ""
            try:
                if isinstance(rec, RecordError):
                    raise rec
                features = parse_example(rec)
                name, grid_id, point_id, data, label, off = record_to_patch(features, spec)
                if claim_dir is not None:
                    owner = _claim(claim_dir, name, f"{path.name} record {index}")
                    if owner is not None:
                        raise RecordError(f"duplicate GridID-ID {name} (first seen in {owner})")
                target = patch_path(out, name)
                if target.exists():
                    earlier = _converted_from(target)
                    if earlier is not None and earlier != path.name:
                        # Another file's record: not a rerun of this one, a duplicate GridID-ID across exports.
                        raise RecordError(f"duplicate GridID-ID {name} (already converted from {earlier})")
                    res.existing += 1
                    continue
                write_patch(target, data, label, spec.bands, grid_id=grid_id, point_id=point_id, year=spec.year,
                            source=f"{path.name}#{index}", compression=spec.compression,
                            compression_opts=spec.level if spec.compression == "gzip" else None,
                            extra_attrs={"crop_offset": off})
                res.written += 1
            except RecordError as err:
                res.fail(index, name, str(err), _reason_kind(str(err)))
    except FileDamage as err:
        res.file_error = str(err)
        kind = "truncated file" if "truncated" in str(err) else "corrupt file"
        res.reasons[kind] = res.reasons.get(kind, 0) + 1
        res.log.append((str(path), "-", "", str(err)))
    return res


def _converted_from(target: Path) -> str | None:
    """The TFRecord file name a converted patch came from (its ``source`` attribute ``FILE#INDEX``), or
    None for patches written without one (older conversions, other tools)."""
    try:
        source = read_attrs(target).get("source")
    except UserError:
        return None
    if not isinstance(source, str) or "#" not in source:
        return None
    return source.rsplit("#", 1)[0]


def read_file_arrays(path: str | Path, spec: ConvertSpec) -> tuple[int, int]:
    """Read, parse and crop every record without writing (the benchmark's ceiling): (good, bad)."""
    good = bad = 0
    try:
        for _, rec in iter_records(path):
            try:
                if isinstance(rec, RecordError):
                    raise rec
                record_to_patch(parse_example(rec), spec)
                good += 1
            except RecordError:
                bad += 1
    except FileDamage:
        bad += 1
    return good, bad


# --------------------------------------------------------------------------- inspect


def inspect_file(path: str | Path, max_records: int | None = None) -> dict:
    """Feature names, types and lengths (from the first good record), record count, implied patch size."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: TFRecord file not found")
    first: dict | None = None
    count = bad = 0
    damage = None
    ids = []
    try:
        for _, rec in iter_records(path):
            count += 1
            if isinstance(rec, RecordError):
                bad += 1
                continue
            try:
                feats = parse_example(rec)
            except RecordError:
                bad += 1
                continue
            if first is None:
                first = feats
            if len(ids) < 5:
                try:
                    ids.append(patch_name(_scalar_id(feats, GRID_KEY), _scalar_id(feats, ID_KEY)))
                except RecordError:
                    pass
            if max_records and count >= max_records:
                break
    except FileDamage as err:
        damage = str(err)
    if first is None and damage is None and count == 0:
        raise UserError(f"{path}: no records (empty file)")
    features = []
    sizes = set()
    known = [ID_KEY, GRID_KEY, *DEFAULT_BANDS, LABEL_BAND]
    ordered = sorted((first or {}).items(), key=lambda kv: (known.index(kv[0]) if kv[0] in known else len(known), kv[0]))
    for key, v in ordered:
        if isinstance(v, list):
            features.append({"name": key, "type": "bytes_list", "length": len(v)})
            continue
        kind = "float_list" if v.dtype == np.float32 else "int64_list"
        n = int(v.size)
        side = math.isqrt(n)
        square = n > 1 and side * side == n
        if square:
            sizes.add(side)
        features.append({"name": key, "type": kind, "length": n, "patch": f"{side}x{side}" if square else ""})
    return {"file": str(path), "records": count, "bad_records": bad, "damage": damage, "features": features,
            "patch_sizes": sorted(sizes), "first_ids": ids}


# --------------------------------------------------------------------------- writing (demo, tests)


def ee_record(data: np.ndarray, label: np.ndarray, grid_id: float, point_id: float,
              bands: Sequence[str] = DEFAULT_BANDS, label_band: str = LABEL_BAND, pad: int = 1) -> dict:
    """A record as Earth Engine exports it from an (H, W, C) patch: float lists of (H+pad)² values.

    ``pad`` extra rows and columns are added at the bottom and right (edge values), so the
    default centre crop (offset ``pad // 2``, 0 for 1) gives the patch back exactly.
    """
    data = np.asarray(data, np.float32)
    label = np.asarray(label, np.float32).reshape(data.shape[:2])
    before = pad // 2
    widths = ((before, pad - before), (before, pad - before))
    rec: dict[str, Any] = {ID_KEY: float(point_id), GRID_KEY: float(grid_id)}
    for i, b in enumerate(bands):
        rec[b] = np.pad(data[..., i], widths, mode="edge").ravel()
    rec[label_band] = np.pad(label, widths, mode="edge").ravel()
    return rec


def serialize_record(record: dict) -> bytes:
    """Serialize ``{name: value}`` as a tf.train.Example: floats and float arrays as float lists,
    ints and int arrays as int64 lists, str/bytes as bytes lists."""
    datum = {}
    for key, value in record.items():
        if isinstance(value, (str, bytes)):
            datum[key] = ([value.encode() if isinstance(value, str) else value], "byte")
        elif isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            datum[key] = (value.ravel(), "int")
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            datum[key] = ([int(value)], "int")
        else:
            datum[key] = (np.asarray(value, np.float32).ravel(), "float")
    return TFRecordWriter.serialize_tf_example(datum)


def frame(record: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return length + masked_crc(length) + record + masked_crc(record)


def write_ee_tfrecord(path: str | Path, records: Iterable[dict | bytes], compress: bool = True, level: int = 6) -> Path:
    """Write records (dicts as for ``serialize_record``, or serialized bytes) as a GZIP TFRecord, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        opener = (lambda p: gzip.open(p, "wb", compresslevel=level)) if compress else (lambda p: open(p, "wb"))
        with opener(tmp) as f:
            for rec in records:
                f.write(frame(rec if isinstance(rec, bytes) else serialize_record(rec)))
    return path


def patches_to_tfrecords(root: str | Path, out: str | Path, names: Sequence[str] | None = None, pad: int = 1,
                         label_band: str = LABEL_BAND) -> list[Path]:
    """Write the H5 patches of ``root`` as Earth Engine TFRecords, one ``{GridID}.tfrecord.gz`` per grid cell."""
    from .patches import list_patches, read_patch

    root, out = Path(root), Path(out)
    names = list(names) if names is not None else list_patches(root)
    if not names:
        raise UserError(f"{root}: no .h5 patches")
    by_grid: dict[str, list[tuple[str, str]]] = {}
    for n in names:
        grid, _, point = n.partition("-")
        by_grid.setdefault(grid, []).append((n, point))
    written = []
    for grid, items in sorted(by_grid.items()):
        def records(items=items, grid=grid):
            for n, point in items:
                p = read_patch(patch_path(root, n))
                yield ee_record(p.data, p.label, _num(grid), _num(point), p.bands, label_band, pad)
        written.append(write_ee_tfrecord(out / f"{grid}.tfrecord.gz", records()))
    return written


def _num(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise UserError(f"patch id {s!r} is not a number; Earth Engine exports numeric GridID and ID") from None


# --------------------------------------------------------------------------- many files


#: TFRecord files inside a folder (``cropseg.inputs`` patterns).
TFRECORD_GLOBS = (("*.tfrecord.gz", "*.tfrecord", "*.tfrecords", "*.gz"),)


def find_tfrecords(specs: str | Path | Sequence[str | Path], key: str = "in") -> list[Path]:
    """TFRecord files named by files, folders, globs or list files (``cropseg.inputs.expand_inputs``)."""
    from cropseg.inputs import expand_inputs

    return expand_inputs(specs, TFRECORD_GLOBS, key=key, what="TFRecord files")


@dataclass
class ConvertSummary:
    files: int = 0
    records: int = 0
    written: int = 0
    existing: int = 0
    failed: int = 0
    damaged_files: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    log_path: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.damaged_files == 0

    def add(self, r: FileResult) -> None:
        self.files += 1
        self.records += r.records
        self.written += r.written
        self.existing += r.existing
        self.failed += r.failed
        self.damaged_files += r.file_error is not None
        for k, v in r.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v


def _convert_job(args: tuple[str, str, ConvertSpec, str]) -> FileResult:
    path, out, spec, claims = args
    return convert_file(path, out, spec, claims)


def _remove_stale_claims(out: Path) -> None:
    """Remove claim folders of runs that no longer exist (``kill -9``, a crash): their owner's
    pid is in the name; a run still going (another process converting into ``out``) keeps its own."""
    import shutil

    for folder in out.glob(f"{CLAIMS_PREFIX}*"):
        pid = folder.name[len(CLAIMS_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def convert_many(files: Sequence[str | Path], out: str | Path, spec: ConvertSpec, workers: int = 0,
                 progress: bool = True, log_path: str | Path | None = None) -> ConvertSummary:
    """Convert ``files`` in parallel (one process per file at a time, ``cropseg.parallel``); write a
    CSV log of every problem."""
    import csv
    import shutil
    import tempfile
    import time

    from tqdm.auto import tqdm

    from cropseg.parallel import parallel_map

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _remove_stale_claims(out)
    claims = Path(tempfile.mkdtemp(prefix=f"{CLAIMS_PREFIX}{os.getpid()}-", dir=out))
    summary = ConvertSummary()
    logs: list[tuple[str, str, str, str]] = []
    jobs = [(str(f), str(out), spec, str(claims)) for f in files]
    bar = tqdm(total=len(jobs), desc="converting", unit="file", disable=not progress)
    try:
        for r in parallel_map(_convert_job, jobs, workers, chunksize=1):
            summary.add(r)
            logs += r.log
            bar.update()
            bar.set_postfix(written=summary.written, failed=summary.failed, refresh=False)
    finally:
        bar.close()
        shutil.rmtree(claims, ignore_errors=True)
    log_path = Path(log_path) if log_path else out / "convert_log.csv"
    with atomic_path(log_path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "record", "name", "reason"])
            w.writerows(logs)
    summary.log_path = str(log_path)
    summary.seconds = time.time() - t0
    return summary
