"""Synthetic drum one-shots: kicks, snares and hi-hats made from sines and filtered noise.

Used by the demo (train a tiny model without any sample library) and by tests. These are not meant to sound
great; they are meant to be recognisably different classes with realistic envelopes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

CLASSES = ("kick", "snare", "hihat")


def _time(length: int, sample_rate: int) -> Tensor:
    return torch.arange(length, dtype=torch.float64) / sample_rate


def _stereo(mono: Tensor, *, width: float, gen: torch.Generator) -> Tensor:
    """[T] -> [2, T] float32 with a little level difference between sides, peaking between 0.5 and 0.95."""
    tilt = width * (torch.rand((), generator=gen, dtype=torch.float64) - 0.5)
    stereo = torch.stack([mono * (1 - tilt), mono * (1 + tilt)])
    peak = 0.5 + 0.45 * torch.rand((), generator=gen, dtype=torch.float64)
    return (stereo * peak / stereo.abs().max()).float()


def _highpass(noise: Tensor, cutoff: float, sample_rate: int) -> Tensor:
    """Crude high-pass: subtract a one-pole low-passed copy, done in the frequency domain."""
    spectrum = torch.fft.rfft(noise)
    freqs = torch.fft.rfftfreq(noise.shape[-1], 1 / sample_rate)
    response = (freqs / cutoff) ** 2 / (1 + (freqs / cutoff) ** 2)
    return torch.fft.irfft(spectrum * response, n=noise.shape[-1])


def kick(*, seed: int, length: int = 32768, sample_rate: int = 44100) -> Tensor:
    """A pitch-swept decaying sine with a click: [2, length] float32."""
    gen = torch.Generator().manual_seed(seed)
    t = _time(length, sample_rate)
    base = 45 + 25 * torch.rand((), generator=gen, dtype=torch.float64)
    sweep = 3 + 4 * torch.rand((), generator=gen, dtype=torch.float64)
    decay = 6 + 10 * torch.rand((), generator=gen, dtype=torch.float64)
    freq = base * (1 + sweep * torch.exp(-t * 35))
    phase = 2 * math.pi * torch.cumsum(freq, 0) / sample_rate
    body = torch.sin(phase) * torch.exp(-t * decay)
    click = torch.randn(length, generator=gen, dtype=torch.float64) * torch.exp(-t * 600) * 0.4
    return _stereo(body + click, width=0.1, gen=gen)


def snare(*, seed: int, length: int = 32768, sample_rate: int = 44100) -> Tensor:
    """A short tone plus a noise burst: [2, length] float32."""
    gen = torch.Generator().manual_seed(seed)
    t = _time(length, sample_rate)
    pitch = 170 + 60 * torch.rand((), generator=gen, dtype=torch.float64)
    tone = torch.sin(2 * math.pi * pitch * t) * torch.exp(-t * 30)
    decay = 12 + 12 * torch.rand((), generator=gen, dtype=torch.float64)
    noise = _highpass(torch.randn(length, generator=gen, dtype=torch.float64), 1500.0, sample_rate)
    rattle = noise / noise.abs().max() * torch.exp(-t * decay)
    return _stereo(0.6 * tone + 0.8 * rattle, width=0.3, gen=gen)


def hihat(*, seed: int, length: int = 32768, sample_rate: int = 44100) -> Tensor:
    """High-passed noise with a fast decay (closed) or a slower one (open): [2, length] float32."""
    gen = torch.Generator().manual_seed(seed)
    t = _time(length, sample_rate)
    decay = 25 + 60 * torch.rand((), generator=gen, dtype=torch.float64)
    noise = _highpass(torch.randn(length, generator=gen, dtype=torch.float64), 7000.0, sample_rate)
    hat = noise / noise.abs().max() * torch.exp(-t * decay)
    return _stereo(hat, width=0.4, gen=gen)


MAKERS = {"kick": kick, "snare": snare, "hihat": hihat}


def make(class_name: str, *, seed: int, length: int = 32768, sample_rate: int = 44100) -> Tensor:
    """One synthetic clip of `class_name` (kick, snare or hihat): [2, length] float32."""
    if class_name not in MAKERS:
        raise ValueError(f"unknown synthetic class {class_name!r}; choose one of {', '.join(MAKERS)}")
    return MAKERS[class_name](seed=seed, length=length, sample_rate=sample_rate)


def write_kit(
    folder: str | os.PathLike,
    *,
    per_class: int = 8,
    seed: int = 0,
    length: int = 32768,
    sample_rate: int = 44100,
    classes: tuple[str, ...] = CLASSES,
) -> list[Path]:
    """Write `per_class` WAV files per class under `folder/<class>/`. Returns the paths."""
    from drumdiff import audio as audio_io

    paths = []
    for k, name in enumerate(classes):
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = Path(folder) / name / f"{name}_{i:03d}.wav"
            clip = make(name, seed=seed + 1000 * k + i, length=length, sample_rate=sample_rate)
            paths.append(audio_io.write(path, clip, sample_rate, format="wav24"))
    return paths


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a folder of synthetic drum one-shots")
    parser.add_argument("folder", type=Path, help="output folder (one subfolder per class)")
    parser.add_argument("--per-class", type=int, default=8, help="clips per class (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args()
    paths = write_kit(args.folder, per_class=args.per_class, seed=args.seed)
    print(f"wrote {len(paths)} synthetic clips under {args.folder}")


if __name__ == "__main__":
    main()
