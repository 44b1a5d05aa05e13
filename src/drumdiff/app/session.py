"""What one app server keeps: a private temporary folder, the sounds of each browser session, upload checks.

Nothing here imports Gradio, so it is tested directly. `Workspace` owns one private folder (mode 0700) with a
fresh sub-folder per request, pruned by age and removed when the server stops. `Library` is one browser
session's sounds (generated, uploaded, kept), held in memory so that a pruned folder loses nothing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drumdiff.config import ModelConfig
from drumdiff.errors import AudioError, DrumdiffError

MAX_UPLOAD_MB = 20  # per file; the Gradio server refuses larger uploads before they reach us
MAX_UPLOAD_SECONDS = 10.0  # one-shots: a longer file is almost certainly the wrong file
REQUEST_MAX_AGE_S = 2 * 3600  # request folders older than this are removed when a new request starts
MAX_GENERATED = 64  # generated clips a session remembers (kept and uploaded ones are never dropped)


class Workspace:
    """A private temporary folder: a fresh sub-folder per request, pruned by age, removed by `cleanup`."""

    def __init__(self, parent: str | os.PathLike | None = None, *, max_age_s: float = REQUEST_MAX_AGE_S):
        self.root = Path(tempfile.mkdtemp(prefix="drumdiff-app-", dir=parent))  # mode 0700
        self.max_age_s = max_age_s
        self._count = itertools.count()
        self._lock = threading.Lock()
        (self.root / "requests").mkdir()

    @property
    def gradio_cache(self) -> Path:
        """Where Gradio keeps uploads and the copies of files it serves (GRADIO_TEMP_DIR)."""
        return self.root / "gradio"

    def new_request(self, operation: str) -> Path:
        """A new empty folder for one request's files; old request folders are removed first."""
        self.prune()
        with self._lock:
            name = f"{next(self._count):05d}-{operation}-{uuid.uuid4().hex[:8]}"
        folder = self.root / "requests" / name
        folder.mkdir(mode=0o700)
        return folder

    def prune(self, *, now: float | None = None) -> list[Path]:
        """Remove request folders older than `max_age_s`; returns what was removed."""
        now = time.time() if now is None else now
        removed = []
        for folder in sorted((self.root / "requests").glob("*")):
            try:
                too_old = now - folder.stat().st_mtime > self.max_age_s
            except FileNotFoundError:  # another request pruned it first
                continue
            if too_old:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def cleanup(self) -> None:
        """Remove the whole folder (the server is stopping)."""
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Clip:
    """One sound of a session: its audio in memory, the WAV written for it, and where it came from."""

    id: str
    audio: np.ndarray  # (C, T) float32
    sample_rate: int
    label: str  # file stem, e.g. kick_seed42_000
    origin: str  # "generated" or "uploaded"
    class_name: str | None = None  # the class it was asked for (generated clips)
    path: Path | None = None
    kept: bool = False
    record: dict[str, Any] = field(default_factory=dict)  # the sidecar record (seed, steps, ...)
    embedding: np.ndarray | None = None  # (D,) the classifier's embedding, filled in by the map
    heard_as: str | None = None  # the classifier's class for it

    def tensor(self) -> Tensor:
        """The audio as a float32 tensor [C, T]."""
        return torch.from_numpy(self.audio)

    def title(self) -> str:
        """How the page names it."""
        mark = " (kept)" if self.kept else ""
        return f"{self.label}{mark}"


def new_clip(audio: Tensor, *, sample_rate: int, label: str, origin: str, **fields: Any) -> Clip:
    """A Clip with a fresh id from audio [C, T]."""
    data = audio.detach().to("cpu", torch.float32).contiguous().numpy()
    return Clip(
        id=uuid.uuid4().hex[:12], audio=data, sample_rate=sample_rate, label=label, origin=origin, **fields
    )


class Library:
    """One browser session's sounds, oldest first: every clip generated (the last MAX_GENERATED), every upload.

    Held in a `gr.State`, so each browser tab has its own and nothing is shared between users.
    """

    def __init__(self) -> None:
        self.clips: list[Clip] = []

    def add(self, clips: Iterable[Clip]) -> None:
        """Append clips; the oldest generated clips that are not kept are dropped past MAX_GENERATED."""
        self.clips.extend(clips)
        generated = [c for c in self.clips if c.origin == "generated" and not c.kept]
        dropped = {c.id for c in generated[: max(0, len(generated) - MAX_GENERATED)]}
        self.clips = [c for c in self.clips if c.id not in dropped]

    def get(self, clip_id: str | None) -> Clip | None:
        return next((c for c in self.clips if c.id == clip_id), None)

    def keep(self, clip: Clip) -> None:
        """Mark a clip as kept (adding it first when this session does not hold it yet)."""
        if self.get(clip.id) is None:
            self.add([clip])
        stored = self.get(clip.id)
        stored.kept = clip.kept = True

    @property
    def kept(self) -> list[Clip]:
        return [c for c in self.clips if c.kept]

    def choices(self) -> list[tuple[str, str]]:
        """(title, id) of every clip, newest first, for "a sound from this session" menus."""
        return [(f"{c.title()} [{c.origin}]", c.id) for c in reversed(self.clips)]


def clip_file(clip: Clip, workspace: Workspace) -> Path:
    """A WAV of `clip`: the one written with it, or a fresh one when its request folder was pruned."""
    from drumdiff import audio as audio_io

    if clip.path is not None and clip.path.is_file():
        return clip.path
    folder = workspace.new_request("copy")
    clip.path = audio_io.write(folder / f"{clip.label}.wav", clip.tensor(), clip.sample_rate)
    return clip.path


def zip_clips(path: Path, clips: Sequence[Clip], workspace: Workspace) -> Path:
    """A zip of the clips' WAVs (named by their labels, made unique) written to `path`."""
    names: set[str] = set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for clip in clips:
            source = clip_file(clip, workspace)
            name, k = source.name, 0
            while name in names:
                k += 1
                name = f"{source.stem}-{k}{source.suffix}"
            names.add(name)
            archive.write(source, arcname=name)
    return path


def zip_folder(path: Path, folder: Path, files: Iterable[str]) -> Path:
    """A zip of `files` (paths relative to `folder`, with "/") under one top folder named like `folder`,
    written atomically to `path`: unpacked, it is the folder again, its relative paths intact."""
    from drumdiff.files import atomic_path

    # the zip is closed (complete) before atomic_path renames it into place
    with atomic_path(path, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in sorted(files):
            archive.write(folder / relative, arcname=f"{folder.name}/{relative}")
    return path


def read_upload(
    path: str | os.PathLike | None,
    config: ModelConfig,
    *,
    max_mb: float = MAX_UPLOAD_MB,
    max_seconds: float = MAX_UPLOAD_SECONDS,
) -> tuple[Tensor, list[str]]:
    """Check and read an uploaded or recorded file: the clip [C, T] in the model's format and what was done.

    Raises a DrumdiffError that names the file (by its name only, not the server's temporary path) for a
    missing upload, a file over `max_mb`, one that is not audio, or one longer than `max_seconds`.
    """
    from drumdiff import audio as audio_io
    from drumdiff.pipeline import conform_audio

    if path is None:
        raise DrumdiffError("no sound given: upload or record one first")
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DrumdiffError(f"{name}: the upload is gone ({error.strerror}); upload it again") from error
    if size > max_mb * 1e6:
        raise DrumdiffError(f"{name} is too large: {size / 1e6:.1f} MB (the limit is {max_mb:g} MB)")
    try:
        decoded = audio_io.decode(path, max_seconds=max_seconds)
    except AudioError as error:
        if getattr(error, "reason", None) == "not audio":
            raise DrumdiffError(
                f"{name} is not a sound drumdiff can read (use WAV, FLAC, OGG, AIFF or MP3)"
            ) from error
        # an empty or damaged file: the reason, with the file's name instead of the server's temporary path
        detail = str(error).removeprefix(f"{path}: ").replace(f"b'{path}'", name).replace(str(path), name)
        raise DrumdiffError(f"{name} cannot be used: {detail}") from error
    if decoded.limited:
        raise DrumdiffError(
            f"{name} is too long: over {max_seconds:g} s (the model makes {config.length / config.sample_rate:.2f} s "
            "one-shots; trim it first)"
        )
    clip, done = conform_audio(decoded.audio, decoded.sample_rate, config)
    if decoded.partial:
        done.insert(0, f"damaged file, read as far as it goes ({decoded.partial_reason})")
    return clip, done
