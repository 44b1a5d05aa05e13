"""Evaluation of generated drum one-shots (`drumdiff evaluate`): the drum classifier, metrics, clip loading,
the report and its picture. Modules, bottom up: `classifier`, `metrics`, `clips`, `report`, `plot`."""

from drumdiff.evaluation.classifier import (
    DEFAULT_CLASSIFIER,
    ClassifierConfig,
    DrumClassifier,
    load_classifier,
    read_classifier_metadata,
    save_classifier,
)
from drumdiff.evaluation.clips import ClipSet, list_clips, load_clips
from drumdiff.evaluation.metrics import (
    FLOOR_DB,
    artifact_metrics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mean_pairwise_distance,
    nearest_neighbours,
    summarize_artifacts,
    waveform_similarity,
)
from drumdiff.evaluation.plot import save_plot
from drumdiff.evaluation.report import Features, compute_features, evaluate_folders, format_summary, to_json

__all__ = [
    "DEFAULT_CLASSIFIER", "FLOOR_DB", "ClassifierConfig", "ClipSet", "DrumClassifier", "Features",
    "artifact_metrics", "compute_features", "evaluate_folders", "format_summary", "frechet_distance",
    "inception_score", "kernel_inception_distance", "list_clips", "load_classifier", "load_clips",
    "mean_pairwise_distance", "nearest_neighbours", "read_classifier_metadata", "save_classifier", "save_plot",
    "summarize_artifacts", "to_json", "waveform_similarity",
]  # fmt: skip
