"""`drumdiff data inspect`: what a prepared folder holds, per class and split, and a picture of examples."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from drumdiff import audio as audio_io
from drumdiff.data.manifest import REJECTED, SPLITS, load_manifest, read_previous
from drumdiff.errors import DrumdiffError
from drumdiff.plots import save_clip_grid_png


def inspect(
    root: str | os.PathLike, *, png: str | os.PathLike | None = None, examples: int = 4
) -> dict[str, Any]:
    """Counts, duration and loudness statistics per class and split; a PNG grid of examples per class.

    Returns {"stats": [...rows...], "png": path or None, "rejected": {reason: count}}.
    """
    root = Path(root)
    manifest = load_manifest(root)
    rejected_doc = read_previous(root / REJECTED)
    rejected = dict(Counter(r.get("reason", "?") for r in rejected_doc.get("rejected", [])))
    png_path = Path(png) if png is not None else root / "inspect.png"
    drawn = bool(manifest["classes"]) and examples > 0
    if drawn:
        _draw_examples(root, manifest, png_path, examples=examples)
    return {
        "stats": class_split_stats(manifest),
        "png": str(png_path) if drawn else None,
        "rejected": rejected,
    }


def class_split_stats(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (class, split) with items: count, original duration, cropped count, loudness spread."""
    rows = []
    for class_name in manifest["classes"]:
        for split in SPLITS:
            chosen = [it for it in manifest["items"] if it["class"] == class_name and it["split"] == split]
            if not chosen:
                continue
            durations = np.array([(it.get("original") or {}).get("duration_s", math.nan) for it in chosen])
            lufs = np.array([it.get("lufs") if it.get("lufs") is not None else math.nan for it in chosen])
            lufs = lufs[np.isfinite(lufs)]
            rows.append(
                {
                    "class": class_name,
                    "split": split,
                    "count": len(chosen),
                    "duration_s_median": round(float(np.nanmedian(durations)), 3),
                    "duration_s_max": round(float(np.nanmax(durations)), 3),
                    "cropped": sum(1 for it in chosen if "cropped_from_s" in (it.get("processing") or {})),
                    "lufs_median": round(float(np.median(lufs)), 2) if lufs.size else None,
                    "lufs_p10": round(float(np.percentile(lufs, 10)), 2) if lufs.size else None,
                    "lufs_p90": round(float(np.percentile(lufs, 90)), 2) if lufs.size else None,
                }
            )
    return rows


def _draw_examples(root: Path, manifest: dict[str, Any], png_path: Path, *, examples: int) -> None:
    """Save a grid to `png_path`: a row per class of up to `examples` clips spread over the class."""
    if not png_path.parent.is_dir():
        raise DrumdiffError(f"cannot write {png_path}: folder {png_path.parent} does not exist")
    rows, titles = [], []
    for class_name in manifest["classes"]:
        chosen = [it for it in manifest["items"] if it["class"] == class_name]
        picks = sorted({round(k * (len(chosen) - 1) / max(1, examples - 1)) for k in range(examples)})
        items = [chosen[k] for k in picks] if chosen else []
        rows.append([audio_io.read(root / item["path"])[0] for item in items])  # each (C, T)
        titles.append([f"{class_name}: {Path(item['source']).name[:28]}" for item in items])
    try:
        save_clip_grid_png(png_path, rows, sample_rate=manifest["sample_rate"], titles=titles)
    except OSError as error:
        raise DrumdiffError(f"cannot write {png_path}: {error.strerror or error}") from error
