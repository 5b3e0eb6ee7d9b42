"""Tiled inference with a real (tiny, trained) checkpoint on real GeoTIFFs and the real Landsat-5 scene."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import LANDSAT5, needs
from cropseg.data.demo_scene import write_demo_scene
from cropseg.inference.predictor import (PredictSettings, checkpoint_for, load_checkpoint_model,
                                         predict_scene, shard, shard_info, year_of)
from cropseg.errors import UserError
from cropseg.inference.raster import PROB_SCALE
from cropseg.predict import predict


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint_model(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_demo_scene(tmp_path_factory.mktemp("scene") / "2015_901.tif", 200, 300, seed=3, year=2015)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags(), src.descriptions


def test_georeferencing_bands_and_tags(scene, model, tmp_path):
    out = tmp_path / "o.tif"
    res = predict_scene(scene, out, model, PredictSettings(overviews=True))
    assert res.status == "done" and res.windows > 0
    data, prof, tags, desc = read(out)
    with rasterio.open(scene) as src:
        assert (prof["crs"], prof["transform"], prof["width"], prof["height"]) == (src.crs, src.transform, src.width, src.height)
        valid = np.isfinite(src.read()).all(0)
    assert data.dtype == np.uint8 and data.shape == (2, 200, 300)
    assert prof["compress"] == "lzw" and prof["tiled"] and prof["nodata"] == 255
    assert desc == ("cropland_probability", "cropland_class")
    assert tags["bands"] == "B,G,R,NIR,SWIR1,NDVI,Dem" and tags["threshold"] == "0.5" and "cropseg_version" in tags
    assert "unet" in tags["model"]
    assert (data[:, ~valid] == 255).all() and (data[0, valid] <= PROB_SCALE).all()  # nodata preserved
    assert set(np.unique(data[1, valid])) <= {0, 1}
    dn, cls = data[0, valid], data[1, valid]
    assert (dn[cls == 1] >= 100).all() and (dn[cls == 0] <= 100).all()  # class band = thresholded probability
    with rasterio.open(out) as src:
        assert src.overviews(1)


def test_constant_scene_gives_constant_map(model, tmp_path):
    h, w = 150, 170
    value = np.array([0.05, 0.08, 0.05, 0.35, 0.2, 0.75, 300], np.float32)
    data = np.broadcast_to(value[:, None, None], (7, h, w))
    path = tmp_path / "c.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=7, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(10, 50, 0.00025, 0.00025), nodata=float("nan")) as dst:
        dst.write(data)
        for i, b in enumerate(["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"], start=1):
            dst.set_band_description(i, b)
    # One window of constant input: a CNN's own output varies a little (its zero-padded borders).
    single = model.runner(np.ascontiguousarray(data[None, :, :64, :64]))[0]
    grad = max(np.abs(np.diff(single, axis=0)).max(), np.abs(np.diff(single, axis=1)).max())
    tol = 1.0 / PROB_SCALE
    for blending in ("mean", "cosine"):
        predict_scene(path, tmp_path / f"{blending}.tif", model, PredictSettings(blending=blending, stride=40))
        out = read(tmp_path / f"{blending}.tif")[0][0].astype(float) / PROB_SCALE
        # blending is a convex combination of identical windows: no value outside one window's range
        assert single.min() - tol <= out.min() and out.max() <= single.max() + tol, blending
        if blending == "cosine":  # and no step at window borders larger than inside one window
            step = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
            assert step <= grad + 2 * tol, (step, grad)


@pytest.mark.parametrize("blending", ["mean", "cosine"])
def test_stride_changes_only_within_blending_tolerance(scene, model, tmp_path, blending):
    maps = []
    for stride in (56, 32):
        out = tmp_path / f"{stride}.tif"
        predict_scene(scene, out, model, PredictSettings(stride=stride, blending=blending))
        maps.append(read(out)[0][0].astype(float) / PROB_SCALE)
    a, b = (m[32:-32, 32:-32] for m in maps)
    ok = (a <= 1) & (b <= 1)
    diff = np.abs(a - b)[ok]
    assert diff.mean() < 0.02 and np.quantile(diff, 0.99) < 0.08, (diff.mean(), np.quantile(diff, 0.99), diff.max())


def test_band_mapping_ndvi_derived_dem_constant_or_raster(model, tmp_path):
    full = write_demo_scene(tmp_path / "full.tif", 120, 140, seed=5, nodata=False)
    raw = write_demo_scene(tmp_path / "raw.tif", 120, 140, seed=5, bands=["B", "G", "R", "NIR", "SWIR1"], nodata=False)
    dem = write_demo_scene(tmp_path / "dem.tif", 120, 140, seed=5, bands=["Dem"], nodata=False)
    ref = tmp_path / "ref.tif"
    predict_scene(full, ref, model, PredictSettings())
    via_raster = tmp_path / "r.tif"
    res = predict_scene(raw, via_raster, model, PredictSettings(extra_bands={"Dem": str(dem)}))
    tags = read(via_raster)[2]
    assert "NDVI=derived" in tags["band_sources"] and "dem.tif" in tags["band_sources"]
    a, b = read(ref)[0][0].astype(int), read(via_raster)[0][0].astype(int)
    assert res.status == "done" and np.abs(a - b).max() <= 1
    const = tmp_path / "k.tif"
    predict_scene(raw, const, model, PredictSettings(extra_bands={"Dem": 250}))
    assert "Dem=constant 250.0" in read(const)[2]["band_sources"]


@needs(LANDSAT5)
def test_real_landsat5_scene(model, tmp_path):
    out = tmp_path / "l5.tif"
    res = predict_scene(LANDSAT5, out, model, PredictSettings(extra_bands={"Dem": 200}, cog=True))
    data, prof, tags, _ = read(out)
    with rasterio.open(LANDSAT5) as src:
        assert (prof["crs"], prof["transform"], prof["width"], prof["height"]) == (src.crs, src.transform, src.width, src.height)
        valid = np.isfinite(src.read()).all(0)
    assert res.status == "done" and "NDVI=derived from bands 4,3" in tags["band_sources"]
    assert (data[0][~valid] == 255).all() and (data[0][valid] <= PROB_SCALE).all()


def test_resume_after_crash_and_overwrite(tiny_checkpoint, tmp_path, scene):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    scenes = [write_demo_scene(tmp_path / f"{y}_7.tif", 64, 80, seed=1, year=y) for y in (2010, 2011)]
    # a crash left a temporary file of a dead process, and one finished map
    stale = out_dir / ".2010_7_cropland.tif.999999999-deadbeef.tmp"
    stale.write_bytes(b"partial")
    done = out_dir / "2011_7_cropland.tif"
    cfg = dict(ckpt=str(tiny_checkpoint), input=[str(s) for s in scenes], output=str(out_dir), device="cpu")
    s1 = predict(cfg)
    assert (s1["done"], s1["skipped"], s1["failed"]) == (2, 0, 0)
    assert not stale.exists() and (out_dir / "2010_7_cropland.tif").exists()
    mtime = done.stat().st_mtime_ns
    s2 = predict(cfg)
    assert (s2["done"], s2["skipped"]) == (0, 2) and done.stat().st_mtime_ns == mtime
    s3 = predict(cfg | {"overwrite": True})
    assert s3["done"] == 2 and done.stat().st_mtime_ns != mtime
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]


def list_scenes(spec):
    from cropseg.inputs import expand_inputs
    from cropseg.maps import SCENE_GLOBS

    return expand_inputs(spec, SCENE_GLOBS, key="input", what="scenes", missing_ok=True)


def test_inputs_sharding_and_years(tmp_path, monkeypatch):
    folder = tmp_path / "rasters"
    folder.mkdir()
    names = [f"{y}_{g}.tif" for y in (2008, 2015) for g in range(5)]
    for n in names:
        (folder / n).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# scenes\n" + "\n".join(f"rasters/{n}" for n in names[:3]) + "\n")
    assert len(list_scenes(str(folder))) == 10
    assert len(list_scenes(str(folder / "2015_*.tif"))) == 5
    assert [p.name for p in list_scenes(str(tmp_path / "list.txt"))] == names[:3]
    scenes = list_scenes(str(folder))
    parts = [shard(scenes, r, 3) for r in range(3)]
    assert sorted(p for part in parts for p in part) == sorted(scenes)
    assert sum(len(p) for p in parts) == len(scenes)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert shard_info() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_info() == (1, 2) and shard_info(0, 5) == (0, 5)
    models = [{"ckpt": "l5.ckpt", "to": 2011}, {"ckpt": "l8.ckpt", "from": 2012}]
    assert year_of(folder / "2008_3.tif") == 2008 and year_of("scene.tif") is None
    assert checkpoint_for(folder / "2008_3.tif", None, models) == "l5.ckpt"
    assert checkpoint_for(folder / "2015_3.tif", None, models) == "l8.ckpt"


def test_mosaic_and_export(tiny_checkpoint, tmp_path):
    from cropseg.inference.mosaic import main as mosaic_main
    from cropseg.models.export import export

    out = tmp_path / "maps"
    for k in range(2):
        s = write_demo_scene(tmp_path / f"2015_{k}.tif", 64, 70, seed=k, origin=(500000 + k * 70 * 30, 9000000))
        predict({"ckpt": str(tiny_checkpoint), "input": str(s), "output": str(out), "device": "cpu"})
    assert mosaic_main([str(out), "year=2015", f"out={tmp_path / 'm.vrt'}"]) == 0
    assert mosaic_main([str(out), f"out={tmp_path / 'm.tif'}"]) == 0
    for m in ("m.vrt", "m.tif"):
        with rasterio.open(tmp_path / m) as src:
            assert src.shape == (64, 140) and src.count == 2
            a = src.read(1)
        with rasterio.open(out / "2015_1_cropland.tif") as src:
            assert (a[:, 70:] == src.read(1)).all()
    formats = ("torchscript", "onnx") if _has("onnx") else ("torchscript",)
    written = export(tiny_checkpoint, tmp_path / "exp" / "model", formats)
    assert written["torchscript"].exists() and written["metadata"].exists()
    import json

    meta = json.loads(written["metadata"].read_text())
    assert meta["bands"] == ["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"] and meta["patch_size"] == 64


def _has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _as_c2_integers(src_path, dst_path, metadata_scales: bool = False):
    """The float reflectance scene stored as a Collection-2 integer composite: DN and Dem metres as int32, no NDVI."""
    from cropseg.bands import C2_SR_OFFSET, C2_SR_SCALE

    with rasterio.open(src_path) as src:
        data, prof, desc = src.read(), src.profile, src.descriptions
    keep = [desc.index(b) for b in ("B", "G", "R", "NIR", "SWIR1", "Dem")]
    out = np.zeros((len(keep), *data.shape[1:]), np.int32)
    for k, i in enumerate(keep[:-1]):
        out[k] = np.round((data[i] - C2_SR_OFFSET) / C2_SR_SCALE)
    out[-1] = np.round(data[keep[-1]])
    prof.update(count=len(keep), dtype="int32", nodata=None)
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(out)
        for k, i in enumerate(keep, start=1):
            dst.set_band_description(k, desc[i])
        if metadata_scales:
            dst.scales = [C2_SR_SCALE] * 5 + [1.0]
            dst.offsets = [C2_SR_OFFSET] * 5 + [0.0]
    return dst_path


def test_collection2_integer_composites_predict_as_their_reflectances(tiny_checkpoint, tmp_path):
    from cropseg.config import compose

    floats = write_demo_scene(tmp_path / "f.tif", 120, 140, seed=7, bands=["B", "G", "R", "NIR", "SWIR1", "Dem"],
                              nodata=False)
    ints = _as_c2_integers(floats, tmp_path / "dn.tif")
    tagged = _as_c2_integers(floats, tmp_path / "dn_tagged.tif", metadata_scales=True)
    def run(scene, out, *extra):
        return predict(compose("predict", [f"ckpt={tiny_checkpoint}", f"input={scene}", f"output={tmp_path / out}",
                                           f"paths.output_dir={tmp_path}", *extra]))

    ref = run(floats, "ref.tif")
    dn = run(ints, "dn_out.tif", "predict=c2_dn")  # the preset, through real Hydra composition
    meta = run(tagged, "m.tif")  # the raster's own GDAL scale/offset metadata, without any option
    assert ref["done"] == dn["done"] == meta["done"] == 1
    a = read(tmp_path / "ref.tif")[0][0].astype(int)
    for out in ("dn_out.tif", "m.tif"):
        b, _, tags, _ = read(tmp_path / out)
        assert np.abs(a - b[0].astype(int)).max() <= 1  # DN quantization only
        assert "band 1 * 2.75e-05 - 0.2" in tags["band_sources"] and tags["band_sources"].endswith("Dem=band 6")
    # Without the scaling the same integers are not reflectance: the scene stops, naming the preset ...
    raw = tmp_path / "raw.tif"
    model = load_checkpoint_model(tiny_checkpoint, "cpu")
    with pytest.raises(UserError, match="look like Landsat Collection-2 Level-2 integers.*predict=c2_dn"):
        predict_scene(ints, raw, model, PredictSettings())
    assert not raw.exists()
    # ... and forced through, they make a different map; reflectance given the preset is scaled twice.
    predict_scene(ints, raw, model, PredictSettings(check_units=False))
    assert np.abs(a - read(raw)[0][0].astype(int)).max() > 10
    twice = run(floats, "twice.tif", "predict=c2_dn")
    assert twice["failed"] == 1 and "scaled twice" in twice["results"][0]["message"]
    with pytest.raises(Exception, match="band_scale.Foo: the model has no band 'Foo'"):
        predict_scene(ints, tmp_path / "x.tif", load_checkpoint_model(tiny_checkpoint, "cpu"),
                      PredictSettings(band_scale={"Foo": 2}))
