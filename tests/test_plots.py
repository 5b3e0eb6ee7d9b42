"""Pictures of a run: validation previews and training curves (figures inspected, not only written)."""

import numpy as np
from matplotlib.colors import to_rgba

from cropseg import plots
from cropseg.bands import DEFAULT_BANDS
from cropseg.data.transforms import IGNORE
from cropseg.models.callbacks import ValidationPreviews


def test_previews_show_rare_cropland_nodata_and_a_colourbar(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((2, 7, 64, 64), dtype=np.float32)
    labels = np.zeros((2, 1, 64, 64), dtype=np.float32)
    labels[0, 0, :3, 0] = 1  # 3 cropland pixels: 0.000732 of the patch, not "0.00"
    labels[1, 0, :, :32] = 1
    labels[1, 0, :16] = IGNORE  # a nodata band across the top
    probs = np.full((2, 1, 64, 64), 0.2, dtype=np.float32)
    probs[1, 0, :, :16] = 0.9
    fig = plots.preview_figure(images, labels, probs, DEFAULT_BANDS, ["a", "b"], threshold=0.5)
    titles = [ax.get_title() for ax in fig.axes]
    assert "label: cropland 0.000732" in titles
    assert "label: cropland 0.5, nodata 0.25" in titles  # fractions of the valid pixels
    assert "prediction: cropland 0.25 (p >= 0.5)" in titles
    label_img = fig.axes[4].images[0]  # row 2: RGB, label, prediction
    rgba = label_img.to_rgba(label_img.get_array())
    assert tuple(rgba[0, 40]) == to_rgba(plots.LABEL_COLOURS[2])  # nodata in its own colour
    assert tuple(rgba[40, 0]) == to_rgba(plots.LABEL_COLOURS[1]) and tuple(rgba[40, 40]) == to_rgba(plots.LABEL_COLOURS[0])
    assert any(ax.get_ylabel() == "cropland probability" for ax in fig.axes)  # the colourbar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["not cropland", "cropland", "nodata"]
    assert plots.save_figure(fig, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_previews_pick_the_patches_with_most_cropland():
    rp = np.array([0.0, 0.3, 0.0001, 0.3, 0.0])
    assert ValidationPreviews.choose(rp, ["e", "d", "c", "b", "a"], 3) == [3, 1, 2]


def test_curves_put_loss_overlap_metrics_and_accuracy_on_separate_panels(tiny_checkpoint):
    fig = plots.curves_figure(tiny_checkpoint.parents[1] / "metrics.csv")
    labels = [[line.get_label() for line in ax.lines] for ax in fig.axes]
    assert [ax.get_title() for ax in fig.axes] == ["loss", "IoU, F1, kappa, precision, recall", "accuracy"]
    assert set(labels[0]) == {"train/loss", "val/loss"}
    assert {"val/iou", "val/f1", "val/kappa", "train/iou"} <= set(labels[1]) and not any("acc" in x for x in labels[1])
    assert set(labels[2]) == {"train/accuracy", "val/accuracy"}
