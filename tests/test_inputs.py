"""One input expander for every command: files, globs, folders, list files; a miss says what was tried."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cropseg.errors import UserError
from cropseg.inputs import expand_inputs
from cropseg.maps import MAP_GLOB


@pytest.fixture()
def tree(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    for name in ("2015_1_cropland.tif", "2015_2_cropland.tif", "2016_1_cropland.tif", "notes.tif", ".hidden_cropland.tif"):
        (maps / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# the maps of 2015\nmaps/2015_2_cropland.tif\n\nmaps/2015_1_cropland.tif  # first\n")
    return tmp_path


def test_files_globs_folders_and_list_files(tree):
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(expand_inputs(tree / "maps", (MAP_GLOB,))) == ["2015_1_cropland.tif", "2015_2_cropland.tif",
                                                                "2016_1_cropland.tif"]
    assert names(expand_inputs(str(tree / "maps" / "2015_*"))) == ["2015_1_cropland.tif", "2015_2_cropland.tif"]
    assert names(expand_inputs(tree / "list.txt")) == ["2015_2_cropland.tif", "2015_1_cropland.tif"]
    # in the order given, each file once
    both = expand_inputs([tree / "list.txt", str(tree / "maps" / "*_cropland.tif")], (MAP_GLOB,))
    assert names(both) == ["2015_2_cropland.tif", "2015_1_cropland.tif", "2016_1_cropland.tif"]
    # folder patterns are alternatives: cropseg maps, else any GeoTIFF
    assert len(expand_inputs(tree / "maps", ("*.none", "*.tif"))) == 4


def test_a_miss_says_which_key_and_what_was_looked_for(tree):
    with pytest.raises(UserError, match=r"maps=.*maps: the folder holds no maps \(looked for \*\.none, else \*\.x or \*\.y\)"):
        expand_inputs(tree / "maps", ("*.none", ("*.x", "*.y")), key="maps", what="maps")
    with pytest.raises(UserError, match=r"in=.*/nothing\*\.gz: the pattern matches no TFRecord files"):
        expand_inputs(str(tree / "nothing*.gz"), key="in", what="TFRecord files")
    with pytest.raises(UserError, match=r"input=.*missing.tif: no such file or folder"):
        expand_inputs(tree / "missing.tif", key="input")
    assert expand_inputs(tree / "missing.tif", missing_ok=True) == [tree / "missing.tif"]
    (tree / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="the list file names no file"):
        expand_inputs(tree / "empty.txt")


def test_mosaic_of_a_year_without_maps_names_the_pattern_it_tried(tree):
    # It said "no maps to mosaic in cog/ for year 1988" without saying it looked for *_cropland.tif.
    res = subprocess.run([sys.executable, "-m", "cropseg.cli", "mosaic", str(tree / "maps"), "year=1988",
                          f"out={tree / 'm.vrt'}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "looked for 1988_*_cropland.tif" in res.stderr and "maps of 1988" in res.stderr, res.stderr


def test_mosaic_refuses_maps_off_the_grid_by_a_fraction_of_a_pixel(tmp_path):
    """Fractional offsets were rounded silently: a map moved by up to half a pixel."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    def write(name, west):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                           crs="EPSG:32622", transform=from_origin(west, 9_000_000, 30, 30), nodata=255) as ds:
            ds.write(np.ones((1, 4, 4), np.uint8))

    write("2015_1_cropland.tif", 500_000)
    write("2015_2_cropland.tif", 500_120)  # 4 pixels east: on the grid
    res = subprocess.run([sys.executable, "-m", "cropseg.cli", "mosaic", str(tmp_path), f"out={tmp_path / 'a.vrt'}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    write("2015_3_cropland.tif", 500_135)  # 4.5 pixels east
    res = subprocess.run([sys.executable, "-m", "cropseg.cli", "mosaic", str(tmp_path), f"out={tmp_path / 'b.vrt'}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "2015_3_cropland.tif: its pixel grid is offset" in res.stderr and "+0.500" in res.stderr
    assert not (tmp_path / "b.vrt").exists()
