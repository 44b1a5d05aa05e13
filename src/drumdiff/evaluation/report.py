"""The evaluation report: classifier features of two (or three) clip folders, compared.

`evaluate_folders` returns the JSON-ready report whose every key is documented in docs/evaluation.md;
`to_json` and `format_summary` render it, `drumdiff.evaluation.plot.save_plot` draws it.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.classifier import classifier_path, load_classifier, read_classifier_metadata
from drumdiff.evaluation.clips import ClipSet, Split, list_clips, load_clips
from drumdiff.evaluation.metrics import (
    MEMORISED_SIMILARITY,
    NN_CANDIDATES,
    cosine_similarity,
    inception_score,
    mean_pairwise_distance,
    nearest_neighbours,
    set_distances,
    spectral_vectors,
    summarize_artifacts,
    waveform_similarity,
)
from drumdiff.files import file_digest

REPORT_FORMAT = "drumdiff-evaluation"
REPORT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# Classifier features


@dataclass
class Features:
    """Classifier outputs for a set of clips."""

    embeddings: np.ndarray  # (N, D) standardised
    probs: np.ndarray  # (N, K)
    spectra: np.ndarray  # (N, M, F) relative log-mel images in [-1, 0]


@torch.no_grad()
def compute_features(model: torch.nn.Module, audio: Tensor, *, batch_size: int = 32) -> Features:
    """Embeddings, class probabilities and log-mel images of `[N, C, T]` audio."""
    embs, probs, specs = [], [], []
    for start in range(0, len(audio), batch_size):
        chunk = audio[start : start + batch_size]
        emb, logits = model.embed_and_logits(chunk)
        embs.append(emb.double().numpy())
        probs.append(logits.double().softmax(dim=1).numpy())
        specs.append(model.frontend(chunk)[:, 0].numpy())
    if not embs:
        raise DrumdiffError("no clips to embed")
    return Features(np.concatenate(embs), np.concatenate(probs), np.concatenate(specs))


def _nearest_training_clips(
    gen: ClipSet, gen_f: Features, train: ClipSet, train_f: Features
) -> tuple[np.ndarray, np.ndarray]:
    """Waveform similarity of each generated clip to its nearest training clip: (similarity [N], index [N]).

    Only the NN_CANDIDATES training clips with the most similar log-mel images are compared sample by sample.
    """
    spectral = cosine_similarity(spectral_vectors(gen_f.spectra), spectral_vectors(train_f.spectra))  # (N, M)
    candidates = np.argsort(-spectral, axis=1)[:, :NN_CANDIDATES]  # (N, K)
    return waveform_similarity(gen.stack(), train.stack(), candidates)


# ----------------------------------------------------------------------------------------------------------
# The report


def evaluate_folders(
    gen_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    *,
    train_dir: str | os.PathLike | None = None,
    classes: bool = False,
    ref_split: Split = "all",
    train_split: Split = "train",
    classifier: str | os.PathLike | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compare generated clips with reference clips; returns the JSON-ready report (docs/evaluation.md)."""
    from drumdiff import __version__

    classifier_file = classifier_path(classifier)
    model = load_classifier(classifier_file)
    cfg = model.config
    names = list(cfg.class_names)

    def load(folder: str | os.PathLike, split: Split, what: str) -> ClipSet:
        entries = list_clips(folder, split=split)
        clips = load_clips(
            entries,
            root=Path(folder),
            sample_rate=cfg.sample_rate,
            length=cfg.length,
            progress=progress,
            desc=what,
        )
        for bad in clips.skipped:
            if log:
                log(f"skipped {bad['error']}")
        if len(clips) == 0:
            raise DrumdiffError(f"{folder}: no readable audio clips ({len(clips.skipped)} skipped)")
        return clips

    gen = load(gen_dir, "all", "generated")
    ref = load(ref_dir, ref_split, "reference")
    gen_f = compute_features(model, gen.stack())
    ref_f = compute_features(model, ref.stack())

    metadata = read_classifier_metadata(classifier_file)
    provenance = metadata.get("provenance", {})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "drumdiff_version": __version__,
        "classifier": {
            "file": str(classifier_file),
            "sha256": file_digest(classifier_file),
            "class_names": names,
            "val_macro_accuracy": provenance.get("val_macro_accuracy"),
        },
        "gen_dir": str(gen_dir),
        "ref_dir": str(ref_dir),
        "ref_split": ref_split,
        "num_gen": len(gen),
        "num_ref": len(ref),
        "skipped": gen.skipped + ref.skipped,
    }
    report.update(set_distances(gen_f.embeddings, ref_f.embeddings))
    report["variety"] = round(mean_pairwise_distance(gen_f.embeddings), 4)
    report["ref_variety"] = round(mean_pairwise_distance(ref_f.embeddings), 4)
    report["artifacts"] = summarize_artifacts(gen.artifacts)
    report["ref_artifacts"] = summarize_artifacts(ref.artifacts)

    predicted = gen_f.probs.argmax(1)
    clip_rows = []
    for k, rel in enumerate(gen.files):
        clip_rows.append(
            {
                "file": rel,
                "class_requested": gen.classes[k],
                "class_predicted": names[int(predicted[k])],
                "confidence": round(float(gen_f.probs[k].max()), 4),
                **{
                    key: gen.artifacts[k][key]
                    for key in (
                        "tail_db",
                        "hiss_db",
                        "hiss_level_db",
                        "dc_offset",
                        "clipped_samples",
                        "silent",
                    )
                },
            }
        )

    report["classes"] = _class_report(gen, ref, gen_f, ref_f, names) if classes else None

    report["train"] = None
    if train_dir is not None:
        train = load(train_dir, train_split, "training set")
        train_f = compute_features(model, train.stack())
        sims, index = _nearest_training_clips(gen, gen_f, train, train_f)
        emb_sims, _ = nearest_neighbours(gen_f.embeddings, train_f.embeddings)
        memorised = [gen.files[k] for k in range(len(gen)) if sims[k] >= MEMORISED_SIMILARITY]
        report["train"] = {
            "train_dir": str(train_dir),
            "train_split": train_split,
            "num_train": len(train),
            "nn_similarity_mean": round(float(sims.mean()), 4),
            "nn_similarity_max": round(float(sims.max()), 4),
            "nn_embedding_similarity_mean": round(float(emb_sims.mean()), 4),
            "memorised_threshold": MEMORISED_SIMILARITY,
            "memorised": len(memorised),
            "memorised_files": memorised,
        }
        report["skipped"] += train.skipped
        for k, row in enumerate(clip_rows):
            row["nn_similarity"] = round(float(sims[k]), 4)
            row["nn_file"] = train.files[int(index[k])]
    report["clips"] = clip_rows
    report["_plot"] = {"gen": (gen, gen_f), "ref": (ref, ref_f)}  # for save_plot; removed before JSON output
    return report


def _class_report(
    gen: ClipSet, ref: ClipSet, gen_f: Features, ref_f: Features, names: list[str]
) -> dict[str, Any]:
    """Accuracy against the requested class, Inception-style scores and per-class FD / KID."""
    predicted = gen_f.probs.argmax(1)
    known = [k for k, c in enumerate(gen.classes) if c in names]
    unknown = Counter(str(c) for c in gen.classes if c not in names)
    per_class: dict[str, Any] = {}
    for index, name in enumerate(names):
        g = [k for k in known if gen.classes[k] == name]
        r = [k for k, c in enumerate(ref.classes) if c == name]
        entry: dict[str, Any] = {
            "num_gen": len(g),
            "num_ref": len(r),
            "accuracy": round(float(np.mean(predicted[g] == index)), 4) if g else None,
            "predicted": _class_counts(predicted[g], names),
        }
        entry.update(set_distances(gen_f.embeddings[g], ref_f.embeddings[r]))
        per_class[name] = entry
    accuracies = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "num_with_class": len(known),
        "unknown_classes": dict(unknown),
        "accuracy": round(float(np.mean([predicted[k] == names.index(gen.classes[k]) for k in known])), 4)
        if known
        else None,
        "macro_accuracy": round(float(np.mean(accuracies)), 4) if accuracies else None,
        "inception_score": round(inception_score(gen_f.probs), 4),
        "ref_inception_score": round(inception_score(ref_f.probs), 4),
        "predicted": _class_counts(predicted, names),
        "per_class": per_class,
    }


def _class_counts(predicted: np.ndarray, names: list[str]) -> dict[str, int]:
    """How many of the `[N]` predicted class indices fall in each class, by name (classes seen only)."""
    return dict(Counter(names[int(p)] for p in predicted))


def to_json(report: dict[str, Any]) -> str:
    """The report as one JSON object (NaN written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=2)


def format_summary(report: dict[str, Any]) -> str:
    """A short human-readable summary of the report."""

    def fmt(value: Any, digits: int = 3) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    art, ref_art = report["artifacts"], report["ref_artifacts"]
    lines = [
        f"generated {report['num_gen']} clips in {report['gen_dir']}; reference {report['num_ref']} clips in "
        f"{report['ref_dir']} (split {report['ref_split']})",
        f"classifier {Path(report['classifier']['file']).name} sha256 {report['classifier']['sha256'][:12]}",
        "",
        f"{'metric':<28}{'generated':>12}{'reference':>12}",
        f"{'FD (lower is better)':<28}{fmt(report['fd']):>12}",
        f"{'KID x1000 (+- std)':<28}"
        + (
            f"{report['kid'] * 1000:>8.2f} +- {report['kid_std'] * 1000:.2f}"
            if report["kid"] is not None
            else "-"
        ),
        f"{'variety':<28}{fmt(report['variety']):>12}{fmt(report['ref_variety']):>12}",
        f"{'tail noise dB (mean)':<28}{fmt(art['tail_db_mean'], 1):>12}{fmt(ref_art['tail_db_mean'], 1):>12}",
        f"{'hiss >14 kHz dB (mean)':<28}{fmt(art['hiss_db_mean'], 1):>12}{fmt(ref_art['hiss_db_mean'], 1):>12}",
        f"{'hiss level dB (mean)':<28}{fmt(art['hiss_level_db_mean'], 1):>12}"
        f"{fmt(ref_art['hiss_level_db_mean'], 1):>12}",
        f"{'DC offset (max)':<28}{fmt(art['dc_offset_max'], 4):>12}{fmt(ref_art['dc_offset_max'], 4):>12}",
        f"{'clipped clips':<28}{art['clipped_clips']:>12}{ref_art['clipped_clips']:>12}",
        f"{'silent clips':<28}{art['silent_clips']:>12}{ref_art['silent_clips']:>12}",
    ]
    if report["fd"] is None:
        lines.append("(FD, KID and variety need at least 2 clips in each set)")
    classes = report.get("classes")
    if classes:
        lines += [
            f"{'class accuracy':<28}{fmt(classes['accuracy']):>12}",
            f"{'inception score':<28}{fmt(classes['inception_score']):>12}{fmt(classes['ref_inception_score']):>12}",
            "",
            f"{'class':<12}{'gen':>5}{'ref':>5}{'accuracy':>10}{'FD':>10}{'KID x1000':>11}",
        ]
        for name, entry in classes["per_class"].items():
            kid = f"{entry['kid'] * 1000:.2f}" if entry["kid"] is not None else "-"
            lines.append(
                f"{name:<12}{entry['num_gen']:>5}{entry['num_ref']:>5}{fmt(entry['accuracy']):>10}"
                f"{fmt(entry['fd']):>10}{kid:>11}"
            )
    train = report.get("train")
    if train:
        lines += [
            "",
            f"nearest training clip: similarity mean {train['nn_similarity_mean']:.3f}, max "
            f"{train['nn_similarity_max']:.3f}; {train['memorised']} memorised copies "
            f"(>= {train['memorised_threshold']})",
        ]
        lines += [f"  memorised: {name}" for name in train["memorised_files"]]
    if report["skipped"]:
        lines += ["", f"skipped {len(report['skipped'])} files:"]
        lines += [f"  {bad['error']}" for bad in report["skipped"]]
    return "\n".join(lines)
