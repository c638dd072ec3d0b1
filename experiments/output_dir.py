"""Checks that an output path can be written, made before any work starts.

Every ``moesim`` command that writes calls :func:`check_output_dir` or :func:`check_output_file`
on its output path first, so an unusable path (a regular file where a directory is wanted, a
parent that is a file, a read-only file system, a directory it may not write in) stops the
command with one line naming the flag, exit status 2, before anything is computed or written.

Writability is probed by creating and removing a temporary file in the nearest directory that
exists: permission bits alone say nothing for root, and a read-only mount or a file standing
where a directory should be fails only when something is really written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from experiments.arguments import UsageError


def _nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its closest existing ancestor."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")  # only for a relative path whose first part is missing


def _probe(folder: Path, flag: str, path: Path) -> None:
    """Create and remove a temporary file in ``folder``; a failure is a :class:`UsageError`."""
    try:
        fd, name = tempfile.mkstemp(prefix=".moesim-probe-", dir=folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(
            f"{flag} {path}: cannot write in {folder} ({reason}; give a writable path)"
        ) from None
    os.close(fd)
    os.unlink(name)


def _writable_ancestor(path: Path, flag: str, shown: Path) -> None:
    """Check that ``path`` can be created: its nearest existing ancestor is a writable directory."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{flag} {shown}: {base} is a file, not a directory (give a path in a directory)")
    _probe(base, flag, shown)


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """Raise :class:`UsageError` unless ``path`` is, or can be created as, a writable directory.

    Nothing is left behind: missing directories are not created here.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a directory (give a directory)")
    _writable_ancestor(path, flag, path)


def check_output_file(path: Path, flag: str = "--out") -> None:
    """Raise :class:`UsageError` unless ``path`` can be written as a file (replacing one that exists).

    Missing parent directories are fine when they can be created; they are not created here.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory (give a file name)")
    _writable_ancestor(path.parent, flag, path)
