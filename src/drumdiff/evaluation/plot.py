"""The evaluation picture: log-mel spectrograms of generated and reference clips per class, and metric bars."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from drumdiff.files import atomic_path

if TYPE_CHECKING:
    from drumdiff.evaluation.clips import ClipSet
    from drumdiff.evaluation.report import Features


def save_plot(path: str | os.PathLike, report: dict[str, Any], *, per_class: int = 6) -> None:
    """PNG: a grid of log-mel spectrograms (a row of generated and of reference clips per class) + metric bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen, gen_f = report["_plot"]["gen"]
    ref, ref_f = report["_plot"]["ref"]
    names = report["classifier"]["class_names"]

    def groups(clips: ClipSet, feats: Features) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for k, c in enumerate(clips.classes):
            key = c if c in names else names[int(feats.probs[k].argmax())]  # unlabelled: by prediction
            out.setdefault(key, []).append(k)
        return out

    gen_groups, ref_groups = groups(gen, gen_f), groups(ref, ref_f)
    rows = []  # (label, spectra, members): a generated and a reference row per class
    for c in names:
        if c in gen_groups:
            rows.append((f"gen {c}", gen_f.spectra, gen_groups[c]))
        if c in ref_groups:
            rows.append((f"ref {c}", ref_f.spectra, ref_groups[c]))
    cols = per_class
    fig = plt.figure(figsize=(2.0 * cols + 4.5, 1.5 * len(rows) + 1.0))
    grid = fig.add_gridspec(max(1, len(rows)), cols + 2, width_ratios=[1] * cols + [0.15, 2.6])
    for r, (label, spectra, members) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(members):
                ax.imshow(spectra[members[c]], origin="lower", aspect="auto", vmin=-1, vmax=0, cmap="magma")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    bars = [
        ("tail dB", report["artifacts"]["tail_db_mean"], report["ref_artifacts"]["tail_db_mean"]),
        ("hiss dB", report["artifacts"]["hiss_db_mean"], report["ref_artifacts"]["hiss_db_mean"]),
        ("variety", report["variety"], report["ref_variety"]),
    ]
    ax = fig.add_subplot(grid[:, cols + 1])
    labels = [b[0] for b in bars]
    y = np.arange(len(bars))
    ax.barh(y - 0.2, [np.nan_to_num(b[1]) for b in bars], height=0.4, label="generated")
    ax.barh(y + 0.2, [np.nan_to_num(b[2]) for b in bars], height=0.4, label="reference")
    ax.set_yticks(y, labels)
    ax.axvline(0, color="black", linewidth=0.5)
    kid = report["kid"]
    title = f"FD {report['fd']:.2f}  KID {kid * 1000:.2f}e-3" if report["fd"] is not None else "FD -"
    if report.get("classes") and report["classes"]["accuracy"] is not None:
        title += f"\nclass accuracy {report['classes']['accuracy']:.2f}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
