"""Audio I/O: round trips per format, conditioning functions, and every bad input raising AudioError."""

from __future__ import annotations

import math
import os
import struct
import tempfile

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff import audio
from drumdiff.errors import AudioError, DrumdiffError
from tests.conftest import IN_CI

SR = 44100


def noise(channels: int = 2, frames: int = 4096, *, amplitude: float = 0.5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, frames, generator=g) * 2 - 1) * amplitude  # (C, T) in [-a, a]


def sine(
    freq: float, seconds: float, *, sr: int = SR, amplitude: float = 0.5, channels: int = 1
) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float().expand(channels, -1).clone()


@pytest.mark.parametrize(
    ("fmt", "atol", "container", "subtype"),
    [
        ("wav16", 1 / 32767 + 1e-6, "WAV", "PCM_16"),
        ("wav24", 1e-6, "WAV", "PCM_24"),
        ("float32", 0.0, "WAV", "FLOAT"),
        ("flac", 1e-6, "FLAC", "PCM_24"),
    ],
)
def test_write_read_round_trip(tmp_path, fmt, atol, container, subtype):
    x = noise()
    path = audio.write(tmp_path / f"clip.{'flac' if fmt == 'flac' else 'wav'}", x, SR, format=fmt)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (container, subtype, SR, 2)
    y, sr = audio.read(path)
    assert sr == SR and y.dtype == torch.float32 and y.shape == x.shape
    assert torch.allclose(x, y, atol=atol, rtol=0)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # no temp file left behind


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("OGG", "VORBIS"), ("AIFF", "PCM_16"), ("MP3", "MPEG_LAYER_III")]
)
def test_read_other_containers(tmp_path, fmt, subtype):
    if fmt not in sf.available_formats():  # MP3 needs libsndfile >= 1.1 (the soundfile wheels bundle 1.2)
        (pytest.fail if IN_CI else pytest.skip)(f"libsndfile here has no {fmt}")
    x = sine(440, 0.5, channels=2)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, x.numpy().T, SR, format=fmt, subtype=subtype)
    y, sr = audio.read(path)
    assert sr == SR and y.shape[0] == 2 and abs(y.shape[1] - x.shape[1]) < 3000
    assert y.abs().max() > 0.3


def test_write_clips_pcm_but_not_float(tmp_path):
    x = torch.tensor([[0.0, 2.0, -3.0, 0.5]])
    pcm, _ = audio.read(audio.write(tmp_path / "a.wav", x, SR, format="wav24"))
    flt, _ = audio.read(audio.write(tmp_path / "b.wav", x, SR, format="float32"))
    assert pcm.abs().max() <= 1.0 and torch.equal(flt, x)


def test_write_errors(tmp_path):
    x = noise()
    with pytest.raises(AudioError, match="format"):
        audio.write(tmp_path / "a.wav", x, SR, format="mp3")
    with pytest.raises(AudioError, match="does not exist"):
        audio.write(tmp_path / "nope" / "a.wav", x, SR)
    with pytest.raises(AudioError, match="NaN"):
        audio.write(tmp_path / "a.wav", torch.full((1, 4), float("nan")), SR)
    with pytest.raises(AudioError, match=r"\[C, T\]"):
        audio.write(tmp_path / "a.wav", torch.zeros(4), SR)


def test_write_read_only_folder_names_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions: make the temp file fail the way a locked folder would

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(AudioError, match="locked.*not writable"):
            audio.write(folder / "a.wav", noise(), SR)
    finally:
        folder.chmod(0o755)


def test_audio_error_is_a_drumdiff_error():
    assert issubclass(AudioError, DrumdiffError)


def _wav_bytes(tmp_path, frames: int = 2000) -> bytes:
    path = tmp_path / "src.wav"
    sf.write(path, noise(2, frames).numpy().T, SR, subtype="PCM_16")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.wav", lambda p, t: p.write_bytes(b""), "empty"),
        ("text.wav", lambda p, t: p.write_text("just some text, not audio\n" * 10), "not audio"),
        ("image.flac", lambda p, t: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), "not audio"),
        ("random.wav", lambda p, t: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not audio"),
        ("header_only.wav", lambda p, t: p.write_bytes(_wav_bytes(t)[:44]), "empty"),
    ],
)
def test_bad_files_raise_audio_error(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path, tmp_path)
    with pytest.raises(AudioError, match=name.replace(".", r"\.")) as info:
        audio.read(path)
    assert info.value.reason == reason


def test_missing_folder_and_dangling_link(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: file not found") as info:
        audio.read(tmp_path / "missing.wav")
    assert info.value.reason == "missing"
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match=r"folder\.wav: is a folder"):
        audio.read(tmp_path / "folder.wav")
    (tmp_path / "link.wav").symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match=r"link\.wav: broken symbolic link"):
        audio.read(tmp_path / "link.wav")


def test_non_finite_samples_raise(tmp_path):
    x = noise(1, 100).numpy().T.copy()
    x[10, 0] = np.nan
    x[20, 0] = np.inf
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: 2 NaN/Inf") as info:
        audio.read(tmp_path / "nan.wav")
    assert info.value.reason == "non-finite samples"


def test_truncated_wav_decodes_partially(tmp_path):
    data = _wav_bytes(tmp_path, 2000)
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 4 * 500])  # keep 500 of 2000 stereo 16-bit frames
    decoded = audio.decode(tmp_path / "cut.wav")
    assert decoded.partial and decoded.audio.shape == (2, 500)
    assert "2000" in decoded.partial_reason and "500" in decoded.partial_reason


def test_truncated_raises_when_partial_is_not_allowed(tmp_path):
    data = _wav_bytes(tmp_path, 2000)
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 4 * 500])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated or damaged: header claims 2000") as info:
        audio.read(tmp_path / "cut.wav", allow_partial=False)
    assert info.value.reason == "truncated"
    (tmp_path / "cut_header.wav").write_bytes(data[:30])  # cut inside the header: nothing to decode
    with pytest.raises(AudioError, match=r"cut_header\.wav"):
        audio.read(tmp_path / "cut_header.wav")


def test_decode_stops_at_max_seconds(tmp_path):
    path = audio.write(tmp_path / "long.wav", noise(2, 3 * SR, amplitude=0.1), SR, format="wav16")
    decoded = audio.decode(path, max_seconds=1.0)
    assert decoded.audio.shape == (2, SR) and decoded.limited and not decoded.partial
    assert decoded.frames_expected == 3 * SR
    assert not audio.decode(path, max_seconds=5.0).limited


def test_lying_header_decodes_partially(tmp_path):
    data = bytearray(_wav_bytes(tmp_path, 1000))
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 400_000)  # claims 100000 frames
    (tmp_path / "liar.wav").write_bytes(bytes(data))
    decoded = audio.decode(tmp_path / "liar.wav")
    assert decoded.partial and decoded.audio.shape == (2, 1000) and decoded.frames_expected == 100_000
    assert not audio.decode(tmp_path / "src.wav").partial


def test_truncated_flac_keeps_the_head(tmp_path):
    path = audio.write(tmp_path / "a.flac", noise(2, 44100, amplitude=0.2), SR, format="flac")
    data = path.read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    decoded = audio.decode(tmp_path / "cut.flac")
    assert decoded.partial and 0 < decoded.audio.shape[1] < 44100


@pytest.mark.parametrize(("src", "dst"), [(8000, 44100), (96000, 44100), (44100, 22050), (48000, 44100)])
def test_resample_lengths_and_content(src, dst):
    x = sine(440, 0.25, sr=src)
    y = audio.resample(x, src, dst)
    assert y.shape == (1, math.floor(x.shape[1] * dst / src + 0.5)) and y.dtype == torch.float32
    reference = sine(440, 0.25, sr=dst)[:, : y.shape[1]]
    middle = slice(200, y.shape[1] - 200)  # ignore filter edges
    assert torch.allclose(y[:, middle], reference[:, middle], atol=2e-3)
    assert audio.resample(x, src, src) is x
    with pytest.raises(AudioError, match="positive"):
        audio.resample(x, 0, dst)


def test_to_channels():
    mono = noise(1, 10)
    assert torch.equal(audio.to_channels(mono, 2), mono.expand(2, -1))
    stereo = noise(2, 10)
    assert torch.allclose(audio.to_channels(stereo, 1), stereo.mean(0, keepdim=True))
    eight = noise(8, 10)
    down = audio.to_channels(eight, 2)
    assert down.shape == (2, 10) and torch.allclose(down[0], eight.mean(0)) and torch.equal(down[0], down[1])
    assert audio.to_channels(stereo, 2) is stereo
    with pytest.raises(AudioError):
        audio.to_channels(stereo, 0)


def test_fit_length():
    x = torch.ones(2, 1000)
    padded = audio.fit_length(x, 1500)
    assert (
        padded.shape == (2, 1500) and padded[:, 1000:].abs().sum() == 0 and torch.equal(padded[:, :1000], x)
    )
    cropped = audio.fit_length(x, 800, fade_ms=1.0, sample_rate=SR)
    fade = round(SR / 1000)
    assert cropped.shape == (2, 800) and torch.equal(cropped[:, : 800 - fade], x[:, : 800 - fade])
    assert cropped[0, -1] == 0 and torch.all(cropped[0, 800 - fade :].diff() <= 0)
    assert audio.fit_length(x, 1000) is x
    assert torch.equal(audio.fit_length(x, 800, fade_ms=0), x[:, :800])


def test_remove_dc_and_trim_and_span():
    x = noise(2, 100) + 0.3
    assert audio.remove_dc(x).mean(1).abs().max() < 1e-6
    y = torch.zeros(2, 100)
    y[1, 40] = 0.5
    y[0, 70] = -0.5
    assert audio.trim_leading_silence(y).shape == (2, 60)
    assert audio.active_span(y) == 31
    assert audio.trim_leading_silence(torch.full((1, 50), 1e-4)).shape == (1, 0)  # -80 dBFS counts as silence
    assert audio.active_span(torch.zeros(1, 10)) == 0


def test_normalize_peak():
    x = noise(2, 1000, amplitude=3.0)
    y = audio.normalize(x, mode="peak", peak_db=-1.0)
    assert abs(audio.peak_db(y) - (-1.0)) < 1e-4
    silent = torch.zeros(2, 10)
    assert torch.equal(audio.normalize(silent), silent)
    with pytest.raises(AudioError, match="mode"):
        audio.normalize(x, mode="rms")
    with pytest.raises(AudioError, match="NaN"):
        audio.normalize(torch.tensor([[float("nan"), 0.5]]))


def test_loudness_matches_bs1770_reference_tones():
    # BS.1770 / EBU Tech 3341: a 1 kHz sine at -20 dBFS peak in both channels of a stereo signal
    # reads -20 LUFS (the K-weighting is ~+0.7 dB at 1 kHz and the -0.691 offset cancels it).
    tone = sine(1000, 5.0, amplitude=10 ** (-20 / 20), channels=2, sr=48000)
    assert abs(audio.loudness_lufs(tone, 48000) - (-20.0)) < 0.05
    tone44 = sine(1000, 5.0, amplitude=10 ** (-20 / 20), channels=2)
    assert abs(audio.loudness_lufs(tone44, SR) - (-20.0)) < 0.05
    # Gating: long silence is gated out (only the 3 blocks straddling the edge pull it down a little).
    padded = torch.cat([tone44, torch.zeros(2, 5 * SR)], dim=1)
    assert abs(audio.loudness_lufs(padded, SR) - (-20.0)) < 0.2
    assert audio.loudness_lufs(torch.zeros(2, SR), SR) == -math.inf
    # A 100 Hz tone sits on the flat part of the curve; 20 Hz is cut by the high-pass.
    assert audio.loudness_lufs(sine(20, 2.0, amplitude=0.1, channels=2), SR) < audio.loudness_lufs(
        sine(100, 2.0, amplitude=0.1, channels=2), SR
    )


def test_normalize_lufs_reaches_target_and_respects_peak():
    quiet = sine(1000, 1.0, amplitude=0.01, channels=2)
    y = audio.normalize(quiet, mode="lufs", lufs=-20.0, peak_db=-1.0)
    assert abs(audio.loudness_lufs(y, SR) - (-20.0)) < 0.05
    loud_target = audio.normalize(quiet, mode="lufs", lufs=0.0, peak_db=-1.0)  # would clip: peak wins
    assert abs(audio.peak_db(loud_target) - (-1.0)) < 1e-4
