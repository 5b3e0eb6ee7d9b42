"""Task manifest and manager: rerun skips, in-flight limit, backoff, status, follow=true."""

from __future__ import annotations

import json

import pytest

from cropseg.gee.cli import run
from cropseg.gee.tasks import Manifest, Policy, TaskManager


class FakeBackend:
    """Earth Engine's task service, in memory: tasks start READY, tests set their states."""

    def __init__(self):
        self.started: list[str] = []
        self.state: dict[str, str] = {}

    def start(self, item) -> str:
        tid = f"T{len(self.started)}"
        self.started.append(item.key)
        self.state[tid] = "READY"
        return tid

    def states(self, ids):
        return {i: {"state": self.state.get(i, "UNKNOWN"), "error_message": "boom" if self.state.get(i) == "FAILED" else None}
                for i in ids}

    def finish_all(self, state="COMPLETED"):
        for tid, st in self.state.items():
            if st in {"READY", "RUNNING"}:
                self.state[tid] = state


class Item:
    def __init__(self, grid, year=2015, kind="composite"):
        self.kind, self.year, self.grid, self.name = kind, year, grid, f"{year}_{grid}"
        self.params = {"output": f"drive://x/{self.name}.tif"}

    @property
    def key(self):
        return f"{self.kind}:{self.year}:{self.grid}"


def test_limit_skip_and_backoff(tmp_path):
    clock = [1000.0]
    backend = FakeBackend()
    items = [Item(g) for g in range(4)]
    man = Manifest(tmp_path / "m.json")
    mgr = TaskManager(man, backend, Policy(max_in_flight=2, max_attempts=2, backoff_s=60), clock=lambda: clock[0])
    mgr.register(items)
    assert mgr.submit(items) == {"submitted": 2, "waiting": 2}
    # a rerun while they run: nothing new starts
    man2 = Manifest(tmp_path / "m.json")
    mgr2 = TaskManager(man2, backend, mgr.policy, clock=lambda: clock[0])
    mgr2.register(items)
    mgr2.refresh()
    assert mgr2.submit(items) == {"skipped_in_flight": 2, "waiting": 2}
    # first completes, second fails: one slot opens... two slots, failed one backs off
    backend.state["T0"], backend.state["T1"] = "COMPLETED", "FAILED"
    mgr2.refresh()
    assert mgr2.submit(items) == {"skipped_completed": 1, "backing_off": 1, "submitted": 2}
    assert backend.started == ["composite:2015:0", "composite:2015:1", "composite:2015:2", "composite:2015:3"]
    saved = json.loads((tmp_path / "m.json").read_text())["tasks"]
    assert saved["composite:2015:1"]["state"] == "FAILED" and saved["composite:2015:1"]["error"] == "boom"
    assert saved["composite:2015:0"]["task_id"] == "T0" and saved["composite:2015:0"]["params"]["output"]
    # after the backoff, the failed task is resubmitted once slots free up; then it gives up
    backend.finish_all()
    clock[0] += 61
    mgr2.refresh()
    assert mgr2.submit(items) == {"skipped_completed": 3, "resubmitted": 1}
    backend.finish_all("FAILED")
    mgr2.refresh()
    clock[0] += 10_000
    assert mgr2.submit(items) == {"skipped_completed": 3, "gave_up": 1}
    assert man2.tasks["composite:2015:1"]["attempts"] == 2


def test_follow_hands_off_completed(tmp_path):
    backend = FakeBackend()
    items = [Item(g) for g in range(3)]
    mgr = TaskManager(Manifest(tmp_path / "m.json"), backend, Policy(max_in_flight=2), log=lambda s: None)
    mgr.register(items)
    handed = []
    mgr.follow(items, poll_s=0, on_complete=lambda e: handed.append(e["name"]), sleep=lambda s: backend.finish_all())
    assert sorted(handed) == ["2015_0", "2015_1", "2015_2"]
    assert all(e["state"] == "COMPLETED" and e["handed_off"] for e in mgr.manifest.tasks.values())


def test_cli_real_run_with_backend_then_status(tmp_path, capsys):
    backend = FakeBackend()
    m = tmp_path / "m.json"
    common = [f"tasks.manifest={m}", "composites.grid.region=[0,0,10,2.5]", "tasks.max_in_flight=3"]
    assert run(["composites", *common], backend=backend) == 0
    assert len(backend.started) == 3
    backend.finish_all()
    assert run(["composites", *common], backend=backend) == 0
    assert len(backend.started) == 4  # three skipped as completed, the fourth started
    out = capsys.readouterr().out
    assert "skipped completed 3" in out and "submitted 1" in out
    assert run(["status", f"tasks.manifest={m}", "all=true"], backend=backend) == 0
    out = capsys.readouterr().out
    assert "4 tasks: completed 3, ready 1" in out and "composite:2015:" in out
    data = json.loads(m.read_text())
    assert {e["kind"] for e in data["tasks"].values()} == {"composite"}
    assert all(e["params"]["destination"]["type"] == "drive" for e in data["tasks"].values())


def test_corrupt_manifest_is_a_user_error(tmp_path):
    from cropseg.errors import UserError

    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        Manifest(tmp_path / "m.json")


@pytest.mark.parametrize("template", [
    "{python} -c 'import sys; open(\"got.txt\", \"w\").write(sys.argv[1])' {name}",
    ["{python}", "-c", "import sys; open('got.txt', 'w').write(sys.argv[1])", "{name}"],
])
def test_on_complete_fills_hostile_names_into_one_argument_never_a_shell(tmp_path, monkeypatch, template):
    """A task name read back from the manifest holding `;` or `$(...)` is text, not a command."""
    import sys

    from cropseg.gee.cli import on_complete_command

    monkeypatch.chdir(tmp_path)
    fill = lambda t: t.replace("{python}", sys.executable)  # noqa: E731
    hook = on_complete_command(fill(template) if isinstance(template, str) else [fill(t) for t in template])
    name = "2015_7; touch pwned1; $(touch pwned2) `touch pwned3` && touch pwned4"
    hook({"key": "composite:2015:7", "name": name, "params": {"output": "drive://x/a.tif"}})
    assert (tmp_path / "got.txt").read_text() == name
    assert not list(tmp_path.glob("pwned*"))
