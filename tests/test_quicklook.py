"""Quicklooks of prediction maps: written beside each map, cheap at any scene size, showing the map's cropland."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import rasterio
from rasterio.transform import from_origin

from cropseg.inference.quicklook import (CROPLAND_COLOUR, NODATA_COLOUR, map_preview, preview_shape,
                                         write_map_quicklook)
from cropseg.predict import predict

from conftest import LANDSAT5, needs

CKPT = Path(__file__).parent / "data" / "format2.ckpt"  # committed tiny checkpoint, 32-pixel windows


def _write(path: Path, data: np.ndarray, descriptions=None, nodata=None, **kw) -> Path:
    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                crs="EPSG:32633", transform=from_origin(500000, 5000000, 30, 30), nodata=nodata, tiled=True,
                blockxsize=256, blockysize=256, compress="lzw", **kw)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions
    return path


@needs(LANDSAT5)
def test_prediction_writes_a_quicklook_beside_each_map_unless_told_not_to(tmp_path):
    base = {"ckpt": str(CKPT), "input": str(LANDSAT5), "extra_bands": {"Dem": 250}, "progress": False}
    s = predict({**base, "output": str(tmp_path / "on")})
    assert s["done"] == 1
    png = tmp_path / "on" / "landsat5-tm-subset_cropland.png"
    assert png.exists() and (tmp_path / "on" / "landsat5-tm-subset_cropland.tif").exists()
    img = plt.imread(png)
    assert img.ndim == 3 and 200 < img.shape[0] < 1000 and 200 < img.shape[1] < 1000
    assert not list((tmp_path / "on").glob(".*.tmp"))
    s = predict({**base, "output": str(tmp_path / "off"), "quicklook": False})
    assert s["done"] == 1 and not list((tmp_path / "off").glob("*.png"))


def test_preview_shows_the_maps_cropland_over_the_scene(tmp_path):
    h, w = 600, 900
    rgb = np.full((3, h, w), 0.1, np.float32)
    rgb[:, :, ::2] = 0.2  # texture, so the stretch has a range
    scene = _write(tmp_path / "scene.tif", rgb, ("Red", "Green", "Blue"))
    dn = np.zeros((h, w), np.uint8)
    cls = np.zeros((h, w), np.uint8)
    dn[:, : w // 2], cls[:, : w // 2] = 180, 1  # left half cropland
    dn[: h // 4, w // 2:] = cls[: h // 4, w // 2:] = 255  # top right: no data
    mp = _write(tmp_path / "scene_cropland.tif", np.stack([dn, cls]), nodata=255)
    with rasterio.open(scene) as src:
        img, share = map_preview(mp, src, max_side=300)
    assert img.shape == (200, 300, 3) == (*preview_shape(h, w, 300), 3)
    left, right = img[h // 3 // 3:, :140], img[100:, 160:]
    yellow = 0.55 * np.asarray(CROPLAND_COLOUR)
    assert (left >= yellow - 1e-6).all() and (left[..., 2] < left[..., 0]).all()  # blended towards yellow
    assert np.allclose(img[:40, 160:], NODATA_COLOUR)
    assert (right <= 1.0).all() and np.allclose(right[..., 0], right[..., 2])  # grey scene untouched
    assert abs(share - (0.5 / 0.875)) < 0.01  # cropland of the valid pixels


def test_quicklook_never_holds_the_scene(tmp_path):
    """A 3000 x 3000 scene (108 MB as float32 RGB) is previewed at 800 pixels from a few MB of arrays."""
    h = w = 3000
    yy, xx = np.indices((h, w), dtype=np.float32)
    rgb = np.stack([xx / w, yy / h, (xx + yy) / (h + w)]).astype(np.float32)
    scene = _write(tmp_path / "big.tif", rgb, ("Red", "Green", "Blue"))
    cls = (xx > yy).astype(np.uint8)
    mp = _write(tmp_path / "big_cropland.tif", np.stack([cls * 200, cls]), nodata=255)
    del rgb, yy, xx, cls
    with rasterio.open(scene) as src:
        tracemalloc.start()
        img, _ = map_preview(mp, src)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert img.shape == (800, 800, 3)
        assert peak < 40e6, f"peak {peak / 1e6:.0f} MB of arrays to preview a 108 MB scene"
        out = write_map_quicklook(mp, src, threshold=0.5)  # the figure adds matplotlib's own, fixed cost
    assert out == tmp_path / "big_cropland.png" and out.exists()
    assert max(plt.imread(out).shape[:2]) < 1100
