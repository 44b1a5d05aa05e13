"""Pictures of clips: one row per clip, its waveform beside its spectrogram (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from drumdiff.files import atomic_path


def spectrogram_db(mono: Tensor, *, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """Log-magnitude STFT of a mono clip [T] in dB relative to full scale, shape [freq, frames]."""
    window = torch.hann_window(n_fft)
    spec = torch.stft(mono.float(), n_fft, hop_length=hop, window=window, return_complex=True).abs()
    return 20 * torch.log10(spec / (n_fft / 4) + 1e-6)


def save_clips_png(
    path: str | os.PathLike,
    clips: Tensor,
    *,
    sample_rate: int,
    titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG with one row per clip of `clips` [N, C, T]: waveform (left) and spectrogram (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    clips = clips.detach().float().cpu()
    n = clips.shape[0]
    titles = list(titles) if titles is not None else [f"clip {i}" for i in range(n)]
    fig, axes = plt.subplots(n, 2, figsize=(11, 1.9 * n + 0.4), squeeze=False)
    seconds = torch.arange(clips.shape[-1]) / sample_rate
    for row, (clip, title) in enumerate(zip(clips, titles, strict=True)):
        mono = clip.mean(0)  # (T,)
        wave_ax, spec_ax = axes[row]
        for channel in clip:
            wave_ax.plot(seconds.numpy(), channel.numpy(), linewidth=0.5)
        wave_ax.set_ylim(-1.05, 1.05)
        wave_ax.set_xlim(0, float(seconds[-1]))
        wave_ax.set_ylabel(title, fontsize=8)
        spec = spectrogram_db(mono)
        spec_ax.imshow(
            spec.numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=-100,
            vmax=0,
            extent=(0, float(seconds[-1]), 0, sample_rate / 2000),
        )
        spec_ax.set_ylabel("kHz", fontsize=8)
        if row == n - 1:
            wave_ax.set_xlabel("seconds")
            spec_ax.set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return path
