"""describe / plots / split on real H5 patches (the demo dataset and the real seed patches)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropseg import prepare
from cropseg.bands import DEFAULT_BANDS, Normalization
from cropseg.data.index import build_index, patch_class
from cropseg.data.patches import list_patches, patch_path, read_list, read_patch
from cropseg.data.split import assign_folds, oversample

from conftest import SEED_DIR, needs


def _run(argv):
    try:
        return prepare.main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_describe_table_and_band_stats(demo_root, tmp_path):
    assert _run(["describe", f"root={demo_root}", f"out={tmp_path}"]) == 0  # finds root/data
    table = pd.read_csv(tmp_path / "describe.csv", dtype={"name": str, "GridID": str, "PointID": str})
    names = list_patches(demo_root / "data")
    assert table["name"].tolist() == names and len(table) == 22
    for b in DEFAULT_BANDS:
        for s in ("mean", "std", "min", "max"):
            assert f"{b}_{s}" in table
    index = build_index(demo_root / "data", names)
    np.testing.assert_allclose(table["rp"], index["rp"], rtol=1e-5)
    assert (table["c"] == patch_class(table["rp"].to_numpy())).all()
    assert (table["GridID"] + "-" + table["PointID"]).tolist() == names
    assert table["nodata_frac"].max() > 0  # the demo has nodata wedges
    # Per-band values agree with the patch itself (valid pixels only).
    p = read_patch(patch_path(demo_root / "data", names[9]))
    valid = np.isfinite(p.data).all(axis=2)
    assert table.loc[9, "NIR_mean"] == pytest.approx(float(p.data[..., 3][valid].mean()), rel=1e-5)
    stats = json.loads((tmp_path / "band_stats.json").read_text())
    for b in DEFAULT_BANDS:
        st = stats["bands"][b]
        assert st["min"] <= st["p02"] <= st["mean"] <= st["p98"] <= st["max"] and st["std"] > 0
    norm = Normalization.from_stats(tmp_path / "band_stats.json", DEFAULT_BANDS)
    assert norm.min[3] == pytest.approx(stats["bands"]["NIR"]["p02"])


@needs(SEED_DIR)
def test_describe_real_patches_exact_stats(tmp_path):
    assert _run(["describe", f"root={SEED_DIR}", f"out={tmp_path}", "workers=2"]) == 0
    stats = json.loads((tmp_path / "band_stats.json").read_text())
    data = np.stack([read_patch(patch_path(SEED_DIR / "data", n)).data for n in list_patches(SEED_DIR / "data")])
    x = data.reshape(-1, 7).astype(np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    assert stats["num_valid_pixels"] == len(x)
    for i, b in enumerate(DEFAULT_BANDS):  # < 2M pixels: percentiles exact too
        assert stats["bands"][b]["mean"] == pytest.approx(x[:, i].mean(), rel=1e-6)
        assert stats["bands"][b]["std"] == pytest.approx(x[:, i].std(), rel=1e-5)
        assert stats["bands"][b]["p98"] == pytest.approx(np.percentile(x[:, i].astype(np.float32), 98), rel=1e-6)
        assert stats["bands"][b]["max"] == pytest.approx(x[:, i].max())


def test_plots_are_written(demo_root, tmp_path):
    assert _run(["plots", f"root={demo_root}", f"out={tmp_path}", "previews=6"]) == 0
    for name in ("band_distributions", "cropland_fraction", "band_correlation", "sample_previews", "patches_per_grid"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_split_keeps_grid_cells_together_and_writes_oversampled_lists(demo_root, tmp_path):
    assert _run(["split", f"root={demo_root}", f"out={tmp_path}", "k=3", "oversample=1"]) == 0
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"name": str, "GridID": str})
    assert sorted(folds["name"]) == list_patches(demo_root / "data")
    assert (folds.groupby("GridID")["fold"].nunique() == 1).all()
    index = build_index(demo_root / "data", folds["name"].tolist())
    c = dict(zip(index["name"], index["c"]))
    seen_val = []
    for f in range(3):
        train = read_list(tmp_path / f"fold{f}" / "train.txt")
        val = read_list(tmp_path / f"fold{f}" / "val.txt")
        assert not set(train) & set(val) and len(train) + len(val) == 22
        assert not {n.split("-")[0] for n in train} & {n.split("-")[0] for n in val}
        seen_val += val
        over = read_list(tmp_path / f"fold{f}" / "train_oversampled.txt")
        assert set(over) == set(train)
        counts = pd.Series([c[n] for n in over]).value_counts()
        assert counts.nunique() == 1  # strength 1: every class as large as the largest
    assert sorted(seen_val) == sorted(folds["name"])
    # Without grouping, patches of one cell may be split; with too few cells and group=grid: user error.
    assert _run(["split", f"root={demo_root}", f"out={tmp_path / 'ng'}", "k=5", "group=none"]) == 0
    assert _run(["split", f"root={demo_root}", f"out={tmp_path / 'g'}", "k=5"]) == 2


def test_split_holds_out_whole_grid_cells_as_test_list(demo_root, tmp_path, capsys):
    # The demo has 3 grid cells: a third of the patches means one cell; the folds share the other two.
    assert _run(["split", f"root={demo_root}", f"out={tmp_path}", "k=2", "test=0.34"]) == 0
    assert f"data.test_list={tmp_path}/test.txt" in capsys.readouterr().out
    test = read_list(tmp_path / "test.txt")
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"name": str, "GridID": str})
    assert sorted(folds.loc[folds.fold == -1, "name"]) == sorted(test)
    cells = {n.split("-")[0] for n in test}
    assert len(cells) == 1 and len(test) == sum(n.split("-")[0] in cells for n in list_patches(demo_root / "data"))
    for f in range(2):
        train = read_list(tmp_path / f"fold{f}" / "train.txt")
        val = read_list(tmp_path / f"fold{f}" / "val.txt")
        assert not (set(train) | set(val)) & set(test)
        assert len(train) + len(val) + len(test) == 22
    # Too few grid cells for the fraction asked: one line, exit 2. Without a test list, no stale test.txt.
    assert _run(["split", f"root={demo_root}", f"out={tmp_path}", "k=2", "test=0.1"]) == 2
    assert "test=0.1: one grid cell in 10 is held out, but there are only 3 grid cells" in capsys.readouterr().err
    assert _run(["split", f"root={demo_root}", f"out={tmp_path}", "k=2"]) == 0
    assert not (tmp_path / "test.txt").exists() and (pd.read_csv(tmp_path / "folds.csv").fold >= 0).all()


def test_stratified_folds_balance_classes():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(5), [50, 25, 15, 5, 5])
    names = [f"{g}-{i}" for i, g in enumerate(rng.integers(0, 40, len(classes)))]
    folds = assign_folds(names, classes, k=5, seed=1)
    for cls in range(5):
        per_fold = np.bincount(folds[classes == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    # Shuffled: another seed gives another assignment.
    assert (assign_folds(names, classes, k=5, seed=2) != folds).any()
    grouped = assign_folds(names, classes, k=5, groups=[n.split("-")[0] for n in names], seed=1)
    df = pd.DataFrame({"g": [n.split("-")[0] for n in names], "f": grouped})
    assert (df.groupby("g")["f"].nunique() == 1).all()
    for cls in (0, 1):  # still roughly stratified
        per_fold = np.bincount(grouped[classes == cls], minlength=5)
        assert per_fold.min() > 0


def test_oversample_strength():
    names = [f"p{i}" for i in range(14)]
    classes = [0] * 10 + [1] * 3 + [2]
    assert sorted(oversample(names, classes, 0.0)) == sorted(names)
    full = oversample(names, classes, 1.0, seed=3)
    assert pd.Series(full).map(dict(zip(names, classes))).value_counts().to_dict() == {0: 10, 1: 10, 2: 10}
    half = pd.Series(oversample(names, classes, 0.5)).map(dict(zip(names, classes))).value_counts().to_dict()
    assert half == {0: 10, 1: 6, 2: 4}


def _bad_outs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    outs = {"is a file": (blocker, "is a file, not a folder"),
            "under a file": (blocker / "sub", f"cannot be created: {blocker} is a file")}
    if (Path("/proc") / "self").is_dir():
        outs["not creatable"] = (Path("/proc/cropseg-test/out"), "cannot be created or written")
    return outs


@pytest.mark.parametrize("case", ["is a file", "under a file", "not creatable"])
@pytest.mark.parametrize("command", ["convert", "describe", "plots", "split", "pack"])
def test_an_unwritable_out_is_one_line_before_any_work(command, case, demo_root, tmp_path, capsys):
    outs = _bad_outs(tmp_path)
    if case not in outs:
        pytest.skip("no /proc to give an uncreatable folder")
    out, message = outs[case]
    if command == "convert":
        from cropseg.data.tfrecord import patches_to_tfrecords

        patches_to_tfrecords(demo_root / "data", tmp_path / "tfr", list_patches(demo_root / "data")[:2])
        args = [f"in={tmp_path / 'tfr'}", "out_size=64"]
    else:
        args = [f"root={demo_root / 'data'}"]
    assert _run([command, *args, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: out={out}: ") and message in err, err


def test_describe_plots_split_leave_the_data_folder_alone(demo_root, tmp_path, monkeypatch):
    """Data folders are often shared or read-only: by default the outputs go to the current folder."""
    before = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*"))
    monkeypatch.chdir(tmp_path)
    for command in ("describe", "plots", "split"):
        extra = {"plots": ["previews=2"], "split": ["k=3"]}.get(command, [])
        assert _run([command, f"root={demo_root}", *extra]) == 0
    assert sorted(p.relative_to(demo_root) for p in demo_root.rglob("*")) == before
    assert (tmp_path / "describe" / "band_stats.json").is_file() and (tmp_path / "splits" / "folds.csv").is_file()
    assert list((tmp_path / "plots").glob("*.png"))
