"""``cropseg gee``: export training samples and prediction composites, follow their tasks.

    cropseg gee samples    [--dry-run] [--follow] [key=value ...]
    cropseg gee composites [--dry-run] [--follow] [key=value ...]
    cropseg gee status     [--no-poll] [--all] [key=value ...]

Configuration: conf/gee.yaml (Hydra); ``key=value`` overrides it. ``--dry-run`` needs no
credentials: it writes each task's serialized Earth Engine graph and configuration
under ``dry_run.dir`` and starts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cropseg.errors import UserError, report_user_errors
from cropseg.gee import engine
from cropseg.gee.tasks import IN_FLIGHT, EarthEngineBackend, Manifest, Policy, TaskManager, format_summary, status_table

COMMANDS = ("samples", "composites", "status")


_TEMPLATE = re.compile(r"\{[A-Za-z_]+\}")


def _quote_template(override: str) -> str:
    """Quote values holding name templates ({year}) or globs (*, ?) so Hydra takes them as strings."""
    key, _, value = override.partition("=")
    if value[:1] in {"'", '"'} or not (_TEMPLATE.search(value) or "*" in value or "?" in value):
        return override
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_config(overrides: list[str], name: str = "gee") -> dict[str, Any]:
    """Compose conf/<name>.yaml with ``key=value`` overrides into plain data."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cropseg.config import compose, to_container

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"{name}: {bad[0]!r} is not a key=value override")
    try:
        cfg = compose(name, [_quote_template(o) for o in overrides])
    except (HydraException, OmegaConfBaseException) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise UserError(f"{name} config: {' '.join(lines)[:300]}") from None
    return to_container(cfg)


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
    from cropseg.io import write_text_atomic

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"dry_run.dir={out_dir}: cannot be created ({err.strerror or err})") from None
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


def on_complete_command(template: str | None):
    if not template:
        return None

    def run(entry: dict[str, Any]) -> None:
        fields = {"key": entry["key"], "kind": entry.get("kind"), "year": entry.get("year"), "grid": entry.get("grid"),
                  "name": entry.get("name"), "output": (entry.get("params") or {}).get("output")}
        cmd = str(template).format(**fields)
        print(f"[{entry['key']}] {cmd}", flush=True)
        rc = subprocess.call(cmd, shell=True)
        if rc != 0:
            print(f"[{entry['key']}] on_complete exited with {rc}", file=sys.stderr, flush=True)

    return run


def show_status(path, project, policy, poll: bool = True, show_all: bool = False, backend=None) -> int:
    """Poll the tasks in flight (unless ``poll`` is false) and summarise the manifest by kind."""
    manifest = Manifest(path)
    if not manifest.tasks:
        print(f"{manifest.path}: no tasks recorded yet")
        return 0
    if poll and any(e["state"] in IN_FLIGHT for e in manifest.tasks.values()):
        manifest.check_writable()
        if backend is None:
            engine.init_real(project)
            backend = EarthEngineBackend()
        TaskManager(manifest, backend, policy).refresh()
    if show_all:
        print(status_table(manifest))
    print(f"{manifest.path}: {format_summary(manifest.summary())}")
    by_kind: dict[str, list[str]] = {}
    for e in manifest.tasks.values():
        by_kind.setdefault(e.get("kind", "?"), []).append(e["key"])
    for kind, keys in by_kind.items():
        print(f"  {kind}: {format_summary(manifest.summary(keys))}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cropseg gee", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("overrides", nargs="*", help="key=value config overrides (conf/gee.yaml)")
    p.add_argument("--dry-run", action="store_true", help="write graphs and task configs; start nothing")
    p.add_argument("--follow", action="store_true", help="keep submitting and polling until every task is done")
    p.add_argument("--no-poll", action="store_true", help="status: show the manifest without asking Earth Engine")
    p.add_argument("--all", action="store_true", help="status: list every task, not only the summary")
    return p


def run(argv: list[str], backend=None, sleep=time.sleep) -> int:
    args = _parser().parse_intermixed_args(argv)
    cfg = load_config(args.overrides)
    policy = Policy.from_config(cfg["tasks"])
    if args.command == "status":
        return show_status(cfg["tasks"]["manifest"], cfg.get("project"), policy, poll=not args.no_poll,
                           show_all=args.all, backend=backend)

    if args.dry_run:
        with engine.offline(cfg.get("project")):
            items = plan(args.command, cfg, dry_run=True)
            doc = write_dry_run(items, Path(cfg["dry_run"]["dir"]))
        kind = items[0].kind if items else args.command
        print(f"dry run: {len(doc['tasks'])} {args.command} task(s) written to {cfg['dry_run']['dir']}/{kind}/ "
              f"(*.task.json: request, *.graph.json: readable graph) and plan-{kind}.json; nothing started")
        return 0

    manifest = Manifest(cfg["tasks"]["manifest"])
    manifest.check_writable()
    if backend is None:
        engine.init_real(cfg.get("project"))
        backend = EarthEngineBackend()
    items = plan(args.command, cfg, dry_run=False)
    manager = TaskManager(manifest, backend, policy)
    print(manager.run(items, args.follow, float(cfg["tasks"].get("poll_s", 60)),
                      on_complete_command(cfg["follow"].get("on_complete")), sleep=sleep))
    return 0


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
