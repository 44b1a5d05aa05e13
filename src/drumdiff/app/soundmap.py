"""The Map tab without Gradio: a session's sounds as points on a 2-D map of the shipped classifier's embeddings.

Each clip is embedded once by the drum classifier of `drumdiff evaluate` (offline, shipped in the package);
the embeddings are projected to 2-D with PCA and drawn with matplotlib, coloured by the class the classifier
hears. `draw_map` returns where each point landed in the PNG, so that a click on the picture (pixel
coordinates) finds its sound with `nearest`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drumdiff.app.session import Clip

MAP_SIZE = (7.5, 5.0)  # inches at MAP_DPI: a 750 x 500 picture
MAP_DPI = 100
PICK_RADIUS = 24.0  # pixels: a click this close to a point picks it
MARKERS = {"generated": "o", "uploaded": "s"}


@dataclass(frozen=True)
class MapPoint:
    """Where a clip is drawn, in pixels of the PNG from its top-left corner."""

    clip_id: str
    x: float
    y: float


class Embedder:
    """The shipped drum classifier, loaded on first use; fills in `Clip.embedding` and `Clip.heard_as`."""

    def __init__(self, path: str | os.PathLike | None = None, *, batch_size: int = 16) -> None:
        self.path = path
        self.batch_size = batch_size
        self._classifier = None
        self._lock = threading.Lock()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._load().class_names

    def embed(self, clips: Sequence[Clip]) -> None:
        """Embed the clips that have no embedding yet (the classifier's format: its rate and length)."""
        todo = [c for c in clips if c.embedding is None]
        if not todo:
            return
        with self._lock:
            classifier = self._load()
            for first in range(0, len(todo), self.batch_size):
                chunk = todo[first : first + self.batch_size]
                batch = torch.stack([self._fit(c) for c in chunk])  # (B, C, T)
                with torch.inference_mode():
                    embedding, logits = classifier.embed_and_logits(batch)  # (B, D), (B, K)
                for clip, e, k in zip(chunk, embedding.numpy(), logits.argmax(1).tolist(), strict=True):
                    clip.embedding = e.astype(np.float32)
                    clip.heard_as = classifier.class_names[k]

    def _load(self):
        if self._classifier is None:
            from drumdiff.evaluation import load_classifier

            self._classifier = load_classifier(self.path)
        return self._classifier

    def _fit(self, clip: Clip) -> torch.Tensor:
        from drumdiff import audio as audio_io

        config = self._classifier.config
        audio = audio_io.to_channels(clip.tensor(), 2)
        if clip.sample_rate != config.sample_rate:
            audio = audio_io.resample(audio, clip.sample_rate, config.sample_rate)
        return audio_io.fit_length(audio, config.length, sample_rate=config.sample_rate)


def project_2d(embeddings: np.ndarray) -> np.ndarray:
    """PCA of [N, D] embeddings to [N, 2] (one point: the origin; rank 1: second coordinate 0)."""
    x = np.asarray(embeddings, dtype=np.float64)
    out = np.zeros((len(x), 2))
    if len(x) < 2:
        return out
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
    k = min(2, len(vt))
    components = vt[:k] * np.sign(vt[:k, [0]] + 1e-12)  # a fixed sign, so the map does not flip at random
    out[:, :k] = centred @ components.T
    return out


def draw_map(
    path: str | os.PathLike,
    clips: Sequence[Clip],
    *,
    class_names: Sequence[str],
    selected: str | None = None,
) -> list[MapPoint]:
    """Draw embedded clips as a PNG (colour: class heard; marker: origin; ring: kept / selected).

    Returns each clip's pixel position in the PNG (origin top-left), for `nearest`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=MAP_SIZE, dpi=MAP_DPI)
    try:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("first principal component")
        ax.set_ylabel("second principal component")
        ax.set_title("Sounds of this session, by the drum classifier's embedding", fontsize=10)
        xy = project_2d(np.stack([c.embedding for c in clips])) if clips else np.zeros((0, 2))  # (N, 2)
        if clips:
            _draw_points(ax, clips, xy, class_names=class_names, selected=selected)
        else:
            ax.text(0.5, 0.5, "No sounds yet: generate some, or add your own", ha="center", va="center")
        fig.tight_layout()
        fig.canvas.draw()
        height = fig.get_size_inches()[1] * MAP_DPI
        pixels = ax.transData.transform(xy) if clips else xy  # (N, 2) display pixels, origin bottom-left
        points = [
            MapPoint(c.id, float(px), float(height - py)) for c, (px, py) in zip(clips, pixels, strict=True)
        ]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=MAP_DPI)  # no bbox_inches="tight": it would move the points
    finally:
        plt.close(fig)
    return points


def _draw_points(
    ax, clips: Sequence[Clip], xy: np.ndarray, *, class_names: Sequence[str], selected: str | None
):
    """Scatter the clips at xy [N, 2] with a legend of classes and markers."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    span = float(np.ptp(xy, axis=0).max()) or 1.0
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2
    ax.set_xlim(centre[0] - 0.6 * span, centre[0] + 0.6 * span)
    ax.set_ylim(centre[1] - 0.6 * span, centre[1] + 0.6 * span)
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(class_names)}
    for clip, (x, y) in zip(clips, xy, strict=True):
        ax.scatter(
            [x],
            [y],
            s=90 if clip.kept else 60,
            marker=MARKERS.get(clip.origin, "o"),
            color=colours.get(clip.heard_as, "grey"),
            edgecolors="black" if clip.kept else "none",
            linewidths=1.5,
            zorder=3,
        )
        if clip.id == selected:
            ax.scatter([x], [y], s=320, facecolors="none", edgecolors="black", linewidths=2, zorder=4)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=f"heard as {n}") for n, c in colours.items()]
    handles += [
        Line2D([], [], marker="s", ls="", color="grey", label="uploaded"),
        Line2D([], [], marker="o", ls="", color="white", mec="black", label="kept"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)


def nearest(points: Sequence[MapPoint], x: float, y: float, *, radius: float = PICK_RADIUS) -> str | None:
    """The id of the clip drawn nearest to pixel (x, y), or None when none is within `radius` pixels."""
    best = min(points, key=lambda p: (p.x - x) ** 2 + (p.y - y) ** 2, default=None)
    if best is None or (best.x - x) ** 2 + (best.y - y) ** 2 > radius**2:
        return None
    return best.clip_id
