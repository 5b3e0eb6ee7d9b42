"""``cropseg prepare chips``: training chips cut from the real Landsat-5 scene with a label raster and polygons.

Every expectation is read from the rasters directly (rasterio windows, numpy), not through
cropseg: a chip must equal the raster window it claims to be.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window, transform as window_transform

from cropseg import prepare
from cropseg.data.chips import make_chips, parse_label_values, random_windows, stratified_order
from cropseg.data.patches import list_patches, patch_path, read_patch

from conftest import LANDSAT5, needs

pytestmark = needs(LANDSAT5)

SIZE = 64
CROP_CODES = "3-5,9"  # codes of the test's label raster that mean cropland
LABEL_NODATA = 0


def _run(argv: list[str]) -> int:
    try:
        return prepare.main(argv)
    except SystemExit as exc:  # report_user_errors exits 2
        return int(exc.code)


def _rows(folder: Path) -> list[dict]:
    with open(folder / "chips.csv") as fh:
        return list(csv.DictReader(fh))


def _scene() -> tuple[np.ndarray, dict]:
    with rasterio.open(LANDSAT5) as src:
        return src.read(), src.profile


def _codes() -> np.ndarray:
    """Label codes 1..10 from NDVI deciles of the scene, 0 (nodata) on the first 10 rows."""
    x, _ = _scene()
    nd = (x[3] - x[2]) / (x[3] + x[2])
    codes = np.clip(np.floor((nd + 0.1) * 10).astype(int), 1, 10).astype(np.uint8)
    codes[:10] = LABEL_NODATA
    return codes


def _crop(codes: np.ndarray) -> np.ndarray:
    """The rule CROP_CODES with nodata as NaN, written out by hand."""
    out = (((codes >= 3) & (codes <= 5)) | (codes == 9)).astype(np.float32)
    out[codes == LABEL_NODATA] = np.nan
    return out


@pytest.fixture(scope="module")
def label_tif(tmp_path_factory) -> Path:
    _, prof = _scene()
    path = tmp_path_factory.mktemp("labels") / "codes.tif"
    with rasterio.open(path, "w", driver="GTiff", width=prof["width"], height=prof["height"], count=1, dtype="uint8",
                       crs=prof["crs"], transform=prof["transform"], nodata=LABEL_NODATA) as dst:
        dst.write(_codes(), 1)
    return path


def _pixel_rect(r0: int, c0: int, r1: int, c1: int, t) -> list[list[tuple[float, float]]]:
    """A ring around pixel rows r0..r1 and cols c0..c1 (exclusive ends) of the scene grid."""
    x0, y0 = t @ (c0, r0)
    x1, y1 = t @ (c1, r1)
    return [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]


FIELDS = [  # (rows, cols, code): rectangles on the scene grid; the pasture overlaps the first field
    ((20, 70, 30, 100), 1),
    ((40, 90, 80, 140), 5),
    ((100, 180, 50, 130), 5),
    ((150, 260, 180, 250), 1),
]


def _write_geojson(path: Path, crs: str = "EPSG:32622", with_code: bool = True) -> Path:
    _, prof = _scene()
    feats = []
    for (r0, r1, c0, c1), code in FIELDS:
        feats.append({"type": "Feature", "properties": {"code": code, "crop": "maize" if code == 1 else "pasture"} if with_code else {},
                      "geometry": {"type": "Polygon", "coordinates": _pixel_rect(r0, c0, r1, c1, prof["transform"])}})
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}}, "features": feats}
    path.write_text(json.dumps(doc))
    return path


# --------------------------------------------------------------------------- label raster


def test_chips_equal_the_raster_windows_and_feed_describe_and_split(label_tif, tmp_path, capsys):
    out = tmp_path / "chips"
    code = _run(["chips", str(LANDSAT5), f"labels={label_tif}", f"out={out}", f"size={SIZE}", "stride=48",
                 "extra_bands.Dem=250", f"label_values={CROP_CODES}", "workers=2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    x, prof = _scene()
    codes = _codes()
    expected = [(r, c) for r in range(0, prof["height"] - SIZE + 1, 48) for c in range(0, prof["width"] - SIZE + 1, 48)]
    names = list_patches(out)
    assert len(names) == len(expected) == 30 and all(n.startswith("landsat5_tm_subset-") for n in names)
    assert "cut 30 chip(s) of 64x64" in printed and "written 30" in printed
    seen = set()
    for name in names:
        p = read_patch(patch_path(out, name))
        r, c, h, w = (int(v) for v in p.attrs["window"])
        seen.add((r, c))
        assert (h, w) == (SIZE, SIZE) and p.data.shape == (SIZE, SIZE, 7)
        assert p.bands == ("B", "G", "R", "NIR", "SWIR1", "NDVI", "Dem")
        win = x[:, r:r + SIZE, c:c + SIZE]
        assert np.array_equal(p.data[..., :5], win[:5].transpose(1, 2, 0))  # raw reflectance, bit for bit
        nir, red = win[3].astype(np.float64), win[2].astype(np.float64)
        np.testing.assert_allclose(p.data[..., 5], (nir - red) / (nir + red), atol=1e-6)
        assert (p.data[..., 6] == 250).all()
        np.testing.assert_array_equal(p.label[..., 0], _crop(codes[r:r + SIZE, c:c + SIZE]))
        # provenance: a chip can be put back on the map
        assert rasterio.crs.CRS.from_wkt(p.attrs["crs"]) == prof["crs"]
        t = window_transform(Window(c, r, SIZE, SIZE), prof["transform"])
        np.testing.assert_allclose(p.attrs["transform"], [t.a, t.b, t.c, t.d, t.e, t.f])
        assert p.attrs["source_raster"] == str(LANDSAT5.resolve()) and p.attrs["source"] == LANDSAT5.name
        assert p.attrs["grid_id"] == "landsat5_tm_subset" and name == f"landsat5_tm_subset-{p.attrs['point_id']}"
        assert "NDVI=derived from bands 4,3" in p.attrs["band_sources"] and "Dem=constant 250" in p.attrs["band_sources"]
    assert seen == set(expected)
    rows = _rows(out)
    assert len(rows) == 30 and {r["status"] for r in rows} == {"written"}
    assert (out / "chips_landsat5_tm_subset.png").stat().st_size > 1000
    # the rest of the pipeline takes the chips unchanged
    assert _run(["describe", f"root={out}"]) == 0
    assert _run(["split", f"root={out}", f"out={out / 'splits'}", "k=2", "group=none"]) == 0
    assert len((out / "splits" / "fold0" / "train.txt").read_text().split()) == 15


def test_rerun_resumes_and_workers_do_not_change_the_chips(label_tif, tmp_path):
    args = dict(labels=label_tif, size=SIZE, extra_bands={"Dem": 250}, label_values=CROP_CODES, quicklook=False)
    one = make_chips(LANDSAT5, tmp_path / "one", workers=1, **args)
    two = make_chips(LANDSAT5, tmp_path / "two", workers=2, **args)
    assert one.chips == two.chips == 16 and list_patches(tmp_path / "one") == list_patches(tmp_path / "two")
    for n in list_patches(tmp_path / "one"):
        a, b = read_patch(patch_path(tmp_path / "one", n)), read_patch(patch_path(tmp_path / "two", n))
        assert np.array_equal(a.data, b.data, equal_nan=True) and np.array_equal(a.label, b.label, equal_nan=True)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("*.h5")}
    victim = patch_path(tmp_path / "one", list_patches(tmp_path / "one")[3])
    victim.unlink()
    again = make_chips(LANDSAT5, tmp_path / "one", workers=2, **args)
    assert (again.total("written"), again.total("existing")) == (1, 15)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("*.h5")}
    assert {k for k in after if after[k] != mtimes.get(k)} == {victim.name}
    assert not list((tmp_path / "one").glob(".*.tmp"))  # no temporary left behind


def test_label_raster_on_another_grid_is_warped_on_the_fly(label_tif, tmp_path):
    codes = _codes()
    _, prof = _scene()
    # 60 m pixels aligned with the scene: nearest resampling must give each coarse pixel's 2 x 2 block
    coarse = codes[::2, ::2]
    t = prof["transform"]
    c60 = tmp_path / "codes60.tif"
    with rasterio.open(c60, "w", driver="GTiff", width=coarse.shape[1], height=coarse.shape[0], count=1,
                       dtype="uint8", crs=prof["crs"], transform=from_origin(t.c, t.f, 60, 60), nodata=LABEL_NODATA) as d:
        d.write(coarse, 1)
    s = make_chips(LANDSAT5, tmp_path / "c60", labels=c60, size=SIZE, extra_bands={"Dem": 250},
                   label_values=CROP_CODES, quicklook=False)
    fine = np.repeat(np.repeat(coarse, 2, 0), 2, 1)[:prof["height"], :prof["width"]]
    assert s.chips == 16
    for n in list_patches(tmp_path / "c60"):
        p = read_patch(patch_path(tmp_path / "c60", n))
        r, c = (int(v) for v in p.attrs["window"][:2])
        np.testing.assert_array_equal(p.label[..., 0], _crop(fine[r:r + SIZE, c:c + SIZE]))

    # the same labels in geographic coordinates: reprojected back, nearest twice, they must nearly agree
    from rasterio.warp import calculate_default_transform, reproject, Resampling

    geo = tmp_path / "codes_wgs84.tif"
    with rasterio.open(label_tif) as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        arr = np.zeros((h, w), np.uint8)
        reproject(codes, arr, src_transform=src.transform, src_crs=src.crs, dst_transform=tr, dst_crs="EPSG:4326",
                  resampling=Resampling.nearest, src_nodata=LABEL_NODATA, dst_nodata=LABEL_NODATA)
    with rasterio.open(geo, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=tr, nodata=LABEL_NODATA) as d:
        d.write(arr, 1)
    make_chips(LANDSAT5, tmp_path / "geo", labels=geo, size=SIZE, extra_bands={"Dem": 250}, label_values=CROP_CODES,
               quicklook=False)
    agree = total = 0
    for n in list_patches(tmp_path / "geo"):
        a = read_patch(patch_path(tmp_path / "geo", n)).label[..., 0]
        r, c = (int(v) for v in read_patch(patch_path(tmp_path / "geo", n)).attrs["window"][:2])
        b = _crop(codes[r:r + SIZE, c:c + SIZE])
        both = np.isfinite(a) & np.isfinite(b)
        agree += int((a[both] == b[both]).sum())
        total += int(both.sum())
    assert total > 0.8 * 16 * SIZE * SIZE and agree / total > 0.9


# --------------------------------------------------------------------------- polygons


def test_polygons_are_burnt_on_the_imagery_grid(tmp_path):
    _, prof = _scene()
    gj = _write_geojson(tmp_path / "fields.geojson")
    # every polygon cropland, outside other: exactly the rectangles (edges on pixel edges)
    s = make_chips(LANDSAT5, tmp_path / "all", labels=gj, size=SIZE, stride=SIZE, extra_bands={"Dem": 250},
                   quicklook=False, grid_id="fields")
    full = np.zeros((prof["height"], prof["width"]), np.float32)
    for (r0, r1, c0, c1), _ in FIELDS:
        full[r0:r1, c0:c1] = 1
    assert s.chips == 16
    for n in list_patches(tmp_path / "all"):
        assert n.startswith("fields-")
        p = read_patch(patch_path(tmp_path / "all", n))
        r, c = (int(v) for v in p.attrs["window"][:2])
        np.testing.assert_array_equal(p.label[..., 0], full[r:r + SIZE, c:c + SIZE])

    # classes from an attribute, unknown outside the polygons
    make_chips(LANDSAT5, tmp_path / "coded", labels=gj, size=SIZE, extra_bands={"Dem": 250}, label_field="code",
               label_values="1", outside="nodata", max_nodata=1.0, quicklook=False)
    coded = np.full((prof["height"], prof["width"]), np.nan, np.float32)
    for (r0, r1, c0, c1), code in sorted(FIELDS, key=lambda f: f[1] == 1):  # where fields overlap, cropland wins
        coded[r0:r1, c0:c1] = 1.0 if code == 1 else 0.0
    n_ok = 0
    for n in list_patches(tmp_path / "coded"):
        p = read_patch(patch_path(tmp_path / "coded", n))
        r, c = (int(v) for v in p.attrs["window"][:2])
        np.testing.assert_array_equal(p.label[..., 0], coded[r:r + SIZE, c:c + SIZE])
        n_ok += 1
    assert n_ok == 16
    # text classes by name give the same labels
    make_chips(LANDSAT5, tmp_path / "named", labels=gj, size=SIZE, extra_bands={"Dem": 250}, label_field="crop",
               label_values="maize", outside="nodata", max_nodata=1.0, quicklook=False)
    for n in list_patches(tmp_path / "coded"):
        a = read_patch(patch_path(tmp_path / "coded", n)).label
        assert np.array_equal(a, read_patch(patch_path(tmp_path / "named", n)).label, equal_nan=True)


def test_polygons_in_another_crs_and_all_touched(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    from rasterio.warp import transform_geom

    from cropseg.evaluation.vector import polygon_wkb

    _, prof = _scene()
    gj = _write_geojson(tmp_path / "fields.geojson")
    # the same fields as a GeoPackage in WGS84
    rings = [transform_geom("EPSG:32622", "EPSG:4326", {"type": "Polygon", "coordinates": _pixel_rect(
        r0, c0, r1, c1, prof["transform"])})["coordinates"] for (r0, r1, c0, c1), _ in FIELDS]
    gpkg = tmp_path / "fields.gpkg"
    pyogrio.raw.write(str(gpkg), np.array([polygon_wkb(r) for r in rings], dtype=object),
                      [np.array([code for _, code in FIELDS])], ["code"], crs="EPSG:4326", geometry_type="Polygon",
                      driver="GPKG")
    kw = dict(size=SIZE, extra_bands={"Dem": 250}, quicklook=False)
    make_chips(LANDSAT5, tmp_path / "utm", labels=gj, **kw)
    make_chips(LANDSAT5, tmp_path / "wgs", labels=gpkg, **kw)
    diff = total = 0
    for n in list_patches(tmp_path / "utm"):
        a = read_patch(patch_path(tmp_path / "utm", n)).label
        b = read_patch(patch_path(tmp_path / "wgs", n)).label
        diff += int((a != b).sum())
        total += a.size
    assert 0 < total and diff / total < 0.005  # reprojected edges may move by a pixel, no more

    # a thin diagonal field: all_touched burns every pixel it touches
    t = prof["transform"]
    diag = [[t @ (30.5, 10.2), t @ (31.5, 10.2), t @ (61.5, 60.2), t @ (60.5, 60.2), t @ (30.5, 10.2)]]
    thin = tmp_path / "thin.geojson"
    thin.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32622"}},
                                "features": [{"type": "Feature", "properties": {}, "geometry": {
                                    "type": "Polygon", "coordinates": diag}}]}))
    counts = {}
    for touched in (False, True):
        folder = tmp_path / f"thin-{touched}"
        make_chips(LANDSAT5, folder, labels=thin, all_touched=touched, grid_id="t", **kw)
        counts[touched] = float(np.nansum(read_patch(patch_path(folder, "t-0")).label))
    assert 0 < counts[False] < counts[True]


# --------------------------------------------------------------------------- sampling


def test_random_windows_keep_their_distance_and_are_deterministic(label_tif, tmp_path):
    kw = dict(labels=label_tif, size=32, sampling="random", count=12, min_distance=50, extra_bands={"Dem": 250},
              label_values=CROP_CODES, quicklook=False)
    a = make_chips(LANDSAT5, tmp_path / "a", seed=7, workers=1, **kw)
    b = make_chips(LANDSAT5, tmp_path / "b", seed=7, workers=2, **kw)
    c = make_chips(LANDSAT5, tmp_path / "c", seed=8, workers=1, **kw)
    assert a.chips == b.chips == c.chips == 12
    wins = {n: tuple(read_patch(patch_path(tmp_path / "a", n)).attrs["window"][:2]) for n in list_patches(tmp_path / "a")}
    assert wins == {n: tuple(read_patch(patch_path(tmp_path / "b", n)).attrs["window"][:2])
                    for n in list_patches(tmp_path / "b")}
    assert set(wins.values()) != {tuple(read_patch(patch_path(tmp_path / "c", n)).attrs["window"][:2])
                                  for n in list_patches(tmp_path / "c")}
    centres = np.array([(r + 16, c + 16) for r, c in wins.values()], float)
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1)) + np.eye(len(centres)) * 1e9
    assert d.min() >= 50
    # the generator alone: within bounds, apart, and fewer when no more fit
    pos = random_windows(310, 287, 64, 1000, 100, seed=0)
    assert 4 <= len(pos) < 1000
    assert all(0 <= r <= 310 - 64 and 0 <= c <= 287 - 64 for r, c in pos)


def test_stratified_sampling_keeps_rare_classes(tmp_path):
    _, prof = _scene()
    rare = np.zeros((prof["height"], prof["width"]), np.uint8)
    rare[:, 200:240] = 1  # a strip of cropland: most windows have none
    lab = tmp_path / "rare.tif"
    with rasterio.open(lab, "w", driver="GTiff", width=prof["width"], height=prof["height"], count=1, dtype="uint8",
                       crs=prof["crs"], transform=prof["transform"]) as d:
        d.write(rare, 1)
    kw = dict(labels=lab, size=32, sampling="random", count=8, min_distance=20, extra_bands={"Dem": 250}, seed=3,
              quicklook=False)
    plain = make_chips(LANDSAT5, tmp_path / "plain", **kw)
    strat = make_chips(LANDSAT5, tmp_path / "strat", stratify=True, candidates=60, **kw)
    assert plain.chips == strat.chips == 8
    assert strat.classes.get(0, 0) < plain.classes.get(0, 0)
    assert len(strat.classes) > len(plain.classes) and max(strat.classes.values()) <= 3
    # the order itself: one of each class in turn, windows without labels left out
    assert stratified_order([0, 1, 2, 3, 4, 5], [0.0, 0.01, 0.9, 0.02, float("nan"), 1.0]) == [0, 2, 5, 1, 3]


def test_windows_with_too_much_nodata_are_dropped(label_tif, tmp_path):
    x, prof = _scene()
    x = x.copy()
    x[:, :100, :100] = np.nan  # a cloud: the first two windows of the first row are mostly nodata
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **prof) as d:
        d.write(x)
        d.descriptions = ("Blue", "Green", "Red", "NIR", "SWIR1", "SWIR2")
    s = make_chips(holed, tmp_path / "out", labels=label_tif, size=SIZE, extra_bands={"Dem": 250},
                   label_values=CROP_CODES, quicklook=True)
    rows = {r["name"]: r for r in _rows(tmp_path / "out")}
    for name, r in rows.items():
        rr, cc = int(r["row"]), int(r["col"])
        img = np.isfinite(x[:, rr:rr + SIZE, cc:cc + SIZE]).all(0)
        lab = _codes()[rr:rr + SIZE, cc:cc + SIZE] != LABEL_NODATA
        frac = 1 - (img & lab).mean()
        assert float(r["nodata_frac"]) == pytest.approx(frac, abs=1e-4)
        assert r["status"] == ("dropped" if frac > 0.5 else "written")
        if r["status"] == "written":
            p = read_patch(patch_path(tmp_path / "out", name))
            assert np.array_equal(np.isnan(p.data[..., 0]), ~img)  # nodata stays NaN in the chip
    assert s.total("dropped") == sum(r["status"] == "dropped" for r in rows.values()) >= 2
    assert s.chips == len(list_patches(tmp_path / "out")) == 16 - s.total("dropped")


def test_collection2_integers_with_the_preset(label_tif, tmp_path, capsys):
    x, prof = _scene()
    dn = np.round((x + 0.2) / 0.0000275).astype(np.uint16)
    path = tmp_path / "LT05_c2.tif"
    with rasterio.open(path, "w", **{**prof, "dtype": "uint16", "nodata": 0}) as d:
        d.write(dn)
        d.descriptions = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
    out = tmp_path / "c2"
    assert _run(["chips", str(path), f"labels={label_tif}", f"out={out}", f"size={SIZE}", "preset=c2_dn",
                 "extra_bands.Dem=250", "bands=B,G,R,NIR,SWIR1,NDVI,Dem", "quicklook=false"]) == 0
    for n in list_patches(out):
        p = read_patch(patch_path(out, n))
        r, c = (int(v) for v in p.attrs["window"][:2])
        np.testing.assert_allclose(p.data[..., :5], x[:5, r:r + SIZE, c:c + SIZE].transpose(1, 2, 0), atol=2e-5)
        assert "B=band 1 * 2.75e-05 - 0.2" in p.attrs["band_sources"]
    capsys.readouterr()
    assert _run(["chips", str(path), f"labels={label_tif}", f"out={tmp_path / 'raw'}", f"size={SIZE}",
                 "extra_bands.Dem=250"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Collection-2" in err[0] and "c2_dn" in err[0]


# --------------------------------------------------------------------------- errors


def test_label_values_parsing():
    assert parse_label_values("1-61,66-77,204-254") == ((1, 61), (66, 77), (204, 254))
    assert parse_label_values(["2", 5]) == ((2, 2), (5, 5))
    assert parse_label_values(("maize", "wheat")) == ("maize", "wheat")
    assert parse_label_values("-5--2") == ((-5, -2),)


@pytest.mark.parametrize("args, message", [
    ([], "labels is required"),
    (["labels=LAB", "size=64"], "Dem needed by the model not found"),
    (["labels=nowhere.tif", "extra_bands.Dem=250"], "nowhere.tif: file not found"),
    (["labels=LAB", "extra_bands.Dem=250", "label_values=5-1"], "runs backwards"),
    (["labels=LAB", "extra_bands.Dem=250", "label_values=maize"], "is a raster of codes"),
    (["labels=FIELDS", "extra_bands.Dem=250", "label_field=kind"], "label_field='kind'"),
    (["labels=FAR", "extra_bands.Dem=250"], "none of its 4 polygons lies within"),
    (["labels=LAB", "extra_bands.Dem=250", "size=400"], "smaller than one 400 x 400 chip"),
    (["labels=LAB", "extra_bands.Dem=250", "sampling=spiral"], "sampling='spiral' is not known"),
    (["labels=LAB", "extra_bands.Dem=250", "grid_id=a-b"], "without '-'"),
    (["labels=LAB", "extra_bands.Dem=250", "preset=nope"], "preset='nope'"),
    (["labels=LAB", "extra_bands=Dem"], "extra_bands: give one value per band, e.g. extra_bands.Dem=250"),
    (["labels=LAB", "extra_bands.Dem=250", "max_nodata=2"], "max_nodata=2: must be in [0, 1]"),
])
def test_user_errors_are_one_line(args, message, label_tif, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fields = _write_geojson(tmp_path / "fields.geojson")
    far = _write_geojson(tmp_path / "far.geojson", crs="EPSG:32633")  # same numbers, another UTM zone
    args = [a.replace("LAB", str(label_tif)).replace("FIELDS", str(fields)).replace("FAR", str(far)) for a in args]
    code = _run(["chips", str(LANDSAT5), f"out={tmp_path / 'o'}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_missing_raster_and_out_are_one_line(label_tif, tmp_path, capsys):
    assert _run(["chips", str(tmp_path / "none.tif"), f"labels={label_tif}", f"out={tmp_path / 'o'}"]) == 2
    assert "none.tif: no such file or folder" in capsys.readouterr().err
    assert _run(["chips", f"labels={label_tif}", f"out={tmp_path / 'o'}"]) == 2
    assert "give imagery rasters" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end


def test_own_geotiff_and_polygons_to_chips_to_a_map_and_its_evaluation(tmp_path):
    """docs/prepare.md's worked example, tiny: polygons -> chips -> train -> predict the scene -> evaluate."""
    from cropseg.config import compose
    from cropseg.evaluate import main as evaluate_main
    from cropseg.predict import predict
    from cropseg.train import train

    from conftest import tiny_overrides

    _, prof = _scene()
    fields = _write_geojson(tmp_path / "fields.geojson", with_code=False)
    reference = np.zeros((prof["height"], prof["width"]), np.uint8)
    for (r0, r1, c0, c1), _ in FIELDS:
        reference[r0:r1, c0:c1] = 1
    with rasterio.open(tmp_path / "fields.tif", "w", **{**prof, "count": 1, "dtype": "uint8", "nodata": 255}) as d:
        d.write(reference, 1)
    chips = tmp_path / "chips"
    assert _run(["chips", str(LANDSAT5), f"labels={fields}", f"out={chips}", "size=64", "stride=32",
                 "extra_bands.Dem=250"]) == 0
    assert _run(["split", f"root={chips}", f"out={chips / 'splits'}", "k=4", "group=none"]) == 0
    cfg = compose("train", tiny_overrides(tmp_path) + [
        "logger=csv", "data=h5", f"data.root={chips}", f"data.train_list={chips}/splits/fold0/train.txt",
        f"data.val_list={chips}/splits/fold0/val.txt", "data.patch_size=64"])
    ckpt = train(cfg)["last_checkpoint"]
    s = predict({"ckpt": ckpt, "input": str(LANDSAT5), "output": str(tmp_path / "maps"), "extra_bands": {"Dem": 250},
                 "progress": False})
    assert s["done"] == 1
    maps = tmp_path / "maps"
    assert (maps / "landsat5-tm-subset_cropland.tif").exists() and (maps / "landsat5-tm-subset_cropland.png").exists()
    assert evaluate_main(["agreement", str(tmp_path / "fields.tif"), str(maps), f"out={tmp_path / 'eval'}",
                          "plots=false", "write_maps=false"]) == 0
    table = list(csv.DictReader(open(tmp_path / "eval" / "agreement.csv")))
    assert 0.0 <= float(table[0]["agreement"]) <= 1.0 and float(table[0]["area_compared_km2"]) > 70


def test_several_rasters_from_a_folder_each_with_its_grid_id(label_tif, tmp_path, capsys):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in ("2010_a.tif", "2011_b.tif"):
        (folder / name).write_bytes(LANDSAT5.read_bytes())
    out = tmp_path / "chips"
    assert _run(["chips", str(folder), f"labels={label_tif}", f"out={out}", "size=128", "extra_bands.Dem=250",
                 f"label_values={CROP_CODES}"]) == 0
    names = list_patches(out)
    assert [n for n in names if n.startswith("2010_a-")] and len(names) == 8
    assert {read_patch(patch_path(out, n)).attrs["year"] for n in names} == {2010, 2011}
    assert (out / "chips_2010_a.png").exists() and (out / "chips_2011_b.png").exists()
    capsys.readouterr()
    assert _run(["chips", str(folder), f"labels={label_tif}", f"out={out}", "grid_id=x", "extra_bands.Dem=250"]) == 2
    assert "names the chips of one raster, but input gives 2" in capsys.readouterr().err
