"""Test-time augmentation: views undone exactly, probabilities averaged, wired into prediction."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from cropseg.config import compose
from cropseg.data.demo_scene import write_demo_scene
from cropseg.errors import UserError
from cropseg.inference.predictor import PredictSettings, Runner
from cropseg.inference.tta import MODES, views, with_tta
from cropseg.predict import predict


@pytest.mark.parametrize("mode", list(MODES))
def test_every_view_is_undone_on_the_output(mode):
    """A network that copies a band of its input must come back unchanged through every view:
    a wrong inverse (a rotation the wrong way, a flip on the wrong axis) moves pixels."""
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = with_tta(lambda t: t[:, 1:2], mode)(x)
    assert out.shape == (2, 1, 8, 8)
    torch.testing.assert_close(out, x[:, 1:2])


def test_views_are_distinct_symmetries():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)  # no symmetry of its own
    for mode, n in (("none", 1), ("hflip", 2), ("flips", 4), ("d4", 8)):
        seen = {tuple(fwd(x).flatten().tolist()) for fwd, _ in MODES[mode]}
        assert len(seen) == n == views(mode)


def test_probabilities_of_the_views_are_averaged():
    """A 'network' that always says 0 on the left and 1 on the right: the mirrored view says the
    opposite, so their average is 0.5 everywhere; d4 averages to the same."""
    ramp = torch.linspace(0, 1, 6).expand(1, 1, 6, 6)
    fake = lambda t: ramp.expand(t.shape[0], 1, -1, -1).clone()  # noqa: E731 - ignores its input
    x = torch.zeros(3, 2, 6, 6)
    torch.testing.assert_close(with_tta(fake, "none")(x), fake(x))
    for mode in ("hflip", "flips", "d4"):
        torch.testing.assert_close(with_tta(fake, mode)(x), torch.full((3, 1, 6, 6), 0.5))


def test_runner_averages_probabilities_not_logits():
    """Logits +8 and -2 on the two halves: the mean of sigmoids differs from the sigmoid of the mean."""
    logits = torch.full((1, 1, 4, 4), -2.0)
    logits[..., :2] = 8.0
    runner = Runner(lambda t: torch.sigmoid(logits).expand(t.shape[0], -1, -1, -1), "cpu", tta="hflip")
    out = runner(np.zeros((2, 3, 4, 4), np.float32))
    expected = (torch.sigmoid(torch.tensor(8.0)) + torch.sigmoid(torch.tensor(-2.0))) / 2
    assert out.shape == (2, 4, 4)
    np.testing.assert_allclose(out, float(expected), rtol=1e-6)


def test_unknown_mode_names_the_setting():
    with pytest.raises(UserError, match=r"tta='rot45' is not known; choose one of: none, hflip, flips, d4"):
        PredictSettings(tta="rot45")
    with pytest.raises(UserError, match="tta="):
        with_tta(lambda t: t, "rot45")


def test_prediction_with_tta_from_a_checkpoint(tiny_checkpoint, tmp_path):
    """tta=d4 through conf/predict.yaml and the whole tiled prediction: a map like the plain one (same
    model, mostly the same probabilities), not the same numbers (the views were run), and the setting
    recorded in the map's tags; an unknown mode is one line naming the key."""
    scene = write_demo_scene(tmp_path / "2015_7.tif", 96, 128, seed=5, year=2015)

    def run(mode: str) -> np.ndarray:
        out = tmp_path / f"{mode}.tif"
        summary = predict(compose("predict", [f"ckpt={tiny_checkpoint}", f"input={scene}", f"output={out}",
                                              f"paths.output_dir={tmp_path}", "device=cpu", f"tta={mode}"]))
        assert summary["done"] == 1
        with rasterio.open(out) as src:
            assert src.tags()["tta"] == mode
            return src.read(1).astype(int)

    plain, d4 = run("none"), run("d4")
    assert not np.array_equal(plain, d4)
    assert np.mean(np.abs(plain - d4)) < 20  # probability DN 0..200: the same map, smoothed
    with pytest.raises(UserError, match="tta='spin' is not known"):
        run("spin")


def test_nodata_stays_nodata_through_every_view():
    """The model answers NaN where its input had nodata; each view must bring that NaN back to
    the same pixel, so the averaged map has nodata exactly where the scene has."""
    x = torch.rand(2, 3, 6, 6)
    x[0, 1, 1, 4] = float("nan")
    x[1, :, 5, 0] = float("nan")
    model = lambda t: torch.where(t.isnan().any(1, keepdim=True), float("nan"), 0.3)  # noqa: E731
    for mode in MODES:
        out = with_tta(model, mode)(x)
        assert torch.equal(out.isnan(), x.isnan().any(1, keepdim=True)), mode
