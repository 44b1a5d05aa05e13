"""Conditioning inputs: decode -> channels -> DC -> onset -> resample -> length -> normalize -> encode.

`condition` holds the rules on decoded audio (shared with `drumdiff evaluate`, which fits clips the same way);
`process_file` runs them on one input and writes the FLAC; `process_files` runs many, in a spawn process
pool when asked. Every input ends as an `Encoded` clip or a `Rejected` reason, never as an exception, except
that an output folder that cannot be written (`OutputError`) stops the run.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from drumdiff import audio as audio_io
from drumdiff.config import ModelConfig
from drumdiff.data.duplicates import fingerprint
from drumdiff.data.manifest import REJECT_REASONS
from drumdiff.data.regions import Region, RegionError, read_region
from drumdiff.errors import AudioError, DrumdiffError
from drumdiff.files import file_digest
from drumdiff.progress import Progress

MAX_DECODE_SECONDS = 120.0  # decode at most this much of each input: room for silence before the onset
_DEFAULT_MODEL = ModelConfig()
LUFS_RANGE = (
    -50.0,
    0.0,
)  # sensible --lufs targets (a one-shot's peak then still lies above the silence floor)


@dataclass(frozen=True)
class PrepareSettings:
    """How every accepted file is conditioned. A change re-encodes everything on the next run."""

    sample_rate: int = _DEFAULT_MODEL.sample_rate
    length: int = _DEFAULT_MODEL.length
    channels: int = _DEFAULT_MODEL.audio_channels
    normalize: Literal["peak", "lufs", "none"] = "peak"
    peak_db: float = -1.0
    lufs: float = -14.0
    fade_ms: float = 10.0
    silence_db: float = audio_io.SILENCE_DB
    min_active: int = 256

    def __post_init__(self) -> None:
        if self.sample_rate < 1000:
            raise DrumdiffError(f"--sample-rate must be at least 1000 Hz, got {self.sample_rate}")
        if self.length < self.min_active:
            raise DrumdiffError(f"--length must be at least {self.min_active} samples, got {self.length}")
        if self.channels not in (1, 2):
            raise DrumdiffError(f"channels must be 1 or 2, got {self.channels}")
        if self.normalize not in ("peak", "lufs", "none"):
            raise DrumdiffError(f"--normalize must be peak, lufs or none, got {self.normalize!r}")
        # Louder than 0 dBFS would clip; at or below the silence threshold every clip would be "silent".
        if not (math.isfinite(self.peak_db) and self.silence_db < self.peak_db <= 0.0):
            raise DrumdiffError(
                f"--peak-db must be a level above {self.silence_db:g} and at most 0 dBFS, got {self.peak_db}"
            )
        if not (math.isfinite(self.lufs) and LUFS_RANGE[0] <= self.lufs <= LUFS_RANGE[1]):
            raise DrumdiffError(
                f"--lufs must be between {LUFS_RANGE[0]:g} and {LUFS_RANGE[1]:g} LUFS, got {self.lufs}"
            )


@dataclass(frozen=True)
class Job:
    """One input to decode, condition and encode (picklable: it crosses into worker processes)."""

    path: str  # the source file (for a clip inside a kit file: that file)
    staged: str  # where its FLAC goes
    display: str  # the source's name in messages
    settings: PrepareSettings
    region: Region | None = None  # a clip cut out of `path` (SoundFont zone, SFZ region)


@dataclass(frozen=True)
class Encoded:
    """An accepted input, conditioned and written to its job's `staged` file: its manifest item's facts."""

    original: dict[str, Any]  # the source's rate, channels, duration, container and subtype
    processing: dict[str, Any]  # what `condition` did, only what was done
    audio_sha1: str  # `audio_fingerprint` of the clip: equal for duplicates
    peak_db: float
    lufs: float
    sha1: str  # of the staged FLAC
    size: int  # bytes of the staged FLAC
    source_sha1: str  # of the source file; of a region's bytes and the region itself for a kit clip
    fingerprint: str  # `duplicates.fingerprint`: near-duplicates have close ones
    source_size: int | None = None
    source_mtime_ns: int | None = None


@dataclass(frozen=True)
class Rejected:
    """An input left out, with its rejected.json reason and detail."""

    reason: str
    detail: str
    source_size: int | None = None  # with the modification time: lets the next run skip an unchanged file
    source_mtime_ns: int | None = None


class OutputError(DrumdiffError):
    """The output folder cannot be written (disk full, permissions): stops `prepare`, as every file would fail."""


def condition(
    decoded: audio_io.Decoded, settings: PrepareSettings
) -> tuple[torch.Tensor | None, dict[str, Any], str | None]:
    """Apply the prepare rules to decoded audio: (clip `[C, length]` or None, what was done, reject reason)."""
    x = decoded.audio  # (C, T) at the source rate
    sr = decoded.sample_rate
    done: dict[str, Any] = {}
    if decoded.partial:
        done["decoded_partially"] = decoded.partial_reason
    if x.shape[0] != settings.channels:
        how = "duplicated" if x.shape[0] == 1 else "mean of all channels"
        done["channels"] = f"{x.shape[0]} -> {settings.channels} ({how})"
        x = audio_io.to_channels(x, settings.channels)
    dc = x.mean(dim=1)
    x = audio_io.remove_dc(x)
    if float(dc.abs().max()) > 1e-4:
        done["dc_removed"] = round(float(dc.abs().max()), 6)
    if audio_io.peak_db(x) < settings.silence_db:
        return None, done, "silent"
    trimmed = audio_io.trim_leading_silence(x, threshold_db=settings.silence_db)
    if trimmed.shape[1] < x.shape[1]:
        done["trimmed_leading_s"] = round((x.shape[1] - trimmed.shape[1]) / sr, 6)
    x = trimmed
    if (
        audio_io.active_span(x, threshold_db=settings.silence_db)
        < settings.min_active * sr / settings.sample_rate
    ):
        return None, done, "too short"
    # Crop before resampling (with a margin for the filter) so a 60 s file costs no more than a short one.
    needed = math.ceil(settings.length * sr / settings.sample_rate) + 64
    if x.shape[1] > needed:
        x = x[:, :needed]
    if sr != settings.sample_rate:
        done["resampled"] = f"{sr} -> {settings.sample_rate} Hz"
        x = audio_io.resample(x, sr, settings.sample_rate)
    if x.shape[1] > settings.length:
        done["cropped_from_s"] = round(trimmed.shape[1] / sr, 6)
    elif x.shape[1] < settings.length:
        done["padded_from_s"] = round(x.shape[1] / settings.sample_rate, 6)
    x = audio_io.fit_length(x, settings.length, fade_ms=settings.fade_ms, sample_rate=settings.sample_rate)
    if settings.normalize != "none":
        before = audio_io.peak_db(x)
        x = audio_io.normalize(
            x,
            mode=settings.normalize,
            peak_db=settings.peak_db,
            lufs=settings.lufs,
            sample_rate=settings.sample_rate,
        )
        done["normalized"] = settings.normalize
        done["gain_db"] = round(audio_io.peak_db(x) - before, 3)
    elif float(x.abs().max()) > 1.0:
        done["clipped"] = True  # --normalize none with a float source above full scale
    x = x.clamp(-1.0, 1.0)
    if not bool(torch.isfinite(x).all()) or audio_io.peak_db(x) < settings.silence_db:
        return None, done, "silent"  # cannot happen after the checks above, but never write such a clip
    return x, done, None


def audio_fingerprint(audio: torch.Tensor) -> str:
    """SHA-1 of `[C, T]` quantized to 16 bits: equal for the same audio from different containers."""
    quantized = torch.round(audio.clamp(-1, 1) * 32767).to(torch.int16).numpy()
    return hashlib.sha1(quantized.tobytes()).hexdigest()


def process_file(job: Job) -> Encoded | Rejected:
    """Decode, condition and encode one input to `job.staged` (a worker task; picklable in and out).

    Raises `OutputError` when `job.staged` cannot be written.
    """
    try:
        stat = os.stat(job.path)
        source_stat = {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    except OSError:
        source_stat = {}
    kit_done: dict[str, Any] = {}
    try:
        if job.region is None:
            decoded = audio_io.decode(job.path, max_seconds=MAX_DECODE_SECONDS)
            source_rate, source_sha1 = decoded.sample_rate, None
        else:
            decoded, kit_done, source_sha1, source_rate = read_region(
                job.region, max_seconds=MAX_DECODE_SECONDS
            )
    except audio_io.AudioDecodeError as error:
        return Rejected(error.reason, str(error), **source_stat)
    except RegionError as error:
        return Rejected(error.reason, f"{job.display}: {error}", **source_stat)
    original = {
        "sample_rate": source_rate,
        "channels": decoded.channels,
        "duration_s": round(
            decoded.frames_expected / decoded.sample_rate if decoded.limited else decoded.duration, 6
        ),
        "format": decoded.format,
        "subtype": decoded.subtype,
    }
    settings = job.settings
    clip, done, reason = condition(decoded, settings)
    done = {**kit_done, **done}
    if clip is None:
        return Rejected(reason, f"{job.display}: {REJECT_REASONS[reason]}", **source_stat)
    try:
        audio_io.write(job.staged, clip, settings.sample_rate, format="flac")
        sha1, size = sha1_file(job.staged), os.path.getsize(job.staged)
    except (AudioError, OSError) as error:  # the output side: not this input's fault
        raise OutputError(str(error)) from error
    return Encoded(
        original=original,
        processing=done,
        audio_sha1=audio_fingerprint(clip),
        peak_db=round(audio_io.peak_db(clip), 3),
        lufs=round(audio_io.loudness_lufs(clip, settings.sample_rate), 3),
        sha1=sha1,
        size=size,
        source_sha1=source_sha1 or sha1_file(job.path),
        fingerprint=fingerprint(clip, settings.sample_rate),
        **source_stat,
    )


def process_files(jobs: list[Job], *, workers: int, progress: bool) -> list[Encoded | Rejected]:
    """`process_file` over the jobs, in a spawn process pool when workers > 1, with a progress bar."""
    results: list[Encoded | Rejected | None] = [None] * len(jobs)
    bar = Progress(len(jobs), desc="prepare", unit="file") if progress and jobs else None
    workers = min(workers, len(jobs))
    try:
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            try:
                with concurrent.futures.ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=context,
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                ) as pool:
                    futures = {pool.submit(_safe_process, job): i for i, job in enumerate(jobs)}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            results[futures[future]] = future.result()
                            if bar is not None:
                                bar.update()
                    except BaseException:
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
            except BrokenProcessPool as error:
                line = f"worker processes failed ({error}); going on in this process"
                if bar is not None:
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr)
        # One process (or what a broken pool left): one torch thread, as clips are too small to split.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, job in enumerate(jobs):
                if results[i] is None:
                    results[i] = _safe_process(job)
                    if bar is not None:
                        bar.update()
        finally:
            torch.set_num_threads(threads)
    finally:
        if bar is not None:
            bar.close()
    return [result for result in results if result is not None]  # all filled by now


def _safe_process(job: Job) -> Encoded | Rejected:
    """`process_file`, turning an unexpected failure on one input into a "failed" rejection, not a crash.

    An `OutputError` (the output folder cannot be written) still stops the run: every file would fail.
    """
    try:
        return process_file(job)
    except OutputError:
        raise
    except Exception as error:  # one odd file must not stop an import of thousands
        Path(job.staged).unlink(missing_ok=True)
        return Rejected("failed", f"{job.display}: {type(error).__name__}: {error}")


PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it is still alive


def _init_worker(parent: int) -> None:
    """Set up a pool worker: one torch thread, and a watcher that ends the worker once `parent` is gone.

    A parent killed with SIGKILL cannot tell its workers, which would wait for jobs forever; the watcher sees
    the worker re-parented (`os.getppid()` changes) within `PARENT_POLL_S` and exits.
    """
    torch.set_num_threads(1)  # one process per core already
    threading.Thread(target=_exit_with_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # no clean-up to do: the parent's run is over, and its staged files are redone next run


def sha1_file(path: str | os.PathLike) -> str:
    """Hex SHA-1 of a file: the digest that manifests record for sources and outputs."""
    return file_digest(path, "sha1")
