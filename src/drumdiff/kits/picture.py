"""kit.png (`drumdiff kit --plot`): one row per pad, titled by its note, name and class; the pad's first
takes side by side, each waveform above its spectrogram (`drumdiff.plots`, the look of every picture).

Round robins are small variations of take 1, so a row shows at most PICTURE_TAKES of them: enough to see
how the takes differ, while a kit of many takes stays as legible as one of three. Matplotlib is imported
only when a picture is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from drumdiff.kits.pads import Pad

PICTURE = "kit.png"  # in the kit folder, listed in kit.json's files
PICTURE_TAKES = 3  # takes drawn per pad: the row titles still fit, and more would only make cells narrower


def save_kit_png(
    path: str | os.PathLike,
    pads: Sequence[Pad],
    classes: Sequence[str],
    takes: Sequence[Tensor],
    *,
    sample_rate: int,
) -> Path:
    """Write the kit picture: pad p's row shows the first PICTURE_TAKES clips of `takes[p]` [K, C, T],
    titled `NOTE NAME · CLASS` (`classes[p]`: the model's class it was sampled from)."""
    from drumdiff.plots import save_clip_rows_png

    rows, row_titles, clip_titles = [], [], []
    for pad, class_name, clips in zip(pads, classes, takes, strict=True):
        shown = list(clips[:PICTURE_TAKES])
        names = [f"take {k}" for k in range(1, len(shown) + 1)] if len(clips) > 1 else [""]
        if len(clips) > len(shown):
            names[-1] += f" of {len(clips)}"
        rows.append(shown)
        row_titles.append(f"{pad.note} {pad.name} · {class_name}")
        clip_titles.append(names)
    return save_clip_rows_png(
        path, rows, sample_rate=sample_rate, row_titles=row_titles, clip_titles=clip_titles
    )
