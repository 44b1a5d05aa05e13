"""The label check of `drumdiff data inspect`: clips of a prepared folder whose sound the drum classifier
confidently puts in another class than their label, so a user can fix a mislabelled folder before training.

Only labels the classifier knows are checked (kick, snare, hihat, percussion for the shipped one); clips of
other classes are counted as unchecked. A flagged clip is a question, not a verdict: the classifier is right on
about 9 of 10 clips from kits it has never heard (docs/evaluation.md), and some sounds sit on a class boundary
(a floor tom heard as a kick).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from drumdiff import audio as audio_io
from drumdiff.data.manifest import load_manifest
from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.classifier import classifier_path, load_classifier
from drumdiff.progress import Progress

DEFAULT_CONFIDENCE = 0.9  # probability of the other class from which a clip is listed
BATCH = 32


@dataclass(frozen=True)
class Suspect:
    """One clip whose sound disagrees with its label."""

    path: str  # within the prepared folder
    source: str  # the file it was prepared from (kit file, SoundFont region, ...)
    split: str
    label: str
    predicted: str
    probability: float  # of `predicted`
    label_probability: float


@dataclass(frozen=True)
class LabelCheck:
    """The result: suspects (most confident first), how many clips were checked, and with which classifier."""

    suspects: list[Suspect]
    checked: int
    unchecked: dict[str, int]  # class the classifier does not know -> clips
    confidence: float
    classifier: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suspects": [asdict(s) for s in self.suspects]}


def check_labels(
    root: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = False,
) -> LabelCheck:
    """Classify every clip of the prepared folder `root`; list those where another class has p >= confidence."""
    if not 0.5 <= confidence < 1.0:
        raise DrumdiffError(f"--confidence must be from 0.5 to below 1, got {confidence:g}")
    root = Path(root)
    manifest = load_manifest(root)
    model = load_classifier(classifier)
    known = list(model.class_names)
    items = [i for i in manifest["items"] if i["class"] in known]
    unchecked: dict[str, int] = {}
    for item in manifest["items"]:
        if item["class"] not in known:
            unchecked[item["class"]] = unchecked.get(item["class"], 0) + 1
    suspects: list[Suspect] = []
    bar = Progress(len(items), desc="label check", unit="clip") if progress else None
    try:
        for first in range(0, len(items), BATCH):
            batch = items[first : first + BATCH]
            audio = torch.stack([_clip(root, item, manifest) for item in batch])  # (B, C, T)
            with torch.no_grad():
                probs = model(audio).softmax(dim=1)  # (B, K)
            for item, p in zip(batch, probs, strict=True):
                best = int(p.argmax())
                label = known.index(item["class"])
                if best != label and float(p[best]) >= confidence:
                    suspects.append(
                        Suspect(
                            path=item["path"],
                            source=item.get("source", item["path"]),
                            split=item["split"],
                            label=item["class"],
                            predicted=known[best],
                            probability=round(float(p[best]), 4),
                            label_probability=round(float(p[label]), 4),
                        )
                    )
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    suspects.sort(key=lambda s: (-s.probability, s.path))
    return LabelCheck(
        suspects=suspects,
        checked=len(items),
        unchecked=unchecked,
        confidence=confidence,
        classifier=str(classifier_path(classifier)),
    )


def _clip(root: Path, item: dict[str, Any], manifest: dict[str, Any]) -> torch.Tensor:
    """The prepared clip `[C, T]` of one manifest item (prepared files already have the folder's format)."""
    path = root / item["path"]
    audio, rate = audio_io.read(path)
    if rate != manifest["sample_rate"]:
        raise DrumdiffError(f"{path}: {rate} Hz, the folder's manifest says {manifest['sample_rate']} Hz")
    audio = audio_io.to_channels(audio, manifest["channels"])
    return audio_io.fit_length(audio, manifest["length"], sample_rate=rate)
