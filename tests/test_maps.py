"""The map product is one contract: what inference writes, evaluation and publish read."""

from cropseg.data.demo_scene import write_demo_scene
from cropseg.evaluation.maps import open_map
from cropseg.inference.predictor import PredictSettings, load_checkpoint_model, predict_scene
from cropseg.maps import MAP_NAME, PROB_SCALE, map_name, scene_year


def test_names_and_years():
    assert map_name(2015, "h12_v08") == "2015_h12_v08_cropland.tif"
    m = MAP_NAME.match(map_name(2015, "h12_v08"))
    assert m["year"] == "2015" and m["grid"] == "h12_v08"
    assert scene_year("2008_3.tif") == 2008 and scene_year("scene.tif") is None


def test_evaluation_reads_what_inference_writes(tiny_checkpoint, tmp_path):
    scene = write_demo_scene(tmp_path / "2015_7.tif", height=80, width=90)
    out = tmp_path / "maps" / map_name(2015, "7")
    predict_scene(scene, out, load_checkpoint_model(tiny_checkpoint, device="cpu"), PredictSettings(class_band=True))
    m = open_map(out)
    assert (m.year, m.grid, m.kind, m.scale) == (2015, "7", "probability", float(PROB_SCALE))


def test_one_nodata_value_from_labels_to_maps(tmp_path):
    """255 is cropseg's one nodata value: training's IGNORE, the packed store's labels, the demo labels,
    and the maps evaluation reads as uint8 without a declared nodata."""
    import numpy as np
    import rasterio

    from cropseg.data.store import LABEL_NODATA
    from cropseg.data.transforms import IGNORE
    from cropseg.maps import NODATA

    assert IGNORE == LABEL_NODATA == NODATA
    write_demo_scene(tmp_path / "2015_1.tif", height=20, width=20, label_path=tmp_path / "label.tif")
    with rasterio.open(tmp_path / "label.tif") as ds:
        assert ds.nodata == NODATA
    undeclared = tmp_path / "2015_2_cropland.tif"
    with rasterio.open(undeclared, "w", driver="GTiff", width=2, height=1, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=rasterio.transform.from_origin(0, 1, 1, 1)) as ds:
        ds.write(np.array([[NODATA, 200]], np.uint8), 1)
    m = open_map(undeclared)
    with rasterio.open(undeclared) as ds:
        crop, valid, _ = m.interpret(ds.read([1]))
    assert valid.tolist() == [[False, True]] and crop.tolist() == [[False, True]]
