"""The ``cropseg`` command: one front door to every stage.

Each subcommand lives in its own module with a ``main(argv)`` function; this file only
dispatches, so stages can grow without touching each other.
"""

from __future__ import annotations

import importlib
import sys

from cropseg.errors import report_user_errors

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cropseg.data.demo", "generate the demo dataset (H5 patches, lists)"),
    "train": ("cropseg.train", "train a model (Hydra; same as python -m cropseg.train)"),
    "prepare": ("cropseg.prepare", "inspect/convert/describe/plot/split/pack training patches"),
    "predict": ("cropseg.predict", "tiled inference over GeoTIFF scenes (Hydra)"),
    "mosaic": ("cropseg.inference.mosaic", "build a VRT or COG mosaic of a year's maps"),
    "export": ("cropseg.models.export", "export a checkpoint to ONNX / TorchScript"),
    "evaluate": ("cropseg.evaluate", "accuracy, agreement, area and clustering of maps"),
    "runs": ("cropseg.runs", "summarize training runs and sweeps"),
    "calibrate": ("cropseg.calibrate", "fit threshold and temperature on validation patches"),
    "gee": ("cropseg.gee.cli", "Earth Engine exports and task status"),
    "publish": ("cropseg.publish", "upload maps and ingest them into Earth Engine"),
    "info": ("cropseg.models.checkpoint", "show what a checkpoint holds"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: cropseg COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"error: command {name!r} is not available in this version of cropseg", file=sys.stderr)
            return 2
        raise
    sys.argv = [f"cropseg {name}", *rest]
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
