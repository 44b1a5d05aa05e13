"""Atomic file writes, once: every file drumdiff writes goes through `atomic_path`.

A writer fills a temporary file in the target's folder; only when it finishes is the temporary file renamed
onto the target, so readers (and a later run) never see half a file. A failure removes the temporary file and
leaves any previous target untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path


@cache
def _new_file_mode() -> int:
    """The mode `open()` would give a new file under the current umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(folder: str | os.PathLike) -> None:
    """Create and delete a probe file in `folder`; raises `OSError` when that is not possible."""
    fd, probe = tempfile.mkstemp(prefix=".drumdiff-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on any failure delete it.

    The temporary file exists (empty) when yielded. `suffix` lets writers that pick a format from the file
    name (matplotlib) see the right one. `fsync=True` flushes the data to disk before the rename. The final
    file gets the permissions an ordinary new file would get. Creating the temporary file raises `OSError`
    when the folder is missing or not writable.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode())
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename
