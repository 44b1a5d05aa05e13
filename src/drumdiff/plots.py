"""Pictures of clips: each clip as its waveform and its spectrogram (matplotlib, no display needed).

`save_clips_png` draws one clip per row, waveform beside spectrogram; `save_clip_grid_png` draws rows of
clips, each waveform above its spectrogram. Both draw a clip with `draw_clip` and write the PNG atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from drumdiff.files import atomic_path

SPECTROGRAM_DB = (-100.0, 0.0)  # colour range of every spectrogram, dB relative to full scale


def spectrogram_db(mono: Tensor, *, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """Log-magnitude STFT of a mono clip [T] in dB relative to full scale, shape [freq, frames]."""
    window = torch.hann_window(n_fft)
    spec = torch.stft(mono.float(), n_fft, hop_length=hop, window=window, return_complex=True).abs()
    return 20 * torch.log10(spec / (n_fft / 4) + 1e-6)


def draw_clip(wave_ax: Any, spec_ax: Any, clip: Tensor, *, sample_rate: int) -> None:
    """Draw one clip `[C, T]`: every channel's waveform on `wave_ax`, the mono spectrogram on `spec_ax`."""
    clip = clip.detach().float().cpu()
    seconds = torch.arange(clip.shape[-1]) / sample_rate
    for channel in clip:
        wave_ax.plot(seconds.numpy(), channel.numpy(), linewidth=0.5)
    wave_ax.set_ylim(-1.05, 1.05)
    wave_ax.set_xlim(0, float(seconds[-1]))
    spec_ax.imshow(
        spectrogram_db(clip.mean(0)).numpy(),  # (freq, frames)
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=SPECTROGRAM_DB[0],
        vmax=SPECTROGRAM_DB[1],
        extent=(0, float(seconds[-1]), 0, sample_rate / 2000),
    )


def save_clips_png(
    path: str | os.PathLike,
    clips: Tensor,
    *,
    sample_rate: int,
    titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG with one row per clip of `clips` [N, C, T]: waveform (left) and spectrogram (right)."""
    plt = _pyplot()
    n = clips.shape[0]
    titles = list(titles) if titles is not None else [f"clip {i}" for i in range(n)]
    fig, axes = plt.subplots(n, 2, figsize=(11, 1.9 * n + 0.4), squeeze=False)
    for row, (clip, title) in enumerate(zip(clips, titles, strict=True)):
        wave_ax, spec_ax = axes[row]
        draw_clip(wave_ax, spec_ax, clip, sample_rate=sample_rate)
        wave_ax.set_ylabel(title, fontsize=8)
        spec_ax.set_ylabel("kHz", fontsize=8)
        if row == n - 1:
            wave_ax.set_xlabel("seconds")
            spec_ax.set_xlabel("seconds")
    return _save(fig, Path(path), dpi=90)


def save_clip_grid_png(
    path: str | os.PathLike,
    rows: Sequence[Sequence[Tensor]],
    *,
    sample_rate: int,
    titles: Sequence[Sequence[str]],
) -> Path:
    """Write a PNG of rows of clips (each `[C, T]`, rows may differ in length): each clip's waveform above
    its spectrogram, titled by the matching entry of `titles`; short rows leave their last cells empty."""
    plt = _pyplot()
    columns = max((len(row) for row in rows), default=0)
    if not rows or columns == 0:
        raise ValueError("save_clip_grid_png needs at least one clip")
    fig, axes = plt.subplots(2 * len(rows), columns, figsize=(3 * columns, 3.2 * len(rows)), squeeze=False)
    for r, (clips, names) in enumerate(zip(rows, titles, strict=True)):
        if len(clips) != len(names):
            raise ValueError(f"row {r}: {len(clips)} clips but {len(names)} titles")
        for col in range(columns):
            wave_ax, spec_ax = axes[2 * r, col], axes[2 * r + 1, col]
            if col >= len(clips):
                wave_ax.axis("off")
                spec_ax.axis("off")
                continue
            draw_clip(wave_ax, spec_ax, clips[col], sample_rate=sample_rate)
            wave_ax.set_title(names[col], fontsize=7)
            for ax in (wave_ax, spec_ax):
                ax.tick_params(labelsize=6)
    return _save(fig, Path(path), dpi=80)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, *, dpi: int) -> Path:
    """Lay out `fig`, write it to `path` (atomically; missing folders are created) and close it."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path
