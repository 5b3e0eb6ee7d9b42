"""``cropseg gee``: export training samples and prediction composites, follow their tasks.

    cropseg gee samples    [dry_run=true] [follow=true] [key=value ...]
    cropseg gee composites [dry_run=true] [follow=true] [key=value ...]
    cropseg gee status     [poll=false] [all=true] [key=value ...]

Configuration: conf/gee.yaml, ``key=value`` overrides it (``cropseg gee samples --help``
lists the keys). ``dry_run=true`` needs no credentials: it writes each task's serialized
Earth Engine graph and configuration under ``dry_run_dir`` and starts nothing.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cropseg.command import Command, Group
from cropseg.errors import UserError, report_user_errors
from cropseg.gee import engine
from cropseg.gee.tasks import EarthEngineBackend, Manifest, Policy, TaskManager, show_status

COMMANDS = ("samples", "composites", "status")


def plan(command: str, cfg: dict[str, Any], dry_run: bool):
    from cropseg.gee.exports import plan_composites, plan_samples

    return plan_samples(cfg, dry_run) if command == "samples" else plan_composites(cfg, dry_run)


def task_record(item, task) -> dict[str, Any]:
    """What a dry run writes for one task: the request Earth Engine would receive."""
    config = {k: v for k, v in task.config.items() if k != "expression"}
    config["expression"] = engine.serialize_compact(task.config["expression"])
    return {"key": item.key, "kind": item.kind, "year": item.year, "grid": item.grid, "name": item.name,
            "task_type": str(getattr(task.task_type, "value", task.task_type)), "params": item.params,
            "request": config}


def write_dry_run(items, out_dir: Path) -> dict[str, Any]:
    from cropseg.io import ensure_output_dir, write_text_atomic

    out_dir = ensure_output_dir(out_dir, "dry_run_dir")
    entries = []
    for item in items:
        task = item.build()
        rec = task_record(item, task)
        sub = out_dir / item.kind
        write_text_atomic(sub / f"{item.name}.task.json", json.dumps(rec, indent=1, default=str) + "\n")
        write_text_atomic(sub / f"{item.name}.graph.json", json.dumps(
            engine.serialize(task.config["expression"]), indent=1) + "\n")
        entries.append({"key": item.key, "name": item.name, "task": f"{item.kind}/{item.name}.task.json",
                        "graph": f"{item.kind}/{item.name}.graph.json", "output": item.params.get("output")})
    plan_doc = {"dry_run": True, "tasks": entries}
    write_text_atomic(out_dir / f"plan-{items[0].kind if items else 'empty'}.json", json.dumps(plan_doc, indent=1) + "\n")
    return plan_doc


def on_complete_command(template: str | list[str] | None) -> Callable[[dict[str, Any]], None] | None:
    """The ``on_complete`` hook: ``template`` (a string split as the shell would, or a list) with each
    ``{field}`` filled in per argument, run as an argument list without a shell.

    Task names and outputs come back from the manifest and may hold any character: filled
    into one argument each, a ``;`` or ``$(...)`` in them is text, never a command.
    """
    if not template:
        return None
    if isinstance(template, str):
        try:
            parts = shlex.split(template)
        except ValueError as err:
            raise UserError(f"on_complete={template!r}: {err}") from None
    else:
        parts = [str(p) for p in template]
    if not parts:
        return None

    def run(entry: dict[str, Any]) -> None:
        fields = {"key": entry["key"], "kind": entry.get("kind"), "year": entry.get("year"), "grid": entry.get("grid"),
                  "name": entry.get("name"), "output": (entry.get("params") or {}).get("output")}
        try:
            args = [p.format(**fields) for p in parts]
        except (KeyError, IndexError, ValueError) as err:
            raise UserError(f"on_complete: {err} is not a field; use {{key}} {{kind}} {{year}} {{grid}} {{name}} "
                            "{output}") from None
        print(f"[{entry['key']}] {shlex.join(args)}", flush=True)
        try:
            rc = subprocess.call(args)
        except OSError as err:
            rc = f"an error ({err.strerror or err})"
        if rc != 0:
            print(f"[{entry['key']}] on_complete exited with {rc}", file=sys.stderr, flush=True)

    return run


def execute(command: str, cfg: dict[str, Any], backend=None, sleep=time.sleep) -> int:
    """Run ``command`` (samples, composites or status) as ``cfg`` (conf/gee.yaml) says."""
    policy = Policy.from_config(cfg["tasks"])
    if command == "status":
        return show_status(cfg["tasks"]["manifest"], cfg.get("project"), policy, poll=cfg["poll"],
                           show_all=cfg["all"], backend=backend)

    if cfg["dry_run"]:
        with engine.offline(cfg.get("project")):
            items = plan(command, cfg, dry_run=True)
            doc = write_dry_run(items, Path(cfg["dry_run_dir"]))
        kind = items[0].kind if items else command
        print(f"dry run: {len(doc['tasks'])} {command} task(s) written to {cfg['dry_run_dir']}/{kind}/ "
              f"(*.task.json: request, *.graph.json: readable graph) and plan-{kind}.json; nothing started")
        return 0

    on_complete = on_complete_command(cfg.get("on_complete"))
    manifest = Manifest(cfg["tasks"]["manifest"])
    manifest.check_writable()
    if backend is None:
        engine.init_real(cfg.get("project"))
        backend = EarthEngineBackend()
    items = plan(command, cfg, dry_run=False)
    manager = TaskManager(manifest, backend, policy)
    print(manager.run(items, cfg["follow"], float(cfg["tasks"].get("poll_s", 60)), on_complete, sleep=sleep))
    return 0


_SUMMARIES = {"samples": "export training samples (TFRecord per grid cell)",
              "composites": "export prediction composites (GeoTIFF per grid cell and year)",
              "status": "show the task manifest (and ask Earth Engine about tasks in flight)"}


def commands(backend=None, sleep=time.sleep) -> Group:
    """The ``cropseg gee`` subcommands (``backend`` and ``sleep`` replace Earth Engine and time in tests)."""
    return Group("cropseg gee", {
        name: Command(f"cropseg gee {name}", "gee", lambda cfg, name=name: execute(name, cfg, backend, sleep),
                      _SUMMARIES[name]) for name in COMMANDS},
        "Earth Engine exports (training samples, prediction composites) and their tasks.")


def load_config(overrides: list[str]) -> dict[str, Any]:
    """conf/gee.yaml with ``key=value`` overrides, as the commands read it."""
    return commands().commands["samples"].load(overrides)


def run(argv: list[str], backend=None, sleep=time.sleep) -> int:
    return commands(backend, sleep)(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
