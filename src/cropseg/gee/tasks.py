"""Task manifest and manager, shared by the GEE exports and ``cropseg publish``.

The manifest (JSON, written atomically) records every task: key, kind, grid, year, name,
Earth Engine task id, state, attempts, timestamps, error and parameters. A run:

1. polls the tasks in flight (READY/RUNNING) and records their new state;
2. skips tasks COMPLETED or still in flight;
3. resubmits FAILED/CANCELLED/UNKNOWN ones after an exponential backoff, up to
   ``max_attempts`` submissions in all;
4. starts new tasks while fewer than ``max_in_flight`` are in flight; the rest stay
   PENDING for the next run or the ``follow=true`` loop.

Earth Engine is reached only through a :class:`Backend`; tests use a fake one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from cropseg.errors import UserError
from cropseg.io import temporary_sibling, write_text_atomic

IN_FLIGHT = {"READY", "RUNNING", "SUBMITTED", "CANCEL_REQUESTED", "CANCELLING"}
DONE = {"COMPLETED", "SUCCEEDED"}
RETRY = {"FAILED", "CANCELLED", "UNKNOWN"}
MANIFEST_VERSION = 1


def _now() -> float:
    return time.time()


def _iso(t: float | None) -> str | None:
    return None if t is None else _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


class Backend(Protocol):
    def start(self, item: Any) -> str:
        """Start the task of a planned item; return its task id."""

    def states(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{task_id: {state, error_message?}}`` for each id."""


class EarthEngineBackend:
    """Starts ``ee.batch.Task`` objects and polls them with ``ee.data.getTaskStatus``."""

    def start(self, item: Any) -> str:
        task = item.build()
        task.start()
        return str(task.id)

    def states(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        import ee

        out = {}
        for i in range(0, len(task_ids), 50):
            for st in ee.data.getTaskStatus(task_ids[i:i + 50]):
                out[st["id"]] = {"state": st.get("state", "UNKNOWN"), "error_message": st.get("error_message")}
        return out


@dataclass
class Policy:
    max_in_flight: int = 5
    max_attempts: int = 3
    backoff_s: float = 60.0
    backoff_max_s: float = 3600.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Policy":
        p = cls(int(cfg.get("max_in_flight", 5)), int(cfg.get("max_attempts", 3)), float(cfg.get("backoff_s", 60)),
                float(cfg.get("backoff_max_s", 3600)))
        if p.max_in_flight < 1:
            raise UserError(f"tasks.max_in_flight={p.max_in_flight} must be at least 1")
        if p.max_attempts < 1:
            raise UserError(f"tasks.max_attempts={p.max_attempts} must be at least 1")
        return p

    def delay(self, attempts: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempts - 1))


class Manifest:
    """The JSON record of every task, keyed by ``kind:year:grid`` (or any unique key)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tasks: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise UserError(f"{self.path}: task manifest is not readable JSON ({err})") from None
            self.tasks = dict(data.get("tasks", {}))

    def check_writable(self) -> None:
        """Fail now, with one line, if the manifest cannot be written (before starting anything)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise IsADirectoryError(str(self.path))
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise PermissionError(13, "permission denied")
            probe = temporary_sibling(self.path)
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise UserError(f"{self.path}: task manifest cannot be written ({err.strerror or err})") from None

    def save(self) -> None:
        data = {"version": MANIFEST_VERSION, "updated": _iso(_now()), "tasks": self.tasks}
        try:
            write_text_atomic(self.path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        except OSError as err:
            raise UserError(f"{self.path}: task manifest cannot be written ({err.strerror or err})") from None

    def add(self, key: str, **fields: Any) -> dict[str, Any]:
        entry = self.tasks.setdefault(key, {"key": key, "state": "PENDING", "task_id": None, "attempts": 0,
                                            "created": _iso(_now())})
        for k, v in fields.items():
            if k == "params" or k not in entry or entry[k] is None:
                entry[k] = v
        return entry

    def summary(self, keys: Iterable[str] | None = None) -> Counter:
        keys = self.tasks.keys() if keys is None else keys
        return Counter(self.tasks[k]["state"] for k in keys if k in self.tasks)


class TaskManager:
    def __init__(self, manifest: Manifest, backend: Backend, policy: Policy,
                 clock: Callable[[], float] = _now, log: Callable[[str], None] = print):
        self.manifest, self.backend, self.policy, self.clock, self.log = manifest, backend, policy, clock, log

    def register(self, items: Iterable[Any]) -> list[str]:
        """Add planned items (``key, kind, year, grid, name, params``) to the manifest."""
        keys = []
        for it in items:
            self.manifest.add(it.key, kind=it.kind, year=it.year, grid=it.grid, name=it.name, params=it.params)
            keys.append(it.key)
        return keys

    def refresh(self) -> None:
        """Poll every task in flight and record its state."""
        flying = {e["task_id"]: e for e in self.manifest.tasks.values() if e["state"] in IN_FLIGHT and e.get("task_id")}
        if not flying:
            return
        states = self.backend.states(list(flying))
        now = self.clock()
        for tid, entry in flying.items():
            st = states.get(tid)
            if st is None:
                continue
            state = str(st.get("state", "UNKNOWN"))
            if state != entry["state"]:
                entry["state"] = state
                entry["updated"] = _iso(now)
                if state in RETRY:
                    entry["error"] = st.get("error_message") or state
                    entry["next_try_at"] = now + self.policy.delay(entry.get("attempts", 1))
                if state in DONE:
                    entry["completed"] = _iso(now)
        self.manifest.save()

    def in_flight(self) -> int:
        return sum(1 for e in self.manifest.tasks.values() if e["state"] in IN_FLIGHT)

    def submit(self, items: Iterable[Any]) -> dict[str, int]:
        """Start what is due among ``items``; returns counts of what happened."""
        counts: Counter = Counter()
        now = self.clock()
        slots = self.policy.max_in_flight - self.in_flight()
        for it in items:
            entry = self.manifest.tasks[it.key]
            state = entry["state"]
            if state in DONE:
                counts["skipped_completed"] += 1
                continue
            if state in IN_FLIGHT:
                counts["skipped_in_flight"] += 1
                continue
            if state in RETRY or state == "GAVE_UP":
                if entry.get("attempts", 0) >= self.policy.max_attempts:
                    entry["state"] = "GAVE_UP"
                    counts["gave_up"] += 1
                    continue
                if (entry.get("next_try_at") or 0) > now:
                    counts["backing_off"] += 1
                    continue
            if slots <= 0:
                counts["waiting"] += 1
                continue
            try:
                task_id = self.backend.start(it)
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - a task that cannot start is recorded, others go on
                entry["attempts"] = entry.get("attempts", 0) + 1
                entry["state"] = "FAILED"
                entry["error"] = f"start failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                entry["next_try_at"] = now + self.policy.delay(entry["attempts"])
                counts["start_failed"] += 1
                self.manifest.save()
                continue
            entry.update(task_id=task_id, state="READY", attempts=entry.get("attempts", 0) + 1,
                         submitted=_iso(now), updated=_iso(now), error=None, next_try_at=None)
            counts["resubmitted" if state in RETRY else "submitted"] += 1
            slots -= 1
            self.manifest.save()
        self.manifest.save()
        return dict(counts)

    def pending(self, keys: Iterable[str]) -> list[str]:
        """Keys not finished for good (not COMPLETED, not GAVE_UP)."""
        return [k for k in keys if self.manifest.tasks[k]["state"] not in DONE | {"GAVE_UP"}]

    def follow(self, items: list[Any], poll_s: float, on_complete: Callable[[dict[str, Any]], None] | None = None,
               sleep: Callable[[float], None] = time.sleep, max_rounds: int | None = None) -> None:
        """Submit, wait, resubmit until every item is COMPLETED or given up."""
        keys = [it.key for it in items]
        handed = {k for k in keys if self.manifest.tasks[k].get("handed_off")}
        rounds = 0
        while True:
            self.refresh()
            for k in keys:
                e = self.manifest.tasks[k]
                if e["state"] in DONE and k not in handed:
                    if on_complete is not None:
                        on_complete(e)
                        e["handed_off"] = _iso(self.clock())
                        self.manifest.save()
                    handed.add(k)
            counts = self.submit(items)
            left = self.pending(keys)
            self.log(f"{format_summary(self.manifest.summary(keys))}" + (f"  ({_fmt_counts(counts)})" if counts else ""))
            rounds += 1
            if not left or (max_rounds is not None and rounds >= max_rounds):
                return
            sleep(poll_s)


    def run(self, items: list[Any], follow: bool, poll_s: float,
            on_complete: Callable[[dict[str, Any]], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> str:
        """Register ``items``, then submit once (or ``follow`` to the end); returns the summary line."""
        self.register(items)
        if follow:
            self.follow(items, poll_s, on_complete, sleep=sleep)
        else:
            self.refresh()
            print(_fmt_counts(self.submit(items)) or "nothing to do")
        return f"{self.manifest.path}: {format_summary(self.manifest.summary([it.key for it in items]))}"


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items()))


def format_summary(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    order = ["COMPLETED", "RUNNING", "READY", "PENDING", "FAILED", "CANCELLED", "UNKNOWN", "GAVE_UP"]
    parts = [f"{s.lower()} {counts[s]}" for s in order if counts.get(s)]
    parts += [f"{s.lower()} {n}" for s, n in counts.items() if s not in order and n]
    return f"{total} tasks: " + (", ".join(parts) if parts else "none")


def status_table(manifest: Manifest, keys: Iterable[str] | None = None) -> str:
    keys = list(manifest.tasks) if keys is None else list(keys)
    rows = [("key", "state", "attempts", "task id", "error")]
    for k in keys:
        e = manifest.tasks[k]
        rows.append((k, e["state"], str(e.get("attempts", 0)), str(e.get("task_id") or "-"),
                     (e.get("error") or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def show_status(path, project, policy, poll: bool = True, show_all: bool = False, backend=None) -> int:
    """Poll the tasks in flight (unless ``poll`` is false) and summarise the manifest by kind
    (``cropseg gee status`` and ``cropseg publish status``)."""
    manifest = Manifest(path)
    if not manifest.tasks:
        print(f"{manifest.path}: no tasks recorded yet")
        return 0
    if poll and any(e["state"] in IN_FLIGHT for e in manifest.tasks.values()):
        manifest.check_writable()
        if backend is None:
            from cropseg.gee import engine

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
