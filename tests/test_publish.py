"""cropseg publish: manifests, upload list and uploads against a local fake storage client."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from cropseg import __version__
from cropseg.publish import crc32c_b64, main, run


def write_map(path, crs="EPSG:4326", bands=2, west=0.0, tags=None):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(len(str(path)))
    prob = rng.integers(0, 101, (1, 16, 16), dtype=np.uint8)
    data = np.concatenate([prob, (prob >= 50).astype(np.uint8)])[:bands]
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=bands, dtype="uint8", crs=crs,
                       transform=from_origin(west, 10, 0.01, 0.01), nodata=255, tiled=True, blockxsize=16,
                       blockysize=16) as dst:
        dst.write(data)
        dst.update_tags(**(tags or {}))
    return path


@pytest.fixture()
def maps(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    for year in (2015, 2016):
        for grid in (10, 11):
            write_map(d / f"{year}_{grid}_cropland.tif", west=grid)
    return d


class FakeBlob:
    def __init__(self, store, name):
        self.store, self.name = store, name

    @property
    def size(self):
        return len(self.store[self.name])

    @property
    def crc32c(self):
        import google_crc32c

        return base64.b64encode(google_crc32c.Checksum(self.store[self.name]).digest()).decode()

    def upload_from_filename(self, filename, checksum=None):
        assert checksum == "crc32c"
        self.store[self.name] = open(filename, "rb").read()


class FakeBucket:
    def __init__(self, store):
        self.store = store

    def get_blob(self, name):
        return FakeBlob(self.store, name) if name in self.store else None

    def blob(self, name):
        return FakeBlob(self.store, name)


class FakeClient:
    """The slice of google.cloud.storage.Client that publish uses (Cloud Storage is out of reach)."""

    def __init__(self):
        self.buckets: dict[str, dict[str, bytes]] = {}

    def bucket(self, name):
        return FakeBucket(self.buckets.setdefault(name, {}))


class FakeEE:
    def __init__(self):
        self.started = []

    def start(self, item):
        self.started.append(item.request)
        return f"ING{len(self.started)}"

    def states(self, ids):
        return {i: {"state": "COMPLETED"} for i in ids}


def test_dry_run_manifests(tmp_path, maps, capsys):
    out = tmp_path / "dry"
    rc = main([f"maps={maps}/*_cropland.tif", "bucket=gs://my-bucket/cropland", "asset=projects/my-proj/assets/crop/{year}",
               "model_name=pspnet-l8", "threshold=0.4", f"dry_run_dir={out}", "dry_run=true"])
    assert rc == 0
    uploads = json.loads((out / "uploads.json").read_text())["uploads"]
    assert [u["uri"] for u in uploads] == [f"gs://my-bucket/cropland/{y}_{g}_cropland.tif" for y in (2015, 2016) for g in (10, 11)]
    assert uploads[0]["crc32c"] == crc32c_b64(maps / "2015_10_cropland.tif")
    man = json.loads((out / "projects__my-proj__assets__crop__2015.manifest.json").read_text())
    assert man["name"] == "projects/my-proj/assets/crop/2015"
    assert len(man["tilesets"]) == 1
    assert man["tilesets"][0]["sources"] == [{"uris": ["gs://my-bucket/cropland/2015_10_cropland.tif"]},
                                             {"uris": ["gs://my-bucket/cropland/2015_11_cropland.tif"]}]
    assert [(b["id"], b["tilesetBandIndex"], b["pyramidingPolicy"], b["missingData"]["values"]) for b in man["bands"]] == [
        ("probability", 0, "MEAN", [255.0]), ("cropland", 1, "MODE", [255.0])]
    assert all(b["tilesetId"] == man["tilesets"][0]["id"] for b in man["bands"])
    assert man["properties"] == {"year": 2015, "cropseg_version": __version__, "model": "pspnet-l8", "threshold": 0.4}
    assert (man["startTime"], man["endTime"]) == ("2015-01-01T00:00:00Z", "2016-01-01T00:00:00Z")
    assert "2 ingestion manifest(s)" in capsys.readouterr().out


def test_dry_run_cog_in_collection(tmp_path, maps):
    out = tmp_path / "dry"
    assert main([f"maps={maps}/2016_*_cropland.tif", "bucket=gs://bkt", "collection=projects/my-proj/assets/crop",
                 "mode=cog", f"dry_run_dir={out}", "dry_run=true"]) == 0
    req = json.loads((out / "projects__my-proj__assets__crop__2016_10.asset.json").read_text())
    assert req["type"] == "IMAGE" and req["gcsLocation"] == {"uris": ["gs://bkt/2016_10_cropland.tif"]}
    assert req["properties"]["grid"] == "10" and req["properties"]["year"] == 2016


def test_upload_skips_same_objects_and_rerun_skips_ingestion(tmp_path, maps, capsys):
    client, ee_fake = FakeClient(), FakeEE()
    args = [f"maps={maps}/*_cropland.tif", "bucket=gs://bkt/p", "collection=projects/my-proj/assets/crop",
            f"tasks.manifest={tmp_path / 'tasks.json'}"]
    assert run(args, storage_client=client, backend=ee_fake) == 0
    assert sorted(client.buckets["bkt"]) == sorted(f"p/{y}_{g}_cropland.tif" for y in (2015, 2016) for g in (10, 11))
    assert [r["name"] for r in ee_fake.started] == ["projects/my-proj/assets/crop/2015", "projects/my-proj/assets/crop/2016"]
    assert "uploads: 4 uploaded, 0 already there" in capsys.readouterr().out
    # a changed file is uploaded again, the rest skipped; completed ingestions are not restarted
    write_map(maps / "2015_10_cropland.tif", west=3)
    assert run(args, storage_client=client, backend=ee_fake) == 0
    out = capsys.readouterr().out
    assert "uploads: 1 uploaded, 3 already there" in out and "skipped completed 2" in out
    assert len(ee_fake.started) == 2
    assert run(["status", f"tasks.manifest={tmp_path / 'tasks.json'}", "all=true"], backend=ee_fake) == 0
    assert "ingest: 2 tasks: completed 2" in capsys.readouterr().out


@pytest.mark.parametrize("make, args, message", [
    (lambda d: write_map(d / "2015_12_cropland.tif", crs="EPSG:3857"), [], r"maps of 2015 differ in CRS"),
    (lambda d: write_map(d / "2015_12_cropland.tif", bands=1), [], r"maps of 2015 differ in band count"),
    (None, ["asset=projects/x/assets/bad name"], r"is not a valid Earth Engine asset id"),
    (None, ["bucket=my-bucket/p"], r"must be a Cloud Storage URL gs://"),
    (None, ["maps=/nonexistent/*.tif"], r"maps=/nonexistent/\*.tif: the pattern matches no maps"),
])
def test_bad_input_one_line(tmp_path, maps, capsys, make, args, message):
    if make:
        make(maps)
    base = {"maps": f"{maps}/*_cropland.tif", "bucket": "gs://bkt", "asset": "projects/my-proj/assets/crop/{year}"}
    for a in args:
        k, v = a.split("=", 1)
        base[k] = v
    with pytest.raises(SystemExit) as exit_:
        main([f"{k}={v}" for k, v in base.items()] + [f"dry_run_dir={tmp_path / 'dry'}", "dry_run=true"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and re.search(message, err), err


def test_not_authenticated(tmp_path, maps, capsys, monkeypatch):
    import ee

    def no_credentials(*_a, **_k):
        raise ee.EEException("Please authorize access to your Earth Engine account")

    monkeypatch.setattr(ee, "Initialize", no_credentials)
    with pytest.raises(SystemExit):
        main([f"maps={maps}/*_cropland.tif", "bucket=gs://bkt", "asset=projects/my-proj/assets/c/{year}", "project=p",
              f"tasks.manifest={tmp_path / 't.json'}"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "earthengine authenticate" in err


def test_threshold_and_encoding_come_from_the_maps_tags(tmp_path, capsys):
    """publish declared its config's threshold 0.5 for maps made with 0.4, and never how to read DN."""
    from cropseg.maps import encoding_tags

    d = tmp_path / "maps"
    d.mkdir()
    for grid in (10, 11):
        write_map(d / f"2015_{grid}_cropland.tif", west=grid, tags={"threshold": "0.4", **encoding_tags()})
    common = [str(d), "bucket=gs://bkt", "asset=projects/my-proj/assets/crop/{year}", "dry_run=true",
              f"dry_run_dir={tmp_path / 'dry'}"]
    assert main(common) == 0
    props = json.loads((tmp_path / "dry" / "projects__my-proj__assets__crop__2015.manifest.json").read_text())["properties"]
    assert props["threshold"] == 0.4 and props["probability_scale"] == 200.0
    assert props["probability_encoding"] == "probability = DN / 200; 255 = nodata"
    with pytest.raises(SystemExit) as e:
        main([*common, "threshold=0.5"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "threshold=0.5 differs from the threshold 0.4" in err and len(err.splitlines()) == 1
    write_map(d / "2015_12_cropland.tif", west=12, tags={"threshold": "0.6", **encoding_tags()})
    with pytest.raises(SystemExit):
        main(common)
    assert "maps of 2015 differ in tag threshold" in capsys.readouterr().err
