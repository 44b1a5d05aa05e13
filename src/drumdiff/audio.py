"""Audio I/O and conditioning: a handful of typed pure functions on float32 `[C, T]` tensors.

Reading goes through libsndfile (`soundfile`): WAV, FLAC, OGG/Vorbis, AIFF, and MP3 where the installed
libsndfile has it (1.1+). Every problem with a file or a value raises `AudioError` with a message that names
the file and the problem; `decode` also tells the caller *which* problem (`AudioDecodeError.reason`) and
whether the file decoded only partly, which `drumdiff data prepare` reports for every input.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
import torch

from drumdiff.errors import AudioError
from drumdiff.files import atomic_path
from drumdiff.tags import check_tags, write_tags

WriteFormat = Literal["wav24", "wav16", "float32", "flac"]
WRITE_FORMATS: dict[str, tuple[str, str]] = {  # name -> (libsndfile format, subtype)
    "wav24": ("WAV", "PCM_24"),
    "wav16": ("WAV", "PCM_16"),
    "float32": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_24"),
}
# File name endings that `drumdiff data prepare` treats as audio.
AUDIO_EXTENSIONS = (
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".aif",
    ".aiff",
    ".aifc",
    ".mp3",
    ".w64",
    ".caf",
)
SILENCE_DB = -60.0  # "silent" and leading-silence threshold, dBFS
# The sample rates drumdiff writes and models may have: telephone speech to high-resolution studio audio.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
_WAV_MAX_BYTES = 2**32 - 1 - 44  # a RIFF size is 32 bits; minus the canonical header
_FLAC_MAX_CHANNELS = 8
_BLOCK_FRAMES = 16384  # read in blocks so that a corrupt tail still leaves the head decoded


class AudioDecodeError(AudioError):
    """An `AudioError` from reading a file, with a short machine-readable `reason`.

    Reasons: "missing", "not a file", "unreadable", "empty", "not audio", "non-finite samples", and
    "truncated" (only from `read(..., allow_partial=False)`).
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """The result of `decode`: the audio plus what the file said about itself."""

    audio: torch.Tensor  # (C, T) float32
    sample_rate: int
    format: str  # libsndfile's name, e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "FLOAT"
    frames_expected: int  # what the header claims
    partial: bool  # True when fewer frames decoded than the header claims (truncated or lying header)
    partial_reason: str = ""  # human-readable, empty when not partial
    limited: bool = False  # True when decoding stopped at `max_seconds` (the file is longer, and fine)

    @property
    def channels(self) -> int:
        """Channels decoded (as the file has them)."""
        return int(self.audio.shape[0])

    @property
    def duration(self) -> float:
        """Seconds of audio actually decoded."""
        return self.audio.shape[1] / self.sample_rate


def _check_path(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise AudioDecodeError(path, "missing", f"broken symbolic link (points to {os.readlink(path)})")
    if not path.exists():
        raise AudioDecodeError(path, "missing", "file not found")
    if path.is_dir():
        raise AudioDecodeError(path, "not a file", "is a folder, not an audio file")
    if not path.is_file():
        raise AudioDecodeError(path, "not a file", "is not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        raise AudioDecodeError(path, "unreadable", f"cannot open: {error.strerror or error}") from error
    if size == 0:
        raise AudioDecodeError(path, "empty", "empty file (0 bytes)")


def _wav_claimed_frames(path: Path) -> tuple[int, int] | None:
    """(frames the RIFF `data` chunk claims, frames its bytes hold), or None when not a plain RIFF WAV.

    libsndfile silently clamps a lying header to the bytes present, so we read the chunk size ourselves.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            file_size = path.stat().st_size
            block_align = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                start = f.tell()
                if chunk_id == b"fmt ":
                    fmt = f.read(min(chunk_size, 16))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif chunk_id == b"data":
                    if block_align == 0 or chunk_size == 0xFFFFFFFF:  # streamed WAV: size unknown
                        return None
                    available = max(0, file_size - start)
                    return chunk_size // block_align, min(chunk_size, available) // block_align
                f.seek(start + chunk_size + (chunk_size & 1))
    except (OSError, struct.error):
        return None


def decode(path: str | os.PathLike, *, max_seconds: float | None = None) -> Decoded:
    """Decode an audio file to float32 `[C, T]`, keeping what a truncated file still holds.

    `max_seconds` stops decoding early (a one-hour file need not fill memory to make a one-shot).
    Raises `AudioDecodeError` (an `AudioError`) naming the file and the problem: missing, empty, not audio,
    unreadable, no frames, NaN/Inf samples.
    """
    path = Path(path)
    _check_path(path)
    try:
        # Bytes on POSIX, so that a file name which is not valid UTF-8 still opens.
        handle = sf.SoundFile(os.fsencode(path) if os.name == "posix" else str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioDecodeError(path, "not audio", f"not a readable audio file ({_short(error)})") from error
    blocks: list[np.ndarray] = []
    read_error = ""
    with handle:
        expected = max(int(handle.frames), 0)
        sample_rate, channels = int(handle.samplerate), int(handle.channels)
        fmt, subtype = str(handle.format), str(handle.subtype)
        limit = math.inf if max_seconds is None else max(1, math.ceil(max_seconds * max(sample_rate, 1)))
        frames = 0
        while frames < limit:
            try:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)  # (T, C)
            except (sf.LibsndfileError, RuntimeError) as error:
                read_error = _short(error)
                break
            if len(block) == 0:
                break
            blocks.append(block)
            frames += len(block)
    limited = frames >= limit and frames < expected
    if limited:
        blocks[-1] = blocks[-1][: len(blocks[-1]) - (frames - int(limit))]
        frames = int(limit)
    if sample_rate <= 0 or channels <= 0:
        raise AudioDecodeError(path, "not audio", f"invalid header ({sample_rate} Hz, {channels} channels)")
    if frames == 0:
        detail = f"no audio frames could be decoded ({read_error})" if read_error else "no audio frames"
        raise AudioDecodeError(path, "empty" if not read_error else "not audio", detail)
    data = np.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioDecodeError(path, "non-finite samples", f"{bad} NaN/Inf samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)

    partial_reason = ""
    claimed = _wav_claimed_frames(path) if fmt in ("WAV", "WAVEX") else None
    if claimed is not None and claimed[0] > claimed[1]:
        partial_reason = f"header claims {claimed[0]} frames, file holds {claimed[1]}"
        expected = claimed[0]
    elif frames < expected and not limited:
        partial_reason = f"decoded {frames} of {expected} frames" + (f" ({read_error})" if read_error else "")
    elif read_error:
        partial_reason = f"decode stopped early ({read_error})"
    return Decoded(
        audio=audio,
        sample_rate=sample_rate,
        format=fmt,
        subtype=subtype,
        frames_expected=expected,
        partial=bool(partial_reason),
        partial_reason=partial_reason,
        limited=limited,
    )


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def read(path: str | os.PathLike, *, allow_partial: bool = True) -> tuple[torch.Tensor, int]:
    """Read an audio file: returns (audio `[C, T]` float32 in [-1, 1] for PCM, sample rate).

    A file that decodes only partly (truncated, lying header) is returned as far as it goes, or raises
    `AudioError` with `allow_partial=False`; `decode` tells what happened.
    """
    decoded = decode(path)
    if decoded.partial and not allow_partial:
        raise AudioDecodeError(path, "truncated", f"truncated or damaged: {decoded.partial_reason}")
    return decoded.audio, decoded.sample_rate


def _check_audio(audio: torch.Tensor, name: str = "audio") -> None:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise AudioError(f"{name} must be a [C, T] tensor, got {shape}")


def write(
    path: str | os.PathLike,
    audio: torch.Tensor,
    sample_rate: int,
    *,
    format: WriteFormat = "wav24",
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write `audio` `[C, T]` atomically (temp file, then rename). PCM formats are clipped to [-1, 1].

    format: "wav24" | "wav16" | "float32" (32-bit float WAV) | "flac" (24-bit).
    tags: embedded before the rename (keys `drumdiff.tags.TAG_KEYS`, e.g. from `provenance_tags`): RIFF
    INFO + bext + iXML in a WAV, Vorbis comments in a FLAC; the sample data is the same with or without.
    """
    path = Path(path)
    if format not in WRITE_FORMATS:
        raise AudioError(f"unknown audio format {format!r}; choose one of {', '.join(WRITE_FORMATS)}")
    tags = check_tags(tags or {}, source=path)
    _check_audio(audio)
    if sample_rate <= 0:
        raise AudioError(f"{path}: sample rate must be positive, got {sample_rate}")
    if audio.shape[1] == 0:
        raise AudioError(f"{path}: refusing to write an empty clip (0 samples)")
    problem = format_limit(format, channels=audio.shape[0], frames=audio.shape[1], sample_rate=sample_rate)
    if problem:
        raise AudioError(f"cannot write {path}: {problem}")
    data = audio.detach().to("cpu", torch.float32).numpy().T  # (T, C) as libsndfile wants
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN/Inf samples")
    file_format, subtype = WRITE_FORMATS[format]
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    folder = path.parent
    if not folder.is_dir():
        raise AudioError(f"cannot write {path}: folder {folder} does not exist")
    started = False  # False while the temporary file is still being created
    try:
        with atomic_path(path) as tmp:
            started = True
            sf.write(tmp, np.ascontiguousarray(data), sample_rate, format=file_format, subtype=subtype)
            if tags:
                write_tags(tmp, tags)
    except OSError as error:
        if not started:
            raise AudioError(
                f"cannot write {path}: folder {folder} is not writable ({error.strerror})"
            ) from error
        raise AudioError(f"cannot write {path}: {error.strerror or error}") from error
    except sf.LibsndfileError as error:  # libsndfile reports a failed write (a full disk) as "System error."
        raise AudioError(f"cannot write {path}: {_write_failure(folder, data.nbytes, error)}") from error
    return path


def format_limit(format: str, *, channels: int, frames: int, sample_rate: int) -> str | None:
    """Why a clip of this shape cannot be stored in `format` (WAV's 4 GB, FLAC's 8 channels), else None."""
    if format not in WRITE_FORMATS:
        return f"unknown audio format {format!r}"
    if WRITE_FORMATS[format][0] == "WAV":
        width = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[WRITE_FORMATS[format][1]]
        size = channels * frames * width
        if size > _WAV_MAX_BYTES:
            return (
                f"{size / 1e9:.2f} GB of audio is more than a WAV file can hold (4.29 GB); "
                "use --format flac or a lower rate"
            )
    elif channels > _FLAC_MAX_CHANNELS:
        return f"FLAC holds at most {_FLAC_MAX_CHANNELS} channels, the clip has {channels}"
    if sample_rate > 655350 and format == "flac":
        return f"FLAC holds rates up to 655350 Hz, not {sample_rate}"
    return None


def _write_failure(folder: Path, nbytes: int, error: Exception) -> str:
    """The cause of a failed libsndfile write, in words: a full disk when that is what it looks like."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < nbytes:
        return f"the disk is full ({free / 1e6:.1f} MB free)"
    return f"libsndfile failed: {error} (is the disk full or the file size limited?)"


def resample(audio: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample `[C, T]` with soxr (very high quality) to floor(T * to_rate / from_rate + 1/2) samples."""
    _check_audio(audio)
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return audio
    data = audio.detach().to("cpu", torch.float32).numpy().T  # (T, C)
    out = soxr.resample(np.ascontiguousarray(data), from_rate, to_rate, quality="VHQ")  # (T', C)
    out = torch.from_numpy(np.ascontiguousarray(out.T, dtype=np.float32))  # (C, T')
    want = (audio.shape[1] * to_rate * 2 + from_rate) // (2 * from_rate)  # exact integer round-half-up
    if out.shape[1] != want:  # soxr agrees almost always; make the length a documented function of T
        out = torch.nn.functional.pad(out, (0, want - out.shape[1])) if out.shape[1] < want else out[:, :want]
    return out


def to_channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert `[C, T]` to `channels` channels.

    Mono -> N: copies. N -> mono: mean. More than 2 -> stereo: the mean of all channels goes to both sides
    (a neutral downmix that never clips and suits one-shots, whose channel layouts are rarely labelled).
    2 -> more than 2: left/right repeated. Same count: unchanged.
    """
    _check_audio(audio)
    if channels < 1:
        raise AudioError(f"channel count must be at least 1, got {channels}")
    have = audio.shape[0]
    if have == channels:
        return audio
    if have == 1:
        return audio.expand(channels, -1).clone()
    if channels == 1 or have > 2:
        mono = audio.mean(dim=0, keepdim=True)  # (1, T)
        return mono.expand(channels, -1).clone()
    return audio[torch.arange(channels) % have]  # stereo -> more channels


def fit_length(
    audio: torch.Tensor, length: int, *, fade_ms: float = 10.0, sample_rate: int = 44100
) -> torch.Tensor:
    """Crop `[C, T]` to `length` samples with a raised-cosine fade-out of `fade_ms`, or zero-pad the end."""
    _check_audio(audio)
    if length < 1:
        raise AudioError(f"length must be at least 1 sample, got {length}")
    have = audio.shape[1]
    if have == length:
        return audio
    if have < length:
        return torch.nn.functional.pad(audio, (0, length - have))
    out = audio[:, :length].clone()
    fade = min(length, max(0, round(fade_ms * sample_rate / 1000)))
    if fade > 0:
        ramp = 0.5 * (1 + torch.cos(torch.linspace(0, math.pi, fade, dtype=audio.dtype)))  # 1 -> 0
        out[:, length - fade :] *= ramp
    return out


def remove_dc(audio: torch.Tensor) -> torch.Tensor:
    """Subtract each channel's mean from `[C, T]`."""
    _check_audio(audio)
    return audio - audio.mean(dim=1, keepdim=True)


def peak_db(audio: torch.Tensor) -> float:
    """Peak level of `[C, T]` in dBFS (-inf for digital silence)."""
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


@functools.lru_cache(maxsize=8)
def _k_weighting_response(n_fft: int, sample_rate: int) -> np.ndarray:
    """Complex frequency response of the BS.1770 K-weighting (shelf + high-pass) on an rfft grid."""
    # Coefficients for any rate, as derived in libebur128 from the standard's 48 kHz filters.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    b1 = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    a1 = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    b2 = [1.0, -2.0, 1.0]
    a2 = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    z = np.exp(-1j * np.pi * np.arange(n_fft // 2 + 1) / (n_fft // 2))  # z^-1 on the grid

    def biquad(b: list[float], a: list[float]) -> np.ndarray:
        return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)

    response = biquad(b1, a1) * biquad(b2, a2)
    response.setflags(write=False)  # shared through the cache
    return response


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes that the FFT handles fast."""
    best = 1 << max(0, math.ceil(math.log2(n)))
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three << max(0, math.ceil(math.log2(n / three)))
            best = min(best, size)
            three *= 3
        five *= 5
    return best


def loudness_lufs(audio: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness of `[C, T]` in LUFS per ITU-R BS.1770-4 (K-weighting, 400 ms blocks, gating).

    All channels get weight 1.0 (the standard's weights for L, R, C). A clip shorter than one block is
    measured as one block; -inf when everything is gated out (silence).
    """
    _check_audio(audio)
    x = audio.detach().to("cpu", torch.float64).numpy()  # (C, T)
    length = x.shape[1]
    # Filter by FFT, zero-padded by 150 ms: the slowest part of the K-weighting (the 38 Hz high-pass) has
    # decayed below 1e-9 by then, so the circular wrap-around is negligible; the size is 5-smooth for speed.
    n_fft = _fast_length(length + math.ceil(0.15 * sample_rate))
    spectrum = np.fft.rfft(x, n=n_fft, axis=1) * _k_weighting_response(n_fft, sample_rate)
    y = np.fft.irfft(spectrum, n=n_fft, axis=1)[:, :length]  # (C, T) K-weighted
    block, hop = round(0.4 * sample_rate), round(0.1 * sample_rate)
    if length <= block:
        powers = np.array([(y**2).mean(axis=1).sum()])
    else:
        starts = np.arange(0, length - block + 1, hop)
        csum = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y**2, axis=1)], axis=1)  # (C, T+1)
        powers = ((csum[:, starts + block] - csum[:, starts]) / block).sum(axis=0)  # (blocks,)

    def lufs(power: np.ndarray | float) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -0.691 + 10 * np.log10(power)

    gated = powers[lufs(powers) > -70.0]  # absolute gate
    if gated.size == 0:
        return -math.inf
    relative = lufs(gated.mean()) - 10.0  # relative gate
    gated = gated[lufs(gated) > relative]
    return float(lufs(gated.mean()))


def normalize(
    audio: torch.Tensor,
    *,
    mode: Literal["peak", "lufs"] = "peak",
    peak_db: float = -1.0,
    lufs: float = -14.0,
    sample_rate: int = 44100,
) -> torch.Tensor:
    """Scale `[C, T]` to a peak of `peak_db` dBFS, or to `lufs` integrated loudness (never above `peak_db`).

    Digital silence is returned unchanged.
    """
    _check_audio(audio)
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    if not math.isfinite(peak):
        raise AudioError("cannot normalize audio that contains NaN/Inf samples")
    if peak == 0.0:
        return audio
    peak_gain = 10 ** (peak_db / 20) / peak
    if mode == "peak":
        return audio * peak_gain
    if mode == "lufs":
        measured = loudness_lufs(audio, sample_rate)
        if not math.isfinite(measured):
            return audio * peak_gain
        return audio * min(10 ** ((lufs - measured) / 20), peak_gain)
    raise AudioError(f"unknown normalize mode {mode!r}; choose peak or lufs")


def silence_threshold(db: float = SILENCE_DB) -> float:
    """Linear amplitude of a dBFS level."""
    return 10 ** (db / 20)


def trim_leading_silence(audio: torch.Tensor, *, threshold_db: float = SILENCE_DB) -> torch.Tensor:
    """Drop the samples of `[C, T]` before the first one (any channel) at or above `threshold_db` dBFS.

    All-silent audio comes back empty (`[C, 0]`).
    """
    _check_audio(audio)
    loud = (audio.abs() >= silence_threshold(threshold_db)).any(dim=0)  # (T,)
    if not bool(loud.any()):
        return audio[:, :0]
    first = int(loud.to(torch.uint8).argmax())
    return audio[:, first:]


def active_span(audio: torch.Tensor, *, threshold_db: float = SILENCE_DB) -> int:
    """Samples from the first to the last sample of `[C, T]` at or above `threshold_db` (0 when silent)."""
    _check_audio(audio)
    loud = torch.nonzero((audio.abs() >= silence_threshold(threshold_db)).any(dim=0)).flatten()
    return 0 if loud.numel() == 0 else int(loud[-1] - loud[0]) + 1
