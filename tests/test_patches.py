import numpy as np
import pytest

from cropseg.data.index import build_index, patch_class
from cropseg.data.patches import list_patches, patch_name, read_list, read_patch, write_list, write_patch
from cropseg.errors import UserError

from conftest import SEED_DIR, needs


def _patch(rp: float, size: int = 32, bands: int = 7):
    rng = np.random.default_rng(0)
    data = rng.random((size, size, bands)).astype(np.float32)
    label = np.zeros((size, size, 1), np.float32)
    label.reshape(-1)[: int(round(rp * size * size))] = 1
    return data, label


def test_write_read_roundtrip_with_attributes(tmp_path):
    data, label = _patch(0.25)
    path = write_patch(tmp_path / f"{patch_name(520.0, 26000.0)}.h5", data, label, grid_id=520, point_id=26000, year=2015)
    assert path.name == "520-26000.h5"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"
    p = read_patch(path)
    np.testing.assert_array_equal(p.data, data)
    np.testing.assert_array_equal(p.label, label)
    assert p.attrs["grid_id"] == 520 and p.attrs["year"] == 2015 and p.bands[-1] == "Dem"


@needs(SEED_DIR)
def test_reads_original_exports_without_attributes():
    names = read_list(SEED_DIR / "train.txt")
    assert len(names) == 40
    p = read_patch(SEED_DIR / "data" / f"{names[0]}.h5")
    assert p.data.shape == (192, 192, 7) and p.label.shape == (192, 192, 1)
    assert p.attrs == {} and p.bands == ("B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem")


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    data, label = _patch(0.1)
    good = write_patch(tmp_path / "1-1.h5", data, label)
    truncated = tmp_path / "1-2.h5"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(UserError, match="1-2.h5"):
        read_patch(truncated)
    (tmp_path / "1-3.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="1-3.h5: corrupt"):
        read_patch(tmp_path / "1-3.h5")


def test_list_files(tmp_path):
    write_list(tmp_path / "l.txt", ["a-1", "b-2"])
    (tmp_path / "m.txt").write_text("a-1.h5\n\n# comment\nb-2\n")
    assert read_list(tmp_path / "l.txt") == read_list(tmp_path / "m.txt") == ["a-1", "b-2"]
    with pytest.raises(UserError, match="nope.txt: list file not found"):
        read_list(tmp_path / "nope.txt")


def test_index_has_rp_class_nodata_and_is_cached(tmp_path):
    for i, rp in enumerate([0.0, 0.23, 0.5, 1.0]):
        data, label = _patch(rp)
        if i == 2:
            data[:8] = np.nan  # a quarter nodata: rp counts valid pixels only
        write_patch(tmp_path / f"1-{i}.h5", data, label)
    names = list_patches(tmp_path)
    cache = tmp_path / "cache" / "index.csv"
    df = build_index(tmp_path, names, cache=cache)
    assert df.c.tolist() == [0, patch_class(0.23), patch_class(df.rp[2]), 10]
    assert df.nodata_frac[2] == pytest.approx(0.25)
    assert cache.exists()
    # Second build reads nothing: a corrupted-but-unchanged file would fail if it were re-read.
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    df2 = build_index(tmp_path, names, cache=cache)
    assert df2.equals(df) and mtimes == {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    # A changed file is re-indexed.
    data, label = _patch(0.6)
    write_patch(tmp_path / "1-0.h5", data, label)
    assert build_index(tmp_path, names, cache=cache).c[0] == 6
