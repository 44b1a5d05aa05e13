"""File helpers, once: atomic writes, JSON files with a format check, file digests, per-item seeds.

Every file drumdiff writes goes through `atomic_path`: a writer fills a temporary file in the target's folder;
only when it finishes is the temporary file renamed onto the target, so readers (and a later run) never see
half a file. A failure removes the temporary file and leaves any previous target untouched.

Every drumdiff file format (dataset manifest, training checkpoint, model file, classifier file) carries a
format name and a version, checked by `check_format` with one wording.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from drumdiff.errors import DrumdiffError


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
        if fsync:
            _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable, where the filesystem can fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, fsync: bool = False) -> Path:
    """Write `data` as UTF-8 JSON (values JSON cannot hold become strings), atomically; `OSError` on failure.

    Text that is not valid UTF-8 (a file name with undecodable bytes, held as surrogates) makes the whole
    file ASCII with escapes, which reads back to the same strings. `fsync=True` flushes before the rename.
    """
    path = Path(path)
    text = json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        encoded = (json.dumps(data, indent=indent, default=str) + "\n").encode("ascii")
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(encoded)
    return path


def check_format(
    data: Any,
    *,
    source: str | os.PathLike,
    kind: str,
    format: str,
    version: int | str,
    format_key: str = "format",
    version_key: str = "version",
    error: type[DrumdiffError] = DrumdiffError,
) -> None:
    """Raise `error` unless `data` is a mapping with `format_key == format` and `version_key == version`.

    `kind` names the file type in the message ("drumdiff dataset manifest"); `source` names the file.
    """
    if not isinstance(data, Mapping) or data.get(format_key) != format:
        found = data.get(format_key) if isinstance(data, Mapping) else type(data).__name__
        raise error(f"{source}: not a {kind} (format {found!r}, expected {format!r})")
    if data.get(version_key) != version:
        raise error(
            f"{source}: {kind} format version {data.get(version_key)} is not supported by this drumdiff "
            f"(it reads version {version}); a newer drumdiff may read it"
        )


def read_json(
    path: str | os.PathLike,
    *,
    kind: str,
    format: str,
    version: int,
    error: type[DrumdiffError] = DrumdiffError,
) -> dict[str, Any]:
    """Read a JSON file of a drumdiff format (`"format"` and `"version"` keys) and check both."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as failure:
        raise error(f"cannot read {path}: {failure}") from failure
    check_format(data, source=path, kind=kind, format=format, version=version, error=error)
    return data


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks: SHA-256 identifies model files, SHA-1 the files of a dataset."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_seed(*parts: object) -> int:
    """A 63-bit generator seed from any parts, the same on every machine and run.

    The one rule for per-item randomness (data order, noise, augmentation): parts are joined with ':' so
    distinct parts never collide by arithmetic, e.g. `stable_seed("augment", seed, position)`.
    """
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
