"""What the SoundFont and SFZ readers share: a clip cut out of a kit (`Region`), reading it, the GM drum map.

A kit reader (`soundfont.read_soundfont`, `sfz.read_sfz`) turns one kit file into `KitRegion`s: where each
clip's audio is, how the kit plays it (tuning, gain), and the names that say what it is; it never decides a
class (`sources.find_sources` does, through the one name table). `read_region` runs in the worker processes,
so everything here is plain, picklable data.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import soundfile as sf
import torch

from drumdiff import audio as audio_io
from drumdiff.errors import DrumdiffError

# General MIDI percussion (GM1 35-81, GM2 82-87): the note's name is matched against the class table like a
# Hydrogen instrument name ("Side Stick" -> percussion, "Hand Clap" -> snare). GM2's 27-34 (High Q, Scratch,
# Metronome, ...) are left out: they are effects, not drums; such notes fall back to the kit's own names.
GM_PERCUSSION: dict[int, str] = {
    35: "Acoustic Bass Drum", 36: "Bass Drum 1", 37: "Side Stick", 38: "Acoustic Snare", 39: "Hand Clap",
    40: "Electric Snare", 41: "Low Floor Tom", 42: "Closed Hi-Hat", 43: "High Floor Tom", 44: "Pedal Hi-Hat",
    45: "Low Tom", 46: "Open Hi-Hat", 47: "Low-Mid Tom", 48: "Hi-Mid Tom", 49: "Crash Cymbal 1", 50: "High Tom",
    51: "Ride Cymbal 1", 52: "Chinese Cymbal", 53: "Ride Bell", 54: "Tambourine", 55: "Splash Cymbal",
    56: "Cowbell", 57: "Crash Cymbal 2", 58: "Vibraslap", 59: "Ride Cymbal 2", 60: "Hi Bongo", 61: "Low Bongo",
    62: "Mute Hi Conga", 63: "Open Hi Conga", 64: "Low Conga", 65: "High Timbale", 66: "Low Timbale",
    67: "High Agogo", 68: "Low Agogo", 69: "Cabasa", 70: "Maracas", 71: "Short Whistle", 72: "Long Whistle",
    73: "Short Guiro", 74: "Long Guiro", 75: "Claves", 76: "Hi Wood Block", 77: "Low Wood Block",
    78: "Mute Cuica", 79: "Open Cuica", 80: "Mute Triangle", 81: "Open Triangle", 82: "Shaker",
    83: "Jingle Bell", 84: "Bell Tree", 85: "Castanets", 86: "Mute Surdo", 87: "Open Surdo",
}  # fmt: skip


def gm_name(note: int | None) -> str | None:
    """The General MIDI percussion name of a note (35-87), or None."""
    return GM_PERCUSSION.get(note) if note is not None else None


class KitFileError(DrumdiffError):
    """A kit file that cannot be read at all (a truncated or lying RIFF, an `#include` loop): one rejection."""


@dataclass(frozen=True)
class Region:
    """Where one clip's audio is and how the kit plays it. Plain data: it crosses into worker processes.

    kind "pcm16": 16-bit little-endian mono spans of a SoundFont's `smpl` chunk (`spans`: one (byte offset,
    frames) per channel, left first; `lsb`: the matching `sm24` byte offsets of 24-bit files, or empty);
    "ogg": one Ogg Vorbis stream per channel (`spans`: (byte offset, bytes)), as SoundFont 3 stores them;
    "file": a whole audio file (an SFZ region's sample), decoded by libsndfile.
    `first`/`last` cut decoded frames ([first, last), last -1 = to the end); `pitch_semitones` plays the clip
    faster (> 0) or slower, like a sampler; `gain_db` is the kit's level for it (attenuation, volume).
    """

    file: str
    kind: Literal["pcm16", "ogg", "file"]
    sample_rate: int = 0  # pcm16 / ogg: the rate the kit states; file: 0 (the file says)
    spans: tuple[tuple[int, int], ...] = ()
    lsb: tuple[int, ...] = ()
    first: int = 0
    last: int = -1
    pitch_semitones: float = 0.0
    gain_db: float = 0.0

    def record(self) -> dict[str, Any]:
        """The region as JSON values (lists, not tuples), as the manifest keeps it (`file` is elsewhere)."""
        record = asdict(self)
        del record["file"]
        record["spans"] = [list(span) for span in self.spans]
        record["lsb"] = list(self.lsb)
        return record


@dataclass(frozen=True)
class KitRegion:
    """One clip that a SoundFont or SFZ kit holds, or a reason why a part of the kit gives none."""

    member: str  # unique inside its kit file: "Black Pearl/036 Bass Drum 1 v1-127 BP_Kick"
    kit: str  # the group (train/val split unit)
    region: Region | None = None
    note: int | None = None  # the MIDI note it is played at
    names: tuple[str, ...] = ()  # the kit's names for this very audio (sample, region label): tried first
    labels: tuple[str, ...] = ()  # broader names (instrument, group): tried after the note's GM name
    provenance: dict[str, Any] = field(default_factory=dict)
    reject: str | None = None
    detail: str = ""


class RegionError(DrumdiffError):
    """A region whose audio cannot be cut out (a rejection reason and a detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RegionAudio(NamedTuple):
    """`read_region`'s result: the audio to condition, what was done to it, and the kit's own rate."""

    decoded: audio_io.Decoded  # at the rate that plays it at its pitch
    done: dict[str, Any]  # manifest `processing` entries: kit_gain_db, tuned
    sha1: str  # of the bytes read and the region itself: changes when either does
    sample_rate: int  # the rate the kit (or the sample file) states


def read_region(region: Region, *, max_seconds: float) -> RegionAudio:
    """Cut a region's audio out of its file, tuned and at its level.

    Raises `audio.AudioDecodeError` (missing, unreadable, not audio, ...) or `RegionError` ("bad region").
    """
    if region.kind == "file":
        # Enough seconds to reach `first` (at any rate from 8 kHz up) and then `max_seconds` after it.
        decoded = audio_io.decode(region.file, max_seconds=max_seconds + region.first / 8000)
        audio, rate, fmt, subtype = decoded.audio, decoded.sample_rate, decoded.format, decoded.subtype
    else:
        audio, fmt, subtype = _read_soundfont_samples(region)
        rate = region.sample_rate
        decoded = None
    if region.first or region.last >= 0:
        end = audio.shape[1] if region.last < 0 else region.last
        if region.first >= min(end, audio.shape[1]):
            raise RegionError(
                "bad region", f"starts at frame {region.first}, the sample has {audio.shape[1]}"
            )
        audio = audio[:, region.first : end]
    audio = audio[:, : max(1, math.ceil(max_seconds * rate))]
    done: dict[str, Any] = {}
    if region.gain_db:
        audio = audio * 10 ** (region.gain_db / 20)
        done["kit_gain_db"] = round(region.gain_db, 3)
    played_rate = rate
    if region.pitch_semitones:
        played_rate = max(1, round(rate * 2 ** (region.pitch_semitones / 12)))  # 1 Hz: under 0.04 cents
        done["tuned"] = f"{region.pitch_semitones:+.2f} semitones (read at {played_rate} Hz, not {rate})"
    result = audio_io.Decoded(
        audio=audio.contiguous(),
        sample_rate=played_rate,
        format=fmt,
        subtype=subtype,
        frames_expected=audio.shape[1],
        partial=bool(decoded and decoded.partial),
        partial_reason=decoded.partial_reason if decoded else "",
        limited=bool(decoded and decoded.limited),
    )
    return RegionAudio(result, done, region_sha1(region), rate)


def region_sha1(region: Region) -> str:
    """SHA-1 of the region itself and of the bytes it reads (its whole file for kind "file"); raises OSError."""
    digest = hashlib.sha1(repr(region.record()).encode())
    if region.kind == "file":
        digest.update(_file_sha1(region.file).encode())
        return digest.hexdigest()
    with open(region.file, "rb") as handle:
        for i, (offset, count) in enumerate(region.spans):
            handle.seek(offset)
            digest.update(handle.read(2 * count if region.kind == "pcm16" else count))
            if region.lsb:
                handle.seek(region.lsb[i])
                digest.update(handle.read(count))
    return digest.hexdigest()


def _read_soundfont_samples(region: Region) -> tuple[torch.Tensor, str, str]:
    """The channels of a pcm16 / ogg region as float32 `[C, T]`, with its format and subtype names."""
    channels: list[np.ndarray] = []
    try:
        with open(region.file, "rb") as handle:
            for i, (offset, count) in enumerate(region.spans):
                handle.seek(offset)
                if region.kind == "pcm16":
                    raw = handle.read(2 * count)
                    if len(raw) < 2 * count:
                        raise RegionError(
                            "bad region", f"sample data ends {2 * count - len(raw)} bytes early"
                        )
                    pcm = np.frombuffer(raw, "<i2").astype(np.int32) << 8  # (T,) as 24-bit
                    if region.lsb:
                        handle.seek(region.lsb[i])
                        low = handle.read(count)
                        if len(low) == count:
                            pcm = pcm | np.frombuffer(low, np.uint8)
                    channels.append((pcm / 8388608.0).astype(np.float32))
                else:
                    channels.append(_decode_ogg(handle.read(count), region.file))
    except FileNotFoundError as error:
        raise audio_io.AudioDecodeError(region.file, "missing", "file not found") from error
    except OSError as error:
        raise audio_io.AudioDecodeError(region.file, "unreadable", error.strerror or str(error)) from error
    length = min(len(c) for c in channels)  # a stereo pair of unequal length plays as long as the shorter
    audio = torch.from_numpy(np.stack([c[:length] for c in channels]))  # (C, T)
    if not torch.isfinite(audio).all():
        raise audio_io.AudioDecodeError(region.file, "non-finite samples", "NaN/Inf samples")
    if length == 0:
        raise RegionError("bad region", "the region holds no sample frames")
    return (
        audio,
        ("SF2" if region.kind == "pcm16" else "SF3"),
        (("PCM_24" if region.lsb else "PCM_16") if region.kind == "pcm16" else "VORBIS"),
    )


def _decode_ogg(raw: bytes, file: str) -> np.ndarray:
    """One SoundFont 3 sample: an Ogg Vorbis stream, decoded to float32 mono `(T,)`."""
    try:
        data, _ = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise audio_io.AudioDecodeError(
            file, "not audio", f"Ogg Vorbis sample does not decode ({error})"
        ) from error
    return data.mean(axis=1)


def _file_sha1(path: str | os.PathLike) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def licence_notes(folder: Path) -> str:
    """A pointer to licence-looking files beside a kit ("see LICENSE, README"), or "" when there are none."""
    try:
        notes = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "README"))
        )
    except OSError:
        return ""
    return f"see {', '.join(notes)}" if notes else ""
