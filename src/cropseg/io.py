"""Atomic output files: a crash never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


def temporary_sibling(path: str | Path) -> Path:
    """A hidden temporary name in the same folder (same filesystem, so rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: temporaries and claims named after a live process are not stale."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _make_writable_dir(folder: Path, key: str, given: Path) -> None:
    from cropseg.errors import UserError

    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is a file, not a folder" if parent == given else f"cannot be created: {parent} is a file"
                raise UserError(f"{key}={given}: {where}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(folder / "write-probe")
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"{key}={given}: cannot be created or written ({err.strerror or type(err).__name__})") from None


def ensure_output_dir(path: str | Path, key: str = "out") -> Path:
    """Create the output folder ``path`` now, before any work, and check that files can be written in it.

    A path that is a file, lies under a file, or cannot be created or written ends the
    command with one line naming ``key`` (a UserError) instead of a traceback after the work.
    """
    path = Path(path).expanduser()
    _make_writable_dir(path, key, path)
    return path


def ensure_output_file(path: str | Path, key: str = "out") -> Path:
    """Check, before any work, that the output file ``path`` can be written (its folder is created)."""
    from cropseg.errors import UserError

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{key}={path}: is a folder, not a file")
    _make_writable_dir(path.parent, key, path)
    return path
