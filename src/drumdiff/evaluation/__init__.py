"""Evaluation of generated drum one-shots (`drumdiff evaluate`): the drum classifier, metrics, clip loading,
the report and its picture. Modules, bottom up: `classifier`, `metrics`, `clips`, `report`, `plot`.

The names below load their module on first use (PEP 562), so that importing one submodule, as `drumdiff
generate` does for its originality check, does not load the rest (clips, datasets, reports, plots).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "classifier": (
        "DEFAULT_CLASSIFIER", "ClassifierConfig", "DrumClassifier", "load_classifier", "read_classifier_metadata",
        "save_classifier",
    ),
    "clips": ("ClipSet", "list_clips", "load_clips"),
    "metrics": (
        "FLOOR_DB", "artifact_metrics", "frechet_distance", "inception_score", "kernel_inception_distance",
        "mean_pairwise_distance", "nearest_neighbours", "summarize_artifacts", "waveform_similarity",
    ),
    "plot": ("save_plot",),
    "report": ("Features", "compute_features", "evaluate_folders", "format_summary", "to_json"),
}  # fmt: skip
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
