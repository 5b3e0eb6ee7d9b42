"""``cropseg prepare SUBCOMMAND key=value ...``: Earth Engine TFRecords or own rasters → H5 patches → tables, plots, splits.

Each subcommand's keys and defaults are in ``conf/prepare/<subcommand>.yaml`` (composed
by Hydra, as every cropseg command: see ``cropseg.command``); ``--help`` lists them. To
add one, write ``def cmd_x(o: dict) -> int``, its YAML file, and register it in ``COMMANDS``.

Exit status: 0 all good; 1 the data had problems (records skipped, damaged files: see the
summary and log); 2 a user error (bad option, missing folder), one line, no traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cropseg.bands import DEFAULT_BANDS, LABEL_BAND
from cropseg.command import Command, Group
from cropseg.errors import UserError
from cropseg.io import ensure_output_dir, ensure_output_file

EXIT_DATA_PROBLEMS = 1


def _progress() -> bool:
    return sys.stderr.isatty()


# --------------------------------------------------------------------------- subcommands


def cmd_inspect(o: dict) -> int:
    from cropseg.data.tfrecord import find_tfrecords, inspect_file

    if not o["file"]:
        raise UserError("prepare inspect: give a TFRecord file (cropseg prepare inspect FILE.tfrecord.gz)")
    files = find_tfrecords(o["file"], key="file")
    bad = False
    for f in files[: o["max_files"]]:
        info = inspect_file(f, o["max_records"])
        print(f"{info['file']}: {info['records']} record(s)"
              + (f", {info['bad_records']} bad" if info["bad_records"] else "")
              + (f"; DAMAGED: {info['damage']}" if info["damage"] else ""))
        if info["features"]:
            width = max(len(x["name"]) for x in info["features"])
            for x in info["features"]:
                print(f"  {x['name']:<{width}}  {x['type']:<10}  length {x['length']:>7}  {x.get('patch', '')}")
        sizes = info["patch_sizes"]
        if sizes:
            size = sizes[-1]
            print(f"  implied patch size: {' / '.join(f'{s}x{s}' for s in sizes)}"
                  f" (kernel radius {(size - 1) // 2}); convert crops {size} -> out_size (default 192),"
                  f" offset ({size} - out_size) // 2")
        if info["first_ids"]:
            print(f"  first patches: {', '.join(info['first_ids'])}")
        bad |= bool(info["damage"] or info["bad_records"])
    if len(files) > o["max_files"]:
        print(f"({len(files) - o['max_files']} more file(s) not shown; max_files=...)")
    return EXIT_DATA_PROBLEMS if bad else 0


def cmd_convert(o: dict) -> int:
    from cropseg.data.tfrecord import ConvertSpec, convert_many, find_tfrecords

    if o["compression"] not in {"gzip", "lzf", "none"}:
        raise UserError(f"prepare convert: compression={o['compression']!r}; choose one of: gzip, lzf, none")
    if not 0.0 <= o["max_nodata"] <= 1.0:
        raise UserError(f"prepare convert: max_nodata={o['max_nodata']} must be in [0, 1]")
    if o["out_size"] < 1 or (o["in_size"] is not None and o["in_size"] < o["out_size"]):
        raise UserError(f"prepare convert: in_size={o['in_size']} must be >= out_size={o['out_size']} >= 1")
    files = find_tfrecords(o["in"], key="in")
    ensure_output_dir(o["out"], "out")
    if o["log"]:
        ensure_output_file(o["log"], "log")
    spec = ConvertSpec(bands=tuple(o["bands"] or DEFAULT_BANDS), label=o["label"] or LABEL_BAND, in_size=o["in_size"], out_size=o["out_size"],
                       max_nodata=o["max_nodata"], year=o["year"],
                       compression=None if o["compression"] == "none" else o["compression"], level=o["level"])
    s = convert_many(files, o["out"], spec, workers=o["workers"], progress=_progress(), log_path=o["log"])
    rate = s.records / s.seconds if s.seconds else 0.0
    print(f"converted {s.files} file(s), {s.records} record(s) in {s.seconds:.1f}s ({rate:.1f} records/s) -> {o['out']}")
    print(f"  written {s.written}, already there {s.existing}, skipped/failed {s.failed}, damaged files {s.damaged_files}")
    for reason, n in sorted(s.reasons.items(), key=lambda kv: -kv[1]):
        print(f"    {n:>6}  {reason}")
    if not s.ok:
        print(f"  problems listed in {s.log_path}")
    return 0 if s.ok else EXIT_DATA_PROBLEMS


def _root_names(o: dict):
    from cropseg.data.describe import patch_names, patch_root

    if not o["root"]:
        raise UserError("root=DIR (a folder of .h5 patches) is required")
    root = patch_root(o["root"])
    names = patch_names(root, o["list"])
    return root, names


def cmd_describe(o: dict) -> int:
    from cropseg.data.describe import write_describe

    root, names = _root_names(o)
    out = ensure_output_dir(o["out"], "out")
    t0 = time.time()
    r = write_describe(root, out, names, workers=o["workers"], progress=_progress(), max_pixels=o["max_pixels"], seed=o["seed"])
    st = r["stats"]
    print(f"described {st['num_patches']} patches in {time.time() - t0:.1f}s: {r['csv']} and {r['json']}")
    width = max(map(len, st["bands"]))
    print(f"  {'band':<{width}}  " + "  ".join(f"{k:>10}" for k in ("min", "p02", "mean", "std", "p98", "max")))
    for b, v in st["bands"].items():
        print(f"  {b:<{width}}  " + "  ".join(f"{v[k]:>10.4g}" for k in ("min", "p02", "mean", "std", "p98", "max")))
    counts = r["table"]["c"].value_counts().sort_index()
    print("  patches per class c: " + ", ".join(f"{c}:{n}" for c, n in counts.items()))
    print(f"  use in training: data.normalization.kind=stats data.normalization.path={r['json']}")
    return 0


def cmd_plots(o: dict) -> int:
    from cropseg.data.describe import plot_all

    root, names = _root_names(o)
    out = ensure_output_dir(o["out"], "out")
    paths = plot_all(root, out, names, workers=o["workers"], progress=_progress(), num_previews=o["previews"],
                     max_pixels=o["max_pixels"], seed=o["seed"])
    print(f"wrote {len(paths)} plot(s) to {out}: " + ", ".join(p.name for p in paths))
    return 0


def cmd_split(o: dict) -> int:
    from cropseg.data.describe import split_name
    from cropseg.data.index import build_index
    from cropseg.data.split import write_splits

    root, names = _root_names(o)
    if o["group"] not in {"grid", "none"}:
        raise UserError(f"prepare split: group={o['group']!r}; choose one of: grid, none")
    ensure_output_dir(o["out"], "out")
    index = build_index(root, names, workers=o["workers"], progress=_progress())
    index["GridID"] = [split_name(n)[0] for n in index["name"]]
    out = Path(o["out"])
    r = write_splits(index, out, k=o["k"], group=o["group"] == "grid", seed=o["seed"],
                     oversample_strength=o["oversample"], test_fraction=o["test"])
    held = f"{r['test']} test patches held out -> {out}/test.txt; " if r["test"] else ""
    print(f"{held}{o['k']} folds of {len(names) - r['test']} patches ({'grid cells kept together' if o['group'] == 'grid' else 'not grouped'},"
          f" stratified by class c, seed {o['seed']}) -> {out}/fold*/train.txt, val.txt; assignment in {out}/folds.csv")
    print(r["summary"].to_string(index=False))
    print(f"  train on fold 0: python -m cropseg.train data=h5 data.root={root} "
          f"data.train_list={out}/fold0/{'train_oversampled' if o['oversample'] is not None else 'train'}.txt "
          f"data.val_list={out}/fold0/val.txt" + (f" data.test_list={out}/test.txt" if r["test"] else ""))
    return 0


def cmd_demo_tfrecords(o: dict) -> int:
    from cropseg.data.demo import DemoSpec, generate_demo
    from cropseg.data.describe import patch_names, patch_root
    from cropseg.data.tfrecord import patches_to_tfrecords

    if o["root"]:
        root = patch_root(o["root"])
    else:
        demo = Path(o["demo"])
        generate_demo(demo, DemoSpec(num_patches=o["num_patches"], size=o["size"], seed=o["seed"]))
        root = demo / "data"
    if o["pad"] < 0:
        raise UserError("prepare demo-tfrecords: pad must be >= 0")
    ensure_output_dir(o["out"], "out")
    files = patches_to_tfrecords(root, o["out"], patch_names(root, o["list"]), pad=o["pad"])
    print(f"wrote {len(files)} Earth Engine-format TFRecord file(s) (GZIP, one per grid cell) to {o['out']} from {root}")
    print(f"  next: cropseg prepare convert in={o['out']} out=DIR out_size=<patch size>  (records are patch size + {o['pad']})")
    return 0


def cmd_pack(o: dict) -> int:
    from cropseg.data.store import run_pack

    if o["root"] and Path(o["root"]).is_dir():  # a missing root is reported by pack, in its words
        ensure_output_dir(o["out"], "out")
    return run_pack(o)


# --------------------------------------------------------------------------- chips (issue 15)


def cmd_chips(o: dict) -> int:
    from cropseg.data.chips import format_summary, make_chips

    if not o["input"]:
        raise UserError("prepare chips: give imagery rasters (cropseg prepare chips RASTER... labels=... out=DIR)")
    ensure_output_dir(o["out"], "out")
    s = make_chips(
        list(o["input"]), o["out"], labels=o["labels"], bands=tuple(o["bands"] or DEFAULT_BANDS), size=o["size"], sampling=o["sampling"],
        stride=o["stride"], count=o["count"], candidates=o["candidates"], min_distance=o["min_distance"],
        stratify=o["stratify"], max_nodata=o["max_nodata"], label_values=o["label_values"],
        label_nodata=o["label_nodata"], label_band=o["label_band"], label_field=o["label_field"],
        all_touched=o["all_touched"], outside=o["outside"], band_map=o["band_map"],
        extra_bands=o["extra_bands"], band_scale=o["band_scale"],
        band_offset=o["band_offset"], preset=o["preset"], sensor=o["sensor"],
        assume_order=o["assume_order"], check_units=o["check_units"], grid_id=o["grid_id"], year=o["year"],
        compression=None if o["compression"] == "none" else o["compression"], level=o["level"],
        workers=o["workers"], seed=o["seed"], quicklook=o["quicklook"], progress=_progress())
    print(format_summary(s, o["max_nodata"]))
    return 0 if s.chips else EXIT_DATA_PROBLEMS


def _command(name: str, func, summary: str, positional: tuple[str, ...] = ()) -> Command:
    return Command(f"cropseg prepare {name}", f"prepare/{name}", func, summary, positional)


COMMANDS: dict[str, Command] = {c.prog.rsplit(" ", 1)[1]: c for c in (
    _command("inspect", cmd_inspect, "Show the features (names, types, lengths) of TFRecord files and the patch size "
             "they imply.", ("file...",)),
    _command("convert", cmd_convert, "Convert Earth Engine GZIP TFRecords to one H5 patch per record, {GridID}-{ID}.h5."),
    _command("describe", cmd_describe, "Per-patch table (describe.csv) and dataset band statistics (band_stats.json)."),
    _command("plots", cmd_plots, "PNGs: band distributions, cropland fraction and class, correlation, previews, "
             "patches per grid."),
    _command("split", cmd_split, "K-fold train/val lists, shuffled, stratified by class c, grid cells kept together."),
    _command("demo-tfrecords", cmd_demo_tfrecords, "Write Earth Engine-format TFRecords from demo (or any) H5 patches."),
    _command("pack", cmd_pack, "Pack H5 patches into a store of memory-mapped arrays for fast training (data=packed)."),
    _command("chips", cmd_chips, "Cut training chips {grid}-{id}.h5 from your own imagery rasters and labels "
             "(label raster or polygons).", ("input...",)),
)}

PREPARE = Group("cropseg prepare", COMMANDS, "Earth Engine TFRecords -> H5 patches -> tables, plots, splits, packed store.")
main = PREPARE.main


if __name__ == "__main__":
    raise SystemExit(main())
