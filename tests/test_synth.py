"""Synthetic drums: deterministic, well-formed, and spectrally ordered kick < snare < hihat."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch

from drumdiff import synth


def centroid(clip: torch.Tensor, sample_rate: int = 44100) -> float:
    spectrum = torch.fft.rfft(clip.mean(0)).abs()
    freqs = torch.fft.rfftfreq(clip.shape[-1], 1 / sample_rate)
    return float((spectrum * freqs).sum() / spectrum.sum())


def test_classes_are_deterministic_finite_and_ordered() -> None:
    clips = {name: synth.make(name, seed=3, length=8192) for name in synth.CLASSES}
    for clip in clips.values():
        assert clip.shape == (2, 8192) and clip.dtype == torch.float32
        assert torch.isfinite(clip).all() and 0.3 < float(clip.abs().max()) <= 1.0
    assert torch.equal(clips["kick"], synth.make("kick", seed=3, length=8192))
    assert not torch.equal(clips["kick"], synth.make("kick", seed=4, length=8192))
    assert centroid(clips["kick"]) < centroid(clips["snare"]) < centroid(clips["hihat"])
    with pytest.raises(ValueError, match="kick, snare, hihat"):
        synth.make("tom", seed=0)


def test_write_kit(tmp_path) -> None:
    paths = synth.write_kit(tmp_path, per_class=2, length=2048)
    assert len(paths) == 6 and (tmp_path / "snare" / "snare_001.wav").exists()
    info = sf.info(paths[0])
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 2048)
