"""Window grid, blending weights and the streaming pipeline with an exactly translation-equivariant model."""

from __future__ import annotations

import numpy as np
import torch
import pytest
import rasterio
from rasterio.transform import from_origin

from cropseg.models.preprocess import InputSpec, Preprocess
from cropseg.errors import UserError
from cropseg.inference.predictor import ModelInfo, PredictSettings, Runner, predict_scene
from cropseg.inference.raster import PROB_SCALE
from cropseg.inference.windows import blend_weights, resolve_stride, weights_1d, window_starts

BANDS = ["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"]


@pytest.mark.parametrize("length,window,stride,margin", [(300, 64, 56, 4), (200, 192, 72, 60), (50, 64, 56, 4),
                                                         (1, 64, 64, 0), (193, 192, 72, 0), (1000, 64, 17, 23)])
def test_windows_cover_every_pixel(length, window, stride, margin):
    starts = window_starts(length, window, stride, margin)
    covered = np.zeros(length, int)
    for s in starts:
        covered[max(0, s):max(0, min(length, s + window))] += 1
    assert (covered > 0).all()
    assert starts[0] == -margin
    assert np.all(np.diff(starts) <= stride) and np.all(np.diff(starts) > 0)


def test_stride_and_weights():
    assert resolve_stride(192, None, 0.125) == 168
    assert resolve_stride(192, None, 24) == 168
    assert resolve_stride(192, 72, None) == 72
    with pytest.raises(UserError):
        resolve_stride(64, 65)
    with pytest.raises(UserError):
        blend_weights(64, "triangle")
    for kind in ("mean", "cosine", "gaussian"):
        w = blend_weights(64, kind, 8)
        assert w.shape == (64, 64) and w.min() > 0 and w.max() == pytest.approx(1.0)
        assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    w = weights_1d(64, "cosine", 8)
    # the taper of one window and the rise of the next sum to one: a smooth cross-fade
    assert np.allclose(w[-8:] + w[:8], 1.0, atol=1e-6) and (w[8:-8] == 1).all()


def write_scene(path, data, nodata=float("nan"), crs="EPSG:32622", descriptions=BANDS):
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype="float32", crs=crs,
                       transform=from_origin(600000, 8000000, 30, 30), nodata=nodata) as dst:
        dst.write(data.astype(np.float32))
        for i, d in enumerate(descriptions[:c], start=1):
            dst.set_band_description(i, d)
    return path


def pointwise_model(window=32):
    """A per-pixel model: its output at a pixel depends on that pixel only, so any tiling gives the same map."""
    import torch

    spec = InputSpec.build(BANDS)
    pre = Preprocess(spec)

    def fn(raw):
        x, _ = pre(raw)  # the model-input contract, as every cropseg model applies it
        return torch.sigmoid(4 * (x[:, 3:4] - x[:, 2:3]) + x[:, 6:7] - 0.5)

    return ModelInfo(Runner(fn, "cpu"), spec, window, 0.5, "pointwise", "pointwise")


@pytest.mark.parametrize("blending", ["mean", "cosine", "gaussian"])
def test_any_tiling_gives_the_same_map(tmp_path, blending):
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (7, 70, 95)).astype(np.float32)
    data[6] *= 500
    data[:, :9, :13] = np.nan
    scene = write_scene(tmp_path / "s.tif", data)
    maps = []
    for stride, batch in ((32, 3), (11, 16), (7, 1)):
        out = tmp_path / f"o{stride}.tif"
        predict_scene(scene, out, pointwise_model(), PredictSettings(stride=stride, blending=blending, batch_size=batch))
        with rasterio.open(out) as src:
            maps.append(src.read())
    for m in maps[1:]:
        assert np.abs(m.astype(int) - maps[0].astype(int)).max() <= 1
    norm = Preprocess(InputSpec.build(BANDS))(torch.from_numpy(data)[None])[0][0].numpy()
    expect = 1 / (1 + np.exp(-(4 * (norm[3] - norm[2]) + norm[6] - 0.5)))
    valid = np.isfinite(data).all(0)
    got = maps[0][0]
    assert (got[~valid] == 255).all() and (maps[0][1][~valid] == 255).all()
    assert np.abs(got[valid] / PROB_SCALE - expect[valid]).max() <= 0.5 / PROB_SCALE + 1e-6


def test_all_nodata_windows_are_skipped(tmp_path):
    data = np.full((7, 100, 100), np.nan, np.float32)
    data[:, 80:, 80:] = 0.5
    scene = write_scene(tmp_path / "s.tif", data)
    res = predict_scene(scene, tmp_path / "o.tif", pointwise_model(), PredictSettings(stride=32))
    assert res.windows_skipped > 0 and res.windows > 0
    with rasterio.open(tmp_path / "o.tif") as src:
        a = src.read(1)
    assert (a[:80] == 255).all() and (a[80:, 80:] != 255).all()


def test_scene_smaller_than_a_window(tmp_path):
    data = np.random.default_rng(1).uniform(0, 1, (7, 5, 9)).astype(np.float32)
    scene = write_scene(tmp_path / "s.tif", data)
    predict_scene(scene, tmp_path / "o.tif", pointwise_model(64), PredictSettings())
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.shape == (5, 9) and (src.read(1) != 255).all()


def test_constant_scene_gives_a_constant_map(tmp_path):
    data = np.broadcast_to(np.array([0.05, 0.08, 0.05, 0.35, 0.2, 0.75, 300], np.float32)[:, None, None], (7, 90, 110))
    scene = write_scene(tmp_path / "c.tif", np.ascontiguousarray(data))
    for blending in ("mean", "cosine", "gaussian"):
        predict_scene(scene, tmp_path / f"{blending}.tif", pointwise_model(), PredictSettings(blending=blending, stride=13))
        with rasterio.open(tmp_path / f"{blending}.tif") as src:
            a = src.read(1)
        assert a.min() == a.max() != 255
