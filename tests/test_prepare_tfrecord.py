"""Earth Engine TFRecords -> H5 patches: exact round trips on real patches, and every kind of bad input."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest

from cropseg import prepare
from cropseg.bands import DEFAULT_BANDS
from cropseg.data.patches import list_patches, patch_path, read_patch
from cropseg.data.tfrecord import (ConvertSpec, convert_many, ee_record, frame, inspect_file, iter_records,
                                   serialize_record, write_ee_tfrecord)

from conftest import SEED_DIR, needs


def _run(argv: list[str]) -> int:
    try:
        return prepare.main(argv)
    except SystemExit as exc:  # report_user_errors exits 2
        return int(exc.code)


def _log(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def seed_tfrecords(tmp_path_factory) -> Path:
    """The 50 real patches as Earth Engine exports them: 193x193 float lists, two GZIP files."""
    out = tmp_path_factory.mktemp("seed-tfr")
    names = list_patches(SEED_DIR / "data")
    for k, chunk in enumerate((names[:25], names[25:])):
        recs = []
        for n in chunk:
            p = read_patch(patch_path(SEED_DIR / "data", n))
            grid, point = n.split("-")
            recs.append(ee_record(p.data, p.label, float(grid), float(point), pad=1))
        write_ee_tfrecord(out / f"part{k}.tfrecord.gz", recs, level=1)
    return out


@needs(SEED_DIR)
def test_real_patches_round_trip_exactly(seed_tfrecords, tmp_path, capsys):
    info = inspect_file(seed_tfrecords / "part0.tfrecord.gz")
    assert info["records"] == 25 and info["patch_sizes"] == [193] and info["damage"] is None
    assert {f["name"] for f in info["features"]} == {"ID", "GridID", *DEFAULT_BANDS, "Cropland"}
    assert _run(["inspect", str(seed_tfrecords / "part0.tfrecord.gz")]) == 0
    assert "193x193" in capsys.readouterr().out

    out = tmp_path / "h5"
    assert _run(["convert", f"in={seed_tfrecords}", f"out={out}", "year=2015", "workers=2"]) == 0
    names = list_patches(SEED_DIR / "data")
    assert list_patches(out) == names
    for n in names:
        with h5py.File(patch_path(SEED_DIR / "data", n)) as f:
            data, label = f["data"][()], f["label"][()]
        got = read_patch(patch_path(out, n))
        assert got.data.dtype == np.float32 and got.data.shape == (192, 192, 7) and got.label.shape == (192, 192, 1)
        np.testing.assert_array_equal(got.data, data)
        np.testing.assert_array_equal(got.label, label)
        grid, point = n.split("-")
        assert got.bands == DEFAULT_BANDS
        assert str(got.attrs["grid_id"]) == grid and str(got.attrs["point_id"]) == point
        assert got.attrs["year"] == 2015 and got.attrs["source"].startswith("part")
    text = capsys.readouterr().out
    assert "written 50" in text and "skipped/failed 0" in text

    # A rerun skips what is there and writes nothing.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert _run(["convert", f"in={seed_tfrecords}/*.tfrecord.gz", f"out={out}"]) == 0
    assert "already there 50" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.h5")} == mtimes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries, no claim folders


def _demo_records(demo_root: Path, pad: int = 1) -> list[dict]:
    recs = []
    for n in list_patches(demo_root / "data")[:6]:
        p = read_patch(patch_path(demo_root / "data", n))
        grid, point = n.split("-")
        recs.append(ee_record(p.data, p.label, float(grid), float(point), pad=pad))
    return recs


def test_bad_records_are_skipped_with_reasons(demo_root, tmp_path):
    recs = _demo_records(demo_root)
    good = [serialize_record(r) for r in recs[:2]]
    no_band = dict(recs[2], ID=1002.0)
    del no_band["NIR"]
    short = dict(recs[2], ID=1003.0, SWIR1=recs[2]["SWIR1"][:-5])
    no_label = dict(recs[2], ID=1004.0)
    del no_label["Cropland"]
    nan = {k: (np.full_like(v, np.nan) if k not in {"ID", "GridID"} else v) for k, v in recs[2].items()}
    nan["ID"] = 1005.0
    dup = dict(recs[3])  # same GridID-ID as recs[3], written below first
    corrupt = bytearray(frame(serialize_record(dict(recs[2], ID=1006.0))))
    corrupt[40] ^= 0xFF  # flips a byte of the record data: data CRC mismatch
    src = tmp_path / "tfr"
    src.mkdir()
    bad_file = src / "900.tfrecord.gz"
    with gzip.open(bad_file, "wb") as f:
        for rec in good:
            f.write(frame(rec))
        for rec in (no_band, short, no_label, nan, recs[3], dup):
            f.write(frame(serialize_record(rec)))
        f.write(bytes(corrupt))
        f.write(frame(serialize_record(recs[4])))  # after the bad ones: still converted
    # Truncated GZIP: the first records of the file still convert.
    full = tmp_path / "full.gz"
    write_ee_tfrecord(full, [serialize_record(dict(r, GridID=950.0)) for r in recs[:3]])
    blob = full.read_bytes()
    (src / "950.tfrecord.gz").write_bytes(blob[: int(len(blob) * 0.8)])
    # A corrupt length header: the rest of the file is unreadable.
    plain = frame(serialize_record(dict(recs[5], GridID=960.0)))
    broken = bytearray(frame(serialize_record(dict(recs[0], GridID=960.0))))
    broken[0] ^= 0x01
    with gzip.open(src / "960.tfrecord.gz", "wb") as f:
        f.write(plain + bytes(broken))

    out = tmp_path / "h5"
    assert _run(["convert", f"in={src}", f"out={out}", "out_size=64", "workers=2"]) == 1
    written = set(list_patches(out))
    stems = [n for n in list_patches(demo_root / "data")[:6]]
    assert {stems[0], stems[1], stems[3], stems[4]} <= written
    assert "960-" + stems[5].split("-")[1] in written
    assert any(n.startswith("950-") for n in written)  # records before the truncation
    assert not any(n.endswith(("-1002", "-1003", "-1004", "-1005", "-1006")) for n in written)
    reasons = [r["reason"] for r in _log(out / "convert_log.csv")]
    text = "\n".join(reasons)
    for needle in ("band(s) ['NIR'] missing", "band 'SWIR1' has 4220 values; expected 4225", "label band 'Cropland' absent",
                   "nodata fraction 1.00", "duplicate GridID-ID", "data CRC mismatch", "truncated", "length CRC mismatch"):
        assert needle in text, needle
    assert len(reasons) == 8
    for n in written:  # every written file is a complete patch
        assert read_patch(patch_path(out, n)).data.shape == (64, 64, 7)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_iter_records_reports_truncation_after_good_records(demo_root, tmp_path):
    path = tmp_path / "x.tfrecord"
    write_ee_tfrecord(path, _demo_records(demo_root)[:3], compress=False)
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    got = []
    with pytest.raises(Exception, match="truncated"):
        for i, rec in iter_records(path):
            got.append(i)
    assert got == [0, 1]
    info = inspect_file(path)
    assert info["records"] == 2 and "truncated" in info["damage"]


def test_exported_size_and_crop_are_configurable(demo_root, tmp_path):
    recs = _demo_records(demo_root, pad=4)  # 68x68 records, crop 64 at offset 2
    write_ee_tfrecord(tmp_path / "a.tfrecord.gz", recs)
    s = convert_many([tmp_path / "a.tfrecord.gz"], tmp_path / "h5", ConvertSpec(in_size=68, out_size=64), progress=False)
    assert s.ok and s.written == 6
    n = list_patches(demo_root / "data")[0]
    np.testing.assert_array_equal(read_patch(patch_path(tmp_path / "h5", n)).data, read_patch(patch_path(demo_root / "data", n)).data)
    s = convert_many([tmp_path / "a.tfrecord.gz"], tmp_path / "h5b", ConvertSpec(in_size=65, out_size=64), progress=False)
    assert s.written == 0 and s.failed == 6 and s.reasons == {"wrong band length": 6}


def test_user_errors_are_one_line(tmp_path, capsys):
    assert _run(["convert", f"in={tmp_path / 'nothing'}", f"out={tmp_path / 'o'}"]) == 2
    assert _run(["convert", "in=x", "out=y", "colour=blue"]) == 2
    assert _run(["frobnicate"]) == 2
    assert _run(["inspect", str(tmp_path / "missing.tfrecord.gz")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err
    assert _run(["convert", "--help"]) == 0
    assert "out_size" in capsys.readouterr().out


def test_demo_tfrecords_command_then_convert(demo_root, tmp_path):
    assert _run(["demo-tfrecords", f"root={demo_root}", f"out={tmp_path / 'tfr'}"]) == 0
    files = sorted(p.name for p in (tmp_path / "tfr").iterdir())
    assert files == ["900.tfrecord.gz", "901.tfrecord.gz", "902.tfrecord.gz"]
    assert inspect_file(tmp_path / "tfr" / "900.tfrecord.gz")["patch_sizes"] == [65]
    assert _run(["convert", f"in={tmp_path / 'tfr'}", f"out={tmp_path / 'h5'}", "out_size=64", "workers=1"]) == 0
    names = list_patches(demo_root / "data")
    assert list_patches(tmp_path / "h5") == names
    for n in names[::5]:
        a, b = read_patch(patch_path(demo_root / "data", n)), read_patch(patch_path(tmp_path / "h5", n))
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.label, b.label)


def test_a_patch_from_another_file_is_a_duplicate_not_already_there(demo_root, tmp_path, capsys):
    """A rerun skips its own patches; another export holding a converted GridID-ID is reported."""
    recs = _demo_records(demo_root)
    write_ee_tfrecord(tmp_path / "in" / "a.tfrecord.gz", recs[:3])
    out = tmp_path / "h5"
    assert _run(["convert", f"in={tmp_path / 'in'}", f"out={out}", "out_size=64"]) == 0
    assert _run(["convert", f"in={tmp_path / 'in'}", f"out={out}", "out_size=64"]) == 0
    assert "already there 3, skipped/failed 0" in capsys.readouterr().out
    write_ee_tfrecord(tmp_path / "later" / "b.tfrecord.gz", [recs[2], recs[3]])  # recs[2] again, in another file
    assert _run(["convert", f"in={tmp_path / 'later'}", f"out={out}", "out_size=64"]) == 1
    assert "written 1, already there 0, skipped/failed 1" in capsys.readouterr().out
    (row,) = _log(out / "convert_log.csv")
    name = list_patches(demo_root / "data")[2]
    assert row["name"] == name and row["reason"] == f"duplicate GridID-ID {name} (already converted from a.tfrecord.gz)"
    assert read_patch(patch_path(out, name)).attrs["source"] == "a.tfrecord.gz#2"  # the first one is kept


def test_claim_folders_of_killed_runs_go_with_the_next_run(demo_root, tmp_path):
    """kill -9 of a conversion leaves its .convert-claims-PID-* folder; the next run removes it
    (a run still going keeps its own)."""
    import os

    write_ee_tfrecord(tmp_path / "in" / "a.tfrecord.gz", _demo_records(demo_root)[:2])
    out = tmp_path / "h5"
    dead = out / ".convert-claims-4194999-abcd"  # above Linux's largest pid: no such process
    alive = out / f".convert-claims-{os.getppid()}-efgh"
    for d in (dead, alive):
        d.mkdir(parents=True)
        (d / "900-1").write_text("a.tfrecord.gz record 0")
    assert _run(["convert", f"in={tmp_path / 'in'}", f"out={out}", "out_size=64", "workers=2"]) == 0
    assert not dead.exists() and alive.exists()
    assert len(list_patches(out)) == 2
