"""Pictures of clips: each clip as its waveform and its spectrogram (matplotlib, no display needed).

`save_clips_png` draws one clip per row, waveform beside spectrogram; `save_clip_grid_png` draws rows of
clips, each waveform above its spectrogram; `save_clip_rows_png` (the kit picture) draws titled rows of clips
across a fixed width. All draw a clip with `draw_clip` and write the PNG atomically.
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


def save_clip_rows_png(
    path: str | os.PathLike,
    rows: Sequence[Sequence[Tensor]],
    *,
    sample_rate: int,
    row_titles: Sequence[str],
    clip_titles: Sequence[Sequence[str]] | None = None,
    width: float = 11.0,
) -> Path:
    """Write a PNG of titled rows of clips (each `[C, T]`): a row's clips side by side across `width`
    inches, whatever their number, each waveform close above its spectrogram; short rows leave their last
    cells empty. The row title sits above the row's first clip, `clip_titles` (if given) above each clip."""
    plt = _pyplot()
    columns = max((len(row) for row in rows), default=0)
    if not rows or columns == 0:
        raise ValueError("save_clip_rows_png needs at least one clip")
    if len(row_titles) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_titles)} row titles")
    fig = plt.figure(figsize=(width, 2.0 * len(rows) + 0.3))
    cells = fig.add_gridspec(len(rows), columns)  # one cell per clip, split in two below
    for r, clips in enumerate(rows):
        names = clip_titles[r] if clip_titles is not None else [""] * len(clips)
        if len(names) != len(clips):
            raise ValueError(f"row {r}: {len(clips)} clips but {len(names)} clip titles")
        for col, clip in enumerate(clips):
            pair = cells[r, col].subgridspec(2, 1, height_ratios=[0.8, 1.0], hspace=0.06)
            wave_ax = fig.add_subplot(pair[0])
            spec_ax = fig.add_subplot(pair[1])
            draw_clip(wave_ax, spec_ax, clip, sample_rate=sample_rate)
            wave_ax.tick_params(labelbottom=False, labelsize=6)  # the spectrogram below shows the time
            spec_ax.tick_params(labelsize=6)
            if names[col]:
                wave_ax.set_title(names[col], loc="right", fontsize=7)
            if col == 0:
                wave_ax.set_title(row_titles[r], loc="left", fontsize=9, fontweight="bold")
                spec_ax.set_ylabel("kHz", fontsize=7)
            if r == len(rows) - 1:
                spec_ax.set_xlabel("seconds", fontsize=7)
    return _save(fig, Path(path), dpi=90)


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
