"""Writing generated clips: fresh file names, a sidecar JSON record per clip, and `generation.jsonl`.

Nothing is ever overwritten, also when several processes write into one folder at once: names are chosen,
files renamed into place and `generation.jsonl` appended under the folder's lock (`OUT/.drumdiff.lock`), and
a name that exists gets `-1`, `-2`, ... appended. A batch of clips is written all or nothing: a failure (a
full disk, Ctrl-C) removes what that batch had put in place, so every clip on disk has its sidecar and its
line in `generation.jsonl`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from drumdiff.errors import AudioError, DrumdiffError
from drumdiff.files import atomic_path, check_writable
from drumdiff.tags import provenance_tags

FORMAT_SUFFIX = {"wav24": ".wav", "wav16": ".wav", "float32": ".wav", "flac": ".flac"}
LOG_NAME = "generation.jsonl"
LOCK_NAME = ".drumdiff.lock"


def prepare_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove it is writable before any work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder)
    except OSError as error:
        raise DrumdiffError(f"output folder {folder} is not writable ({error.strerror or error})") from error
    return folder


def safe_label(text: str) -> str:
    """A file-name-friendly version of a class name or input stem."""
    label = re.sub(r"[^\w.-]+", "-", text, flags=re.UNICODE).strip("-.")
    return label or "clip"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of `folder` (the file `.drumdiff.lock` in it), waiting for other processes."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


if os.name == "nt":
    import msvcrt

    def _lock(fd: int) -> None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # gives up after 10 s: wait on
                return
            except OSError:
                continue

else:
    import fcntl

    def _lock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:  # a filesystem without locks (some network mounts): go on unlocked
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise


def fresh_path(folder: Path, stem: str, suffix: str, *, taken: set[Path]) -> Path:
    """`folder/stem+suffix`, or `stem-1`, `stem-2`, ... when that audio file or its sidecar exists.

    Only unique among writers that hold the folder's lock (`folder_lock`).
    """
    candidate, k = stem, 0
    while True:
        path = folder / f"{candidate}{suffix}"
        if path not in taken and not path.exists() and not path.with_suffix(".json").exists():
            taken.add(path)
            return path
        k += 1
        candidate = f"{stem}-{k}"


def _write_log(handle: Any, data: bytes) -> None:
    """Append to the open `generation.jsonl`; tests replace this to simulate a full disk."""
    handle.write(data)
    handle.flush()


def _append_log(log: Path, lines: str) -> None:
    """Append whole lines to `log`; on any failure cut the file back to where it was."""
    with open(log, "ab") as handle:
        size = handle.seek(0, os.SEEK_END)
        data = lines.encode("utf-8")
        if size:  # a process killed mid-line left no newline: start on a fresh line
            with open(log, "rb") as reader:
                reader.seek(size - 1)
                if reader.read(1) != b"\n":
                    data = b"\n" + data
        try:
            _write_log(handle, data)
        except BaseException:
            with contextlib.suppress(OSError):
                handle.truncate(size)
            raise


def _failure(path: Path, error: OSError) -> str:
    reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else error.strerror or error
    return f"cannot write {path}: {reason}"


def write_clips(
    folder: Path,
    clips: Tensor,
    *,
    stems: Sequence[str],
    records: Sequence[dict[str, Any]],
    sample_rate: int,
    format: str,
) -> list[Path]:
    """Write clips [N, C, T] as audio + sidecar JSON and append their records to `generation.jsonl`.

    All or nothing: on any failure nothing of this call is left in `folder` (and a DrumdiffError names the
    file and the cause). Each record gets its `file` (name within `folder`) and is embedded in its audio file
    (`drumdiff.tags.provenance_tags`, titled with its stem). Returns the audio paths.
    """
    from drumdiff import audio as audio_io

    if format not in FORMAT_SUFFIX:
        raise DrumdiffError(f"unknown format {format!r}; choose one of {', '.join(FORMAT_SUFFIX)}")
    suffix = FORMAT_SUFFIX[format]
    staged: list[Path] = []  # audio under hidden temporary names, written before taking the lock
    placed: list[Path] = []  # files renamed into place by this call
    log = folder / LOG_NAME
    try:
        for clip, stem, record in zip(clips, stems, records, strict=True):
            fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".staged{suffix}", dir=folder)
            os.close(fd)
            staged.append(Path(name))
            tags = provenance_tags(record, stem=stem)  # the record inside the file (see drumdiff.tags)
            try:
                audio_io.write(staged[-1], clip, sample_rate, format=format, tags=tags)
            except AudioError as error:  # name the file being made, not its hidden temporary name
                raise AudioError(str(error).replace(name, str(folder / f"{stem}{suffix}"))) from error
        with folder_lock(folder):
            taken: set[Path] = set()
            lines, paths = [], []
            for tmp, stem, record in zip(staged, stems, records, strict=True):
                path = fresh_path(folder, stem, suffix, taken=taken)
                record = {"file": path.name, **record}
                sidecar = path.with_suffix(".json")
                with atomic_path(sidecar) as side_tmp:
                    side_tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
                placed.append(sidecar)
                os.replace(tmp, path)
                placed.append(path)
                paths.append(path)
                lines.append(json.dumps(record) + "\n")
            try:
                _append_log(log, "".join(lines))
            except OSError as error:
                raise DrumdiffError(_failure(log, error)) from error
        placed = []
        return paths
    except OSError as error:
        raise DrumdiffError(_failure(Path(error.filename or folder), error)) from error
    finally:
        for path in [*placed, *staged]:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
