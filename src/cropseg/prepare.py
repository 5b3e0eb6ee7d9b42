"""``cropseg prepare SUBCOMMAND key=value ...``: Earth Engine TFRecords → H5 patches → tables, plots, splits.

A small dispatcher over subcommand functions. Every subcommand takes ``key=value``
options (as Hydra overrides do; lists as ``a,b,c`` or ``[a,b,c]``) declared in its
``Command`` entry, and ``--help``. To add one, write ``def cmd_x(opts) -> int`` and
register it in ``COMMANDS``.

Exit status: 0 all good; 1 the data had problems (records skipped, damaged files: see the
summary and log); 2 a user error (bad option, missing folder), one line, no traceback.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cropseg.bands import DEFAULT_BANDS, LABEL_BAND
from cropseg.errors import UserError, report_user_errors

EXIT_DATA_PROBLEMS = 1


@dataclass
class Option:
    default: Any
    help: str
    kind: str = "str"  # str | int | float | bool | list | path | optint


@dataclass
class Command:
    func: Callable[[dict], int]
    help: str
    options: dict[str, Option] = field(default_factory=dict)
    positional: str | None = None  # option filled by bare (non key=value) arguments

    def usage(self, name: str) -> str:
        lines = [f"usage: cropseg prepare {name} " + (f"[{self.positional}=]" if self.positional else "")
                 + " ".join(f"{k}=..." for k in self.options if k != self.positional), "", self.help, "", "options:"]
        width = max(map(len, self.options), default=4)
        for k, o in self.options.items():
            lines.append(f"  {k:<{width}}  {o.help} (default: {o.default})")
        return "\n".join(lines)


def _convert_value(cmd: str, key: str, raw: str, opt: Option) -> Any:
    raw = raw.strip()
    try:
        if opt.kind == "list":
            return tuple(s.strip() for s in raw.strip("[]").split(",") if s.strip())
        if raw.lower() in {"null", "none", "~", ""} and opt.kind in {"optint", "path", "optfloat"}:
            return None
        if opt.kind in {"int", "optint"}:
            return int(raw)
        if opt.kind in {"float", "optfloat"}:
            return float(raw)
        if opt.kind == "bool":
            low = raw.lower()
            if low in {"true", "yes", "1", "on"}:
                return True
            if low in {"false", "no", "0", "off"}:
                return False
            raise ValueError
        return raw
    except ValueError:
        raise UserError(f"prepare {cmd}: {key}={raw!r} is not a valid {opt.kind.replace('opt', '')}") from None


def parse_options(name: str, cmd: Command, argv: list[str]) -> dict:
    opts = {k: o.default for k, o in cmd.options.items()}
    positional: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            if cmd.positional is None:
                raise UserError(f"prepare {name}: argument {arg!r} is not key=value; see cropseg prepare {name} --help")
            positional.append(arg)
            opts[cmd.positional] = tuple(positional)
            continue
        key = key.lstrip("-").replace("-", "_")
        if key not in cmd.options:
            raise UserError(f"prepare {name}: unknown option {key!r}; known: {', '.join(cmd.options)}")
        opts[key] = _convert_value(name, key, value, cmd.options[key])
    return opts


def _progress() -> bool:
    return sys.stderr.isatty()


# --------------------------------------------------------------------------- subcommands


def cmd_inspect(o: dict) -> int:
    from cropseg.data.tfrecord import find_tfrecords, inspect_file

    files = [f for spec in (o["file"] or ()) for f in find_tfrecords(spec)]
    if not files:
        raise UserError("prepare inspect: give a TFRecord file (cropseg prepare inspect FILE.tfrecord.gz)")
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

    if not o["in"]:
        raise UserError("prepare convert: in=DIR_OR_GLOB is required")
    if not o["out"]:
        raise UserError("prepare convert: out=DIR is required")
    if o["compression"] not in {"gzip", "lzf", "none"}:
        raise UserError(f"prepare convert: compression={o['compression']!r}; choose one of: gzip, lzf, none")
    if not 0.0 <= o["max_nodata"] <= 1.0:
        raise UserError(f"prepare convert: max_nodata={o['max_nodata']} must be in [0, 1]")
    if o["out_size"] < 1 or (o["in_size"] is not None and o["in_size"] < o["out_size"]):
        raise UserError(f"prepare convert: in_size={o['in_size']} must be >= out_size={o['out_size']} >= 1")
    files = find_tfrecords(o["in"])
    spec = ConvertSpec(bands=tuple(o["bands"]), label=o["label"], in_size=o["in_size"], out_size=o["out_size"],
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
    out = Path(o["out"] or o["root"])
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
    out = Path(o["out"] or Path(o["root"]) / "plots")
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
    index = build_index(root, names, workers=o["workers"], progress=_progress())
    index["GridID"] = [split_name(n)[0] for n in index["name"]]
    out = Path(o["out"] or Path(o["root"]) / "splits")
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

    if not o["out"]:
        raise UserError("prepare demo-tfrecords: out=DIR is required")
    if o["root"]:
        root = patch_root(o["root"])
    else:
        demo = Path(o["demo"])
        generate_demo(demo, DemoSpec(num_patches=o["num_patches"], size=o["size"], seed=o["seed"]))
        root = demo / "data"
    if o["pad"] < 0:
        raise UserError("prepare demo-tfrecords: pad must be >= 0")
    files = patches_to_tfrecords(root, o["out"], patch_names(root, o["list"]), pad=o["pad"])
    print(f"wrote {len(files)} Earth Engine-format TFRecord file(s) (GZIP, one per grid cell) to {o['out']} from {root}")
    print(f"  next: cropseg prepare convert in={o['out']} out=DIR out_size=<patch size>  (records are patch size + {o['pad']})")
    return 0


_ROOT = {"root": Option(None, "folder of .h5 patches (or its parent holding data/)", "path"),
         "list": Option(None, "list file of patch names to use (default: every patch in root)", "path"),
         "workers": Option(0, "processes (0: one)", "int")}


def cmd_pack(o: dict) -> int:
    from cropseg.data.store import run_pack

    return run_pack(o)

COMMANDS: dict[str, Command] = {
    "inspect": Command(cmd_inspect, "Show the features (names, types, lengths) of TFRecord files and the patch size they imply.", {
        "file": Option((), "TFRecord file(s), folder or glob", "list"),
        "max_records": Option(None, "stop counting after this many records", "optint"),
        "max_files": Option(5, "show at most this many files", "int"),
    }, positional="file"),
    "convert": Command(cmd_convert, "Convert Earth Engine GZIP TFRecords to one H5 patch per record, {GridID}-{ID}.h5.", {
        "in": Option(None, "folder, glob or file of TFRecords", "path"),
        "out": Option(None, "output folder of .h5 patches", "path"),
        "bands": Option(DEFAULT_BANDS, "feature bands, in order", "list"),
        "label": Option(LABEL_BAND, "label band", "str"),
        "in_size": Option(None, "exported patch size (null: from each record's band length)", "optint"),
        "out_size": Option(192, "training patch size; centre crop at offset (in - out) // 2", "int"),
        "max_nodata": Option(0.5, "skip records whose patch has a larger fraction of nodata (NaN) pixels", "float"),
        "year": Option(None, "year recorded in the patch attributes", "optint"),
        "compression": Option("gzip", "gzip | lzf | none", "str"),
        "level": Option(4, "gzip level", "int"),
        "workers": Option(0, "processes (0: one per CPU)", "int"),
        "log": Option(None, "CSV log of problems (default: OUT/convert_log.csv)", "path"),
    }),
    "describe": Command(cmd_describe, "Per-patch table (describe.csv) and dataset band statistics (band_stats.json).", {
        **_ROOT, "out": Option(None, "output folder (default: root)", "path"),
        "max_pixels": Option(2_000_000, "pixels sampled for percentiles", "int"),
        "seed": Option(0, "sampling seed", "int"),
    }),
    "plots": Command(cmd_plots, "PNGs: band distributions, cropland fraction and class, correlation, previews, patches per grid.", {
        **_ROOT, "out": Option(None, "output folder (default: root/plots)", "path"),
        "previews": Option(12, "number of sample previews", "int"),
        "max_pixels": Option(500_000, "pixels sampled for distributions and correlation", "int"),
        "seed": Option(0, "sampling seed", "int"),
    }),
    "split": Command(cmd_split, "K-fold train/val lists, shuffled, stratified by class c, grid cells kept together.", {
        **_ROOT, "out": Option(None, "output folder (default: root/splits)", "path"),
        "k": Option(5, "number of folds", "int"),
        "group": Option("grid", "grid: keep each grid cell in one fold (spatial CV) | none", "str"),
        "seed": Option(0, "shuffle seed", "int"),
        "oversample": Option(None, "also write train_oversampled.txt with this strength in [0, 1] (1: every class as large as the largest)", "optfloat"),
        "test": Option(0.0, "first hold out this fraction of the patches (whole grid cells) as test.txt for data.test_list (0: none)", "float"),
    }),
    "demo-tfrecords": Command(cmd_demo_tfrecords, "Write Earth Engine-format TFRecords from demo (or any) H5 patches.", {
        "out": Option(None, "output folder of {GridID}.tfrecord.gz", "path"),
        "root": Option(None, "folder of .h5 patches (default: generate the demo in demo=)", "path"),
        "list": Option(None, "list file of patch names", "path"),
        "demo": Option("data/demo", "demo dataset folder (generated if absent)", "path"),
        "num_patches": Option(110, "demo patches", "int"),
        "size": Option(192, "demo patch size", "int"),
        "seed": Option(0, "demo seed", "int"),
        "pad": Option(1, "extra rows/columns as Earth Engine exports (193 for 192)", "int"),
    }),
    "pack": Command(cmd_pack,
                    "Pack H5 patches into a store of memory-mapped arrays for fast training (data=packed).", {
        "root": Option(None, "folder of .h5 patches", "path"),
        "out": Option(None, "store folder to create", "path"),
        "list": Option(None, "list file(s) of patches to pack, comma-separated (null: every .h5 in root)", "list"),
        "bands": Option((), "bands to store, in order (empty: the first patch's bands)", "list"),
        "float32_bands": Option(("Dem",), "bands kept float32, the rest float16 ('all' | '' for none)", "list"),
        "workers": Option(0, "processes (0: one per CPU)", "int"),
        "overwrite": Option(False, "rebuild a finished store of different input", "bool"),
    }),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: cropseg prepare SUBCOMMAND key=value ...", "", "subcommands:"]
    lines += [f"  {n:<{width}}  {c.help}" for n, c in COMMANDS.items()]
    lines += ["", "cropseg prepare SUBCOMMAND --help lists its options."]
    return "\n".join(lines)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UserError(f"prepare: unknown subcommand {name!r}; choose one of: {', '.join(COMMANDS)}")
    cmd = COMMANDS[name]
    if any(a in {"-h", "--help"} for a in rest):
        print(cmd.usage(name))
        return 0
    return cmd.func(parse_options(name, cmd, rest))


if __name__ == "__main__":
    raise SystemExit(main())
