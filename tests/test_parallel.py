"""One parallel_map: what workers=0 means, order, errors, and workers that end with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cropseg.errors import UserError
from cropseg.parallel import available_cpus, parallel_map, resolve_workers


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_workers_mean_the_same_everywhere():
    assert resolve_workers(0) == available_cpus() == resolve_workers(None)
    assert resolve_workers(1) == 1 and resolve_workers(8, items=3) == 3 and resolve_workers(0, items=0) == 1
    with pytest.raises(UserError, match="workers=-1"):
        resolve_workers(-1)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_item_order_and_errors_surface(workers):
    assert list(parallel_map(_square, range(20), workers)) == [x * x for x in range(20)]
    with pytest.raises(ValueError, match="three"):
        list(parallel_map(_fail_on_three, range(6), workers, chunksize=1))


SCRIPT = """
import os, sys, time
from cropseg.parallel import parallel_map

def slow(i):
    print(os.getpid(), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    for _ in parallel_map(slow, range(2), workers=2, chunksize=1):
        pass
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to watch processes")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """kill -9 of a command left its pool workers alive (re-parented, idle) before parallel_map."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                       os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(proc.stdout.readline()) for _ in range(2)]  # both workers are busy
        assert all(_running(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60  # a liveness wait, not a timing assertion
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [w for w in workers if _running(w)]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        proc.kill()
        for w in locals().get("workers", []):
            if _running(w):
                os.kill(w, signal.SIGKILL)
