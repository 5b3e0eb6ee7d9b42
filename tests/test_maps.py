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
