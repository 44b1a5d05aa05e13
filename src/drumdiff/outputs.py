"""Writing generated clips: fresh file names, a sidecar JSON record per clip, and `generation.jsonl`.

Nothing is ever overwritten: a name that exists gets `-1`, `-2`, ... appended. Every file is written to a
temporary name and renamed into place; `generation.jsonl` is rewritten atomically with the new records appended.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path, check_writable

FORMAT_SUFFIX = {"wav24": ".wav", "wav16": ".wav", "float32": ".wav", "flac": ".flac"}
LOG_NAME = "generation.jsonl"


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


def fresh_path(folder: Path, stem: str, suffix: str, *, taken: set[Path]) -> Path:
    """`folder/stem+suffix`, or `stem-1`, `stem-2`, ... when that audio file or its sidecar exists."""
    candidate, k = stem, 0
    while True:
        path = folder / f"{candidate}{suffix}"
        if path not in taken and not path.exists() and not path.with_suffix(".json").exists():
            taken.add(path)
            return path
        k += 1
        candidate = f"{stem}-{k}"


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_clips(
    folder: Path,
    clips: Tensor,
    *,
    stems: Sequence[str],
    records: Sequence[dict[str, Any]],
    sample_rate: int,
    format: str,
) -> list[Path]:
    """Write clips [N, C, T] as audio + sidecar JSON, then append their records to `generation.jsonl`.

    Each record gets its `file` (name within `folder`). Returns the audio paths.
    """
    from drumdiff import audio as audio_io

    if format not in FORMAT_SUFFIX:
        raise DrumdiffError(f"unknown format {format!r}; choose one of {', '.join(FORMAT_SUFFIX)}")
    taken: set[Path] = set()
    paths = []
    full_records = []
    for clip, stem, record in zip(clips, stems, records, strict=True):
        path = fresh_path(folder, stem, FORMAT_SUFFIX[format], taken=taken)
        audio_io.write(path, clip, sample_rate, format=format)
        record = {"file": path.name, **record}
        _atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
        paths.append(path)
        full_records.append(record)
    log = folder / LOG_NAME
    old = log.read_text(encoding="utf-8") if log.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    _atomic_write_text(log, old + "".join(json.dumps(r) + "\n" for r in full_records))
    return paths
