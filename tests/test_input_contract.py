"""The model-input contract: the same pixels give the same network input and probability in
training, scene prediction and export; checkpoints are versioned; bands resolve by sensor;
scenes in the wrong units are stopped. All with real files: H5 patches, GeoTIFFs, a committed
checkpoint of today's format, TorchScript and ONNX (onnxruntime) exports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from conftest import LANDSAT5, needs
from cropseg.errors import UserError
from cropseg.inference.predictor import (ModelInfo, PredictSettings, Runner, load_checkpoint_model, predict_array_stream,
                                         predict_scene)
from cropseg.inference.raster import SceneReader, open_raster, plan_bands
from cropseg.inference.windows import WindowGrid, blend_weights
from cropseg.models.checkpoint import CHECKPOINT_FORMAT, load_cropland_model, read_checkpoint

DATA = Path(__file__).resolve().parent / "data"
CKPT = DATA / "format2.ckpt"
BANDS = ["B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem"]
sys.path.insert(0, str(DATA))
from make_checkpoints import fixed_input  # noqa: E402


def expected_probability() -> np.ndarray:
    rows = json.loads((DATA / "format2.json").read_text())["probability"]
    return np.array([[np.nan if v is None else v for v in row] for row in rows], np.float32)


def assert_same_probability(got, want, atol: float = 2e-5) -> None:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert (np.isnan(got) == np.isnan(want)).all(), "nodata pixels differ"
    ok = ~np.isnan(want)
    assert np.abs(got[ok] - want[ok]).max() <= atol


# -- versioned checkpoints ----------------------------------------------------------------------
def test_the_committed_checkpoint_of_todays_format_loads_and_predicts_what_it_did():
    ckpt = read_checkpoint(CKPT)
    assert ckpt["cropseg"]["format"] == CHECKPOINT_FORMAT == 2 and ckpt["cropseg"]["read_from_format"] == 2
    model, card = load_cropland_model(CKPT)
    assert model.spec.bands == tuple(BANDS) and card.patch_size == 32 and card.encoder == "tu-lcnet_035"
    with torch.no_grad():
        p = model(fixed_input())[0, 0].numpy()
    assert_same_probability(p, expected_probability())


def _save_as_older_format(tmp_path: Path, fmt: int | None) -> Path:
    ckpt = torch.load(CKPT, weights_only=True)
    hp = ckpt["hyper_parameters"]
    spec = hp.pop("input_spec")  # formats 0 and 1: bands and normalization side by side
    hp["bands"], hp["normalization"] = spec["bands"], spec["normalization"]
    if fmt is None:
        ckpt["cropseg"].pop("format")
    else:
        ckpt["cropseg"]["format"] = fmt
    path = tmp_path / f"format{fmt}.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("fmt", [None, 1])
def test_older_checkpoints_are_upgraded_in_one_place(tmp_path, fmt):
    path = _save_as_older_format(tmp_path, fmt)
    ckpt = read_checkpoint(path)
    assert ckpt["cropseg"]["read_from_format"] == (fmt or 0) and ckpt["hyper_parameters"]["input_spec"]["bands"] == BANDS
    model, _ = load_cropland_model(path)
    with torch.no_grad():
        assert_same_probability(model(fixed_input())[0, 0].numpy(), expected_probability())


def test_a_newer_format_is_refused_in_one_line(tmp_path):
    ckpt = torch.load(CKPT, weights_only=True)
    ckpt["cropseg"]["format"] = CHECKPOINT_FORMAT + 1
    torch.save(ckpt, tmp_path / "future.ckpt")
    res = subprocess.run([sys.executable, "-m", "cropseg.cli", "info", str(tmp_path / "future.ckpt")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "checkpoint format 3" in res.stderr and "newer" in res.stderr and "upgrade cropseg" in res.stderr


def test_a_checkpoint_with_code_in_it_is_not_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"cropseg": {"format": 2}, "hyper_parameters": {}, "x": Boom()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "evil.ckpt")


def test_prediction_loads_the_model_without_lightning():
    code = ("import sys; from cropseg.inference.predictor import load_checkpoint_model; "
            f"m = load_checkpoint_model({str(CKPT)!r}, 'cpu'); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('pytorch_lightning', 'lightning', 'torchmetrics')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# -- one input contract: training, scene prediction, TorchScript, ONNX -------------------------
def _raw_patch() -> np.ndarray:
    """(C, H, W) raw bands in physical units with NaN holes (all bands, and one band alone)."""
    return fixed_input()[0].numpy().copy()


def _write_geotiff(path: Path, data: np.ndarray, descriptions, tags: dict | None = None, nodata=float("nan")) -> Path:
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name,
                       crs="EPSG:32614", transform=from_origin(500000, 5000000, 30, 30), nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


def test_one_raw_patch_gives_the_same_input_and_probability_everywhere(tmp_path):
    from cropseg.data.datamodule import PatchDataset
    from cropseg.data.patches import write_patch
    from cropseg.data.transforms import IGNORE
    from cropseg.models.export import export

    raw = _raw_patch()
    nodata = ~np.isfinite(raw).all(axis=0)
    model, card = load_cropland_model(CKPT)
    with torch.no_grad():
        x_model, mask_model = model.network_input(torch.from_numpy(raw)[None])
        p_model = model(torch.from_numpy(raw)[None])[0, 0].numpy()
    assert (mask_model[0, 0].numpy() == nodata).all() and (x_model[0][:, nodata] == 0).all()
    assert np.isnan(p_model[nodata]).all() and np.isfinite(p_model[~nodata]).all()

    # 1. Training: an H5 patch finished by the data loader.
    label = (np.arange(32 * 32).reshape(32, 32, 1) % 3 == 0).astype(np.float32)
    write_patch(tmp_path / "p" / "1-1.h5", raw.transpose(1, 2, 0), label, BANDS)
    item = PatchDataset(tmp_path / "p", ["1-1"], BANDS, model.spec.normalization)[0]
    assert torch.equal(item["image"], x_model[0])
    assert (item["mask"][0].numpy()[nodata] == IGNORE).all() and (item["mask"][0].numpy()[~nodata] != IGNORE).all()

    # 2. Scene prediction: the same values as a GeoTIFF, read, windowed and run by the predictor.
    scene = _write_geotiff(tmp_path / "scene.tif", raw, BANDS)
    seen = []

    def recording(batch):
        seen.append(batch.clone())
        return model(batch)

    info = ModelInfo(Runner(recording, "cpu"), model.spec, card.patch_size, card.threshold, "t", "t")
    rows = {}
    with open_raster(scene) as src:
        plan = plan_bands(src, scene, BANDS)
        reader = SceneReader(src, plan)
        grid = WindowGrid.build(32, 32, 32, 32)
        with torch.no_grad():
            predict_array_stream(reader, grid, info.runner, blend_weights(32, "mean"), PredictSettings(blending="mean"),
                                 lambda p, ok, r0: rows.update({r0: (p.copy(), ok.copy())}))
        reader.close()
    assert len(seen) == 1 and torch.equal(torch.isnan(seen[0][0]), torch.isnan(torch.from_numpy(raw)))
    assert torch.equal(model.network_input(seen[0])[0][0], x_model[0])  # the network sees what training gave it
    p_scene = np.concatenate([rows[k][0] for k in sorted(rows)])
    ok = np.concatenate([rows[k][1] for k in sorted(rows)])
    assert (ok == ~nodata).all()
    assert_same_probability(np.where(ok, p_scene, np.nan), p_model, atol=1e-5)

    # 3. and 4. The exported graphs (the same module), TorchScript and ONNX through onnxruntime.
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra ('.[dev]')")
    written = export(CKPT, tmp_path / "exp" / "model")
    assert json.loads(written["metadata"].read_text())["compared_with_pytorch"] == ["torchscript", "onnx"]
    ts = torch.jit.load(str(written["torchscript"]))
    with torch.no_grad():
        assert_same_probability(ts(torch.from_numpy(raw)[None])[0, 0].numpy(), p_model, atol=1e-5)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(written["onnx"]), providers=["CPUExecutionProvider"])
    p_onnx = sess.run(None, {"bands": raw[None]})[0][0, 0]
    assert_same_probability(p_onnx, p_model, atol=1e-5)


def test_export_says_when_onnx_was_not_compared(tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None; from cropseg.models.export import main; "
            f"main([{str(CKPT)!r}, 'out={tmp_path / 'm'}'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "NOT compared with PyTorch: onnx (onnxruntime is not installed" in res.stdout
    assert json.loads((tmp_path / "m.json").read_text())["compared_with_pytorch"] == ["torchscript"]


# -- bands by sensor -----------------------------------------------------------------------------
TM = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"]
OLI = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]


def _landsat_stack(tmp_path: Path, name: str, sensor_bands: list[str], tags=None) -> tuple[Path, Path]:
    """The same reflectances written twice: described by cropseg names, and as a Landsat stack of ``sensor_bands``."""
    from cropseg.bands import SENSOR_BANDS, band_number

    rng = np.random.default_rng(0)
    named = {b: rng.uniform(0.02, 0.45, (40, 50)).astype(np.float32) for b in ("B", "G", "R", "NIR", "SWIR1", "SWIR2")}
    sensor = "oli" if "SR_B6" in sensor_bands else "tm"
    stack = np.stack([named[SENSOR_BANDS[sensor][band_number(d)]] if band_number(d) in SENSOR_BANDS[sensor]
                      else np.full((40, 50), 0.1, np.float32) for d in sensor_bands])
    ref = _write_geotiff(tmp_path / f"named_{name}", np.stack(list(named.values())), list(named))
    return ref, _write_geotiff(tmp_path / name, stack, sensor_bands, tags)


@pytest.mark.parametrize("name, bands, tags, setting", [
    ("tm.tif", TM, {"SPACECRAFT_ID": "LANDSAT_5"}, None),  # Landsat 5 TM, told by its metadata
    ("etm.tif", TM, {"SENSOR_ID": "ETM"}, None),  # Landsat 7 ETM+: the same numbering
    ("LT05_L2SP_224063_19880814_20200917_02_T1.tif", TM, None, None),  # a USGS product name
    ("2010_77.tif", TM, None, None),  # the original's rule: up to 2011, Landsat 5
    ("oli.tif", OLI, {"SPACECRAFT_ID": "LANDSAT_8"}, None),
    ("2015_77.tif", OLI, None, None),  # from 2012, Landsat 8
    ("plain_oli.tif", OLI, None, "oli"),  # nothing tells: the user says
])
def test_numbered_landsat_bands_map_by_the_scenes_sensor(tmp_path, name, bands, tags, setting):
    model = load_checkpoint_model(CKPT, "cpu")
    ref, scene = _landsat_stack(tmp_path, name, bands, tags)
    extra = {"Dem": 300}
    predict_scene(ref, tmp_path / "ref_out.tif", model, PredictSettings(extra_bands=extra))
    predict_scene(scene, tmp_path / "out.tif", model, PredictSettings(extra_bands=extra, sensor=setting))
    with rasterio.open(tmp_path / "ref_out.tif") as a, rasterio.open(tmp_path / "out.tif") as b:
        assert (a.read() == b.read()).all()  # the same reflectances read as the same bands
        assert b.tags()["sensor"].startswith("oli" if bands is OLI else ("etm" if "ETM" in str(tags) else "tm"))


def test_ambiguous_band_numbers_are_refused_with_how_to_choose(tmp_path):
    model = load_checkpoint_model(CKPT, "cpu")
    _, scene = _landsat_stack(tmp_path, "stack.tif", TM)
    with pytest.raises(UserError) as err:
        predict_scene(scene, tmp_path / "o.tif", model, PredictSettings(extra_bands={"Dem": 300}))
    msg = str(err.value)
    assert "\n" not in msg and "stack.tif" in msg and "sensor=tm" in msg and "sensor=oli" in msg
    assert not (tmp_path / "o.tif").exists()
    with pytest.raises(UserError, match="sensor='landsat3' is not a known sensor"):
        PredictSettings(sensor="landsat3")


@needs(LANDSAT5)
def test_the_real_landsat5_scene_described_as_usgs_does_maps_as_its_named_bands(tmp_path):
    """The real 1988 TM scene, its bands renamed SR_B1..SR_B7 as USGS names them: the year tells TM."""
    model = load_checkpoint_model(CKPT, "cpu")
    with rasterio.open(LANDSAT5) as src:
        data, prof = src.read(), src.profile
    renamed = tmp_path / "1988_224063.tif"
    with rasterio.open(renamed, "w", **prof) as dst:
        dst.write(data)
        for i, d in enumerate(TM, start=1):
            dst.set_band_description(i, d)
    settings = PredictSettings(extra_bands={"Dem": 200})
    predict_scene(LANDSAT5, tmp_path / "named.tif", model, settings)
    predict_scene(renamed, tmp_path / "numbered.tif", model, settings)
    with rasterio.open(tmp_path / "named.tif") as a, rasterio.open(tmp_path / "numbered.tif") as b:
        assert (a.read() == b.read()).all() and "year 1988" in b.tags()["sensor"]


# -- units -----------------------------------------------------------------------------------------
def test_scaled_integers_stop_the_scene_naming_the_fix(tmp_path):
    model = load_checkpoint_model(CKPT, "cpu")
    ref, _ = _landsat_stack(tmp_path, "x.tif", TM)
    with rasterio.open(ref) as src:
        x10000 = np.round(src.read() * 10000).astype(np.int16)
    scene = _write_geotiff(tmp_path / "x10000.tif", x10000, ["B", "G", "R", "NIR", "SWIR1", "SWIR2"], nodata=-9999)
    settings = dict(extra_bands={"Dem": 300})
    with pytest.raises(UserError, match=r"x10000.tif: bands B, G, R, NIR, SWIR1 have median .*reflectance \* 10,000.*"
                                        r"band_scale.<band>=0.0001"):
        predict_scene(scene, tmp_path / "o.tif", model, PredictSettings(**settings))
    scale = {b: 0.0001 for b in ("B", "G", "R", "NIR", "SWIR1")}
    predict_scene(scene, tmp_path / "scaled.tif", model, PredictSettings(**settings, band_scale=scale))
    predict_scene(ref, tmp_path / "ref.tif", model, PredictSettings(**settings))
    with rasterio.open(tmp_path / "scaled.tif") as a, rasterio.open(tmp_path / "ref.tif") as b:
        assert np.abs(a.read(1).astype(int) - b.read(1).astype(int)).max() <= 1  # int16 rounding only
    res = predict_scene(scene, tmp_path / "forced.tif", model, PredictSettings(**settings, check_units=False))
    assert res.status == "done"
