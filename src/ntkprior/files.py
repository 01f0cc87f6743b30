"""User paths: validation at the edge, and writes that never lose or mix a user's data.

Three rules, one place:

- A path the user names is checked before any work starts: an input must be a readable file,
  an output file must not be a directory and must lie in an existing directory
  (:func:`check_input_file`, :func:`check_output_file`, :func:`check_output_directory`).
- A result is never visible half-written: :func:`atomic_file` and :func:`atomic_directory`
  write to a temporary name in the same directory and rename it into place when complete
  (``os.replace`` is atomic within one file system), so an interrupted run leaves the
  previous result or none, never a truncated file or a directory mixing two runs.
- A directory is replaced only when it holds ntkprior's own output, and never when it is the
  working directory, one of its parents or the home directory (:func:`check_replaceable`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

#: Prefix of temporary names; a crash leaves at most such hidden siblings behind, never a partial result.
TEMP_PREFIX = ".ntkprior-tmp-"


def _plain(path) -> Path:
    return Path(os.fspath(path)).expanduser()


def check_input_file(path, name: str) -> Path:
    """``path`` as a ``Path``: an existing, readable regular file (not a directory)."""
    p = _plain(path)
    if not p.exists():
        raise ValueError(f"{name}: file {str(p)!r} does not exist")
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; pass a file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{name}: {str(p)!r} is not readable (permission denied); pass a readable file")
    return p


def _check_parent(p: Path, name: str) -> None:
    parent = p.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{name}: the directory {str(parent)!r} does not exist; create it first or "
                         "pass a path in an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot write in {str(parent)!r} (permission denied); pass a writable path")


def check_output_file(path, name: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """``path`` as a ``Path`` that a file can be written to: not a directory, in an existing,
    writable directory, and ending in one of ``suffixes`` (lower case, with the dot) when given."""
    p = _plain(path)
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; pass a file name such as "
                         f"{str(p / ('out' + (suffixes[0] if suffixes else '.npz')))!r}")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ValueError(f"{name}: cannot write {p.suffix or 'a file without suffix'!r} files here; "
                         f"pass a name ending in {' or '.join(suffixes)}")
    _check_parent(p, name)
    return p


def check_output_directory(path, name: str, is_ours: Callable[[Path], bool], what: str) -> Path:
    """``path`` as a ``Path`` where the directory ``what`` can be written: new, empty, or a previous
    output of the same kind (``is_ours``) that may be replaced (see :func:`check_replaceable`)."""
    p = _plain(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a file, not a directory; pass a new path for {what}")
    _check_parent(p, name)
    if p.is_dir() and any(p.iterdir()):
        if not is_ours(p):
            raise ValueError(f"{name}: {str(p)!r} holds other data, not {what}; pass a new path")
        check_replaceable(p, name)
    return p


def check_replaceable(path, name: str) -> None:
    """Refuse to replace the working directory, a parent of it, the home directory or the root."""
    p = Path(os.path.realpath(_plain(path)))
    cwd = Path(os.path.realpath(os.getcwd()))
    home = Path(os.path.realpath(Path.home()))
    if p == cwd or p in cwd.parents:
        raise ValueError(f"{name}: {str(p)!r} is the working directory or one of its parents; "
                         "it is never replaced: pass a new path")
    if p == home or p == Path(p.anchor):
        raise ValueError(f"{name}: {str(p)!r} is the home directory or the root; it is never replaced: "
                         "pass a new path")


def _temporary_sibling(p: Path) -> Path:
    """A fresh hidden name next to ``p`` that keeps its suffix (numpy and matplotlib read it)."""
    return p.absolute().parent / f"{TEMP_PREFIX}{secrets.token_hex(4)}-{p.name}"


@contextlib.contextmanager
def atomic_file(path, name: str = "--out") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    On an exception (or Ctrl-C) the temporary file is removed and ``path`` keeps what it held.
    A directory at ``path`` is refused, never replaced.
    """
    p = _plain(path)
    if p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is a directory; pass a file name")
    tmp = _temporary_sibling(p)
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path, text: str, name: str = "--out") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, name) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(path, name: str = "--out") -> Iterator[Path]:
    """Yield a new temporary directory next to ``path``; when the block succeeds, it replaces ``path``.

    The caller checks first that ``path`` may be replaced (:func:`check_output_directory`). The
    old directory is renamed aside, the new one renamed into place, then the old one removed: at
    every moment ``path`` holds one complete run (or, between the two renames, nothing; the old
    run is then in a hidden sibling). On failure the temporary directory is removed.
    """
    p = _plain(path).absolute()
    tmp = _temporary_sibling(p)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if p.exists():
            check_replaceable(p, name)
            old = _temporary_sibling(p)
            os.rename(p, old)
        os.rename(tmp, p)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_tree(path, name: str) -> None:
    """Remove a directory of ntkprior's own output (the caller has checked that it is one),
    except the working directory, its parents, the home directory and the root."""
    check_replaceable(path, name)
    p = _plain(path)
    old = _temporary_sibling(p)
    os.rename(p, old)           # gone from its name at once; removed below
    shutil.rmtree(old, ignore_errors=True)
