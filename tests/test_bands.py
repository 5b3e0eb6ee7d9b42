import numpy as np
import pytest

import torch

from cropseg.bands import (DEFAULT_BANDS, Normalization, canonical_band, ndvi, normalization_from_config, resolve_sensor,
                           sensor_for_year)
from cropseg.models.preprocess import InputSpec, Preprocess
from cropseg.data.index import patch_class
from cropseg.errors import UserError


@pytest.mark.parametrize("rp, c", [(0.0, 0), (0.04, 0), (0.05, 1), (0.23, 2), (0.25, 3), (0.5, 5), (0.94, 9), (0.95, 10), (1.0, 10)])
def test_oversampling_class_rule(rp, c):
    assert patch_class(rp) == c


def test_default_normalization_is_the_original_workflows():
    norm = Normalization.default()
    assert norm.bands == DEFAULT_BANDS
    assert norm.min == (0, 0, 0, 0, 0, -1, -400) and norm.max == (1, 1, 1, 1, 1, 1, 2000)
    x = torch.tensor([0.5, 0.5, 0.5, 2.0, -0.1, 0.0, 800.0]).view(1, 7, 1, 1)
    out, nodata = Preprocess(InputSpec.build(DEFAULT_BANDS, norm))(x)
    np.testing.assert_allclose(out.flatten().numpy(), [0.5, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5], atol=1e-6)
    assert not nodata.any()


def test_normalization_round_trips_and_selects_by_name(tmp_path):
    norm = Normalization.default()
    assert Normalization.from_dict(norm.to_dict()) == norm
    sub = norm.select(["NDVI", "R"])
    assert sub.min == (-1, 0) and sub.max == (1, 1)
    stats = tmp_path / "stats.json"
    stats.write_text('{"bands": {"R": {"p02": 0.01, "p98": 0.3}, "NIR": {"p02": 0.05, "p98": 0.5}}}')
    n2 = normalization_from_config({"kind": "stats", "path": str(stats)}, ["R", "NIR"])
    assert n2.min == (0.01, 0.05) and n2.max == (0.3, 0.5)
    with pytest.raises(UserError, match="Dem"):
        normalization_from_config({"kind": "stats", "path": str(stats)}, ["R", "Dem"])


def test_ndvi_matches_normalized_difference():
    nir, red = np.array([0.4, 0.0, np.nan]), np.array([0.1, 0.0, 0.1])
    out = ndvi(nir, red)
    assert out[0] == pytest.approx(0.6) and out[1] == 0 and np.isnan(out[2])


def test_band_aliases_map_raster_descriptions():
    assert canonical_band("Red") == "R" and canonical_band("SWIR1") == "SWIR1"
    assert canonical_band("SWIR2") is None  # not a model band


@pytest.mark.parametrize("sensor, names", [
    ("tm", {"SR_B1": "B", "SR_B2": "G", "SR_B3": "R", "SR_B4": "NIR", "SR_B5": "SWIR1", "B7": "SWIR2"}),
    ("etm", {"SR_B1": "B", "SR_B2": "G", "SR_B3": "R", "SR_B4": "NIR", "SR_B5": "SWIR1", "SR_B7": "SWIR2"}),
    ("oli", {"SR_B2": "B", "SR_B3": "G", "SR_B4": "R", "SR_B5": "NIR", "SR_B6": "SWIR1", "band 7": "SWIR2"}),
])
def test_numbered_landsat_names_resolve_by_sensor(sensor, names):
    bands = (*DEFAULT_BANDS, "SWIR2")
    for name, band in names.items():
        assert canonical_band(name, bands, sensor) == band, (sensor, name)
        assert canonical_band(name, bands) is None  # without a sensor a number means nothing
    assert canonical_band("SR_B1", bands, "oli") is None  # coastal aerosol: not a model band


def test_sensor_names_and_the_original_years():
    assert resolve_sensor("LANDSAT_5") == resolve_sensor("LT05") == "tm"
    assert resolve_sensor("LANDSAT_7") == resolve_sensor("ETM+") == "etm"
    assert resolve_sensor("OLI_TIRS") == resolve_sensor("LC09") == resolve_sensor("landsat8") == "oli"
    with pytest.raises(UserError, match="sensor='sentinel2'.*tm.*etm.*oli"):
        resolve_sensor("sentinel2")
    assert sensor_for_year(1988) == sensor_for_year(2011) == "tm" and sensor_for_year(2012) == "oli"


def test_loss_specs_parse_weights():
    from cropseg.models.losses import CombinedLoss, parse_loss_spec

    assert parse_loss_spec("bce+0.5*dice") == {"bce": 1.0, "dice": 0.5}
    assert parse_loss_spec({"Focal": 2}) == {"focal": 2.0}
    import torch

    from cropseg.data.transforms import IGNORE

    target = torch.tensor([[[[1.0, 0.0], [IGNORE, IGNORE]]]])
    logits = torch.tensor([[[[5.0, -5.0], [-99.0, 99.0]]]])  # ignored pixels badly wrong: must not count
    total, parts = CombinedLoss("bce+dice+jaccard+focal+lovasz+tversky")(logits, target)
    assert all(float(v) < 0.05 for v in parts.values()), parts
