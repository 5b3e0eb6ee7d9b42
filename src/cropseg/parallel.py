"""One way to run work in processes: ``parallel_map``.

``workers`` means the same everywhere (``prepare convert/describe/plots/split/pack``,
``cropseg demo``, the patch index):

- ``0``: one process per CPU this process may use (``os.sched_getaffinity``);
- ``1``: no extra process, the work runs here (the easiest to debug and profile);
- ``N``: N processes;

never more processes than items. Results come back in the order of the items, as they
finish, so a progress bar can follow them.

Workers end with their parent. A worker that outlives its parent (``kill -9`` of the
command, a crashed session) sits idle forever holding memory and file handles; here
each worker asks Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``),
and a watchdog thread ends it when its parent changes (other systems, or a parent that
died before the request). Workers ignore Ctrl-C: the parent handles it once (one line,
exit 130, see ``cropseg.errors``) and ends them, instead of every worker printing a
traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / cgroups affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, items: int | None = None) -> int:
    """Processes to use: 0 or None → one per CPU; never more than ``items``; at least 1."""
    if workers is not None and int(workers) < 0:
        from cropseg.errors import UserError

        raise UserError(f"workers={workers}: give 0 (one per CPU), 1 (no extra process) or a number of processes")
    n = available_cpus() if not workers else int(workers)
    if items is not None:
        n = min(n, max(1, items))
    return max(1, n)


def _end_with_parent(parent: int) -> None:
    """Worker initializer: die with ``parent``; leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request above: nobody would signal us
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="cropseg-parent-watch", daemon=True).start()


def _init_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    _end_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def parallel_map(func: Callable[[T], R], items: Iterable[T], workers: int | None = 0,
                 chunksize: int | None = None, initializer: Callable | None = None,
                 initargs: tuple = ()) -> Iterator[R]:
    """``func(item)`` for each item, in item order, in ``workers`` processes (see the module docstring).

    ``func`` and the items must be picklable (a module-level function). A sequence of items
    is mapped in chunks (``chunksize``, default about 8 chunks per worker) to save round
    trips. Any other iterable is read lazily, a few items per worker ahead of the results:
    a generator can decide from the results so far whether to produce more (e.g. stop once
    enough chips are cut), and the items in flight still finish and are returned.
    ``initializer(*initargs)`` runs once in each worker (or here, with one worker). The first
    exception raised by ``func`` ends the map and is raised here; leaving early (an
    exception, Ctrl-C, ``break``) ends the workers, so nothing keeps running.
    """
    lazy = not isinstance(items, Sequence)
    n = resolve_workers(workers, None if lazy else len(items))
    if n <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield func(item)
        return
    pool = ProcessPoolExecutor(max_workers=n, initializer=_init_worker,
                               initargs=(os.getpid(), initializer, tuple(initargs)))
    finished = False
    try:
        if lazy:
            yield from _bounded(pool, func, iter(items), 2 * n)
        else:
            if chunksize is None:
                chunksize = max(1, len(items) // (n * 8))
            yield from pool.map(func, items, chunksize=chunksize)
        finished = True
    finally:
        if not finished:
            # Work in flight is abandoned (outputs are atomic): end the workers now rather
            # than wait for tasks nobody will read.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _bounded(pool: ProcessPoolExecutor, func: Callable[[T], R], items: Iterator[T], ahead: int) -> Iterator[R]:
    """Results in order with at most ``ahead`` items submitted and not yet returned."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(func, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
