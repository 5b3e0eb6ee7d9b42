"""One way to name input files on the command line: files, globs, folders and list files.

Every command that takes many inputs (``predict input=``, ``mosaic``, ``evaluate``,
``publish maps=``, ``prepare convert in=``) expands them here, so each accepts the same
forms and a miss says what was tried:

- a glob (``maps/2015_*.tif``, ``**`` recurses): the files it matches;
- a folder: its files matching the command's patterns (``*_cropland.tif`` for maps,
  ``*.tfrecord.gz`` ... for TFRecords); hidden files are skipped;
- a list file (``.txt``, ``.lst``, ``.list``, ``.csv``): one path a line, relative to the
  list's folder, ``#`` starts a comment;
- a file: itself.

The result is sorted within each input, in the order the inputs were given, each file once.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Sequence, Union

from cropseg.errors import UserError

LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")
GLOB_CHARS = "*?["

#: Folder patterns: alternatives tried in order, the first that finds files wins; an
#: alternative is one glob or a tuple of globs taken together.
Patterns = Sequence[Union[str, Sequence[str]]]


def is_glob(text: str) -> bool:
    return any(ch in text for ch in GLOB_CHARS)


def _alternatives(patterns: Patterns) -> list[tuple[str, ...]]:
    return [(p,) if isinstance(p, str) else tuple(p) for p in patterns]


def describe_patterns(patterns: Patterns) -> str:
    """``*_cropland.tif, else *.tif or *.tiff``: what a folder is searched for, for messages."""
    return ", else ".join(" or ".join(alt) for alt in _alternatives(patterns))


def folder_files(folder: Path, patterns: Patterns) -> list[Path]:
    """Files of ``folder`` matching the first alternative of ``patterns`` that matches any (not hidden)."""
    for alt in _alternatives(patterns):
        found = sorted({p for pat in alt for p in folder.glob(pat) if p.is_file() and not p.name.startswith(".")})
        if found:
            return found
    return []


def read_list_file(path: Path, key: str) -> list[Path]:
    """Paths named by a list file, one a line (relative to its folder); ``#`` comments."""
    if not path.is_file():
        raise UserError(f"{key}={path}: list file not found")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise UserError(f"{key}={path}: the list file names no file")
    return out


def expand_inputs(specs: str | Path | Sequence[str | Path] | None, patterns: Patterns = ("*",), *, key: str = "input",
                  what: str = "files", missing_ok: bool = False) -> list[Path]:
    """The files named by ``specs`` (see the module docstring); a name that finds nothing is a UserError
    saying which key, which name, and what was looked for.

    ``missing_ok``: a plain path that does not exist is kept (a command that reports each
    input's failure on its own, as predict does, rather than stopping the run).
    """
    if specs is None:
        specs = []
    elif isinstance(specs, (str, Path)):
        specs = [specs]
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text).expanduser()
        if is_glob(text):
            hits = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not hits:
                raise UserError(f"{key}={text}: the pattern matches no {what}")
            found += hits
        elif path.is_dir():
            hits = folder_files(path, patterns)
            if not hits:
                raise UserError(f"{key}={text}: the folder holds no {what} (looked for {describe_patterns(patterns)})")
            found += hits
        elif path.suffix.lower() in LIST_SUFFIXES and not _looks_like_input(path, patterns):
            found += read_list_file(path, key)
        elif path.is_file() or missing_ok:
            found.append(path)
        else:
            raise UserError(f"{key}={text}: no such file or folder")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    if not unique:
        raise UserError(f"{key}: no {what} given")
    return list(unique.values())


def _looks_like_input(path: Path, patterns: Patterns) -> bool:
    """A ``.csv`` that the command itself reads (its patterns match it) is an input, not a list."""
    return any(path.match(p) for alt in _alternatives(patterns) for p in alt if p != "*")
