"""Finding and loading the clips of a folder for evaluation: a prepared dataset or a plain folder of audio.

Clips are fitted the way `drumdiff data prepare` fits them (for the classifier); their artifact metrics are
measured on the raw decoded file. Unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from drumdiff import audio as audio_io
from drumdiff.data.manifest import SPLITS
from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.metrics import artifact_metrics

Split = Literal["all", "train", "val", "test"]


@dataclass
class ClipSet:
    """Clips of one folder, fitted for the classifier, with their raw-file artifact figures."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative to root, "/" separated
    classes: list[str | None] = field(default_factory=list)  # requested (generated) or true (reference) class
    audio: list[Tensor] = field(default_factory=list)  # fitted [C, length] each
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def stack(self) -> Tensor:
        """The fitted clips as one `[N, C, T]` tensor (empty when there are none)."""
        return torch.stack(self.audio) if self.audio else torch.zeros(0)  # (N, C, T)


def _is_audio(path: Path) -> bool:
    return path.name.lower().endswith(audio_io.AUDIO_EXTENSIONS) and not path.name.startswith(".")


def _sidecar_class(path: Path) -> tuple[bool, str | None]:
    """(found, class_name) from the `generate` record next to a clip (`clip.json` or `clip.wav.json`)."""
    for sidecar in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if sidecar.is_file():
            try:
                record = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and "class_name" in record:
                value = record["class_name"]
                return True, str(value) if value is not None else None
    return False, None


def list_clips(folder: str | os.PathLike, *, split: Split = "all") -> list[tuple[Path, str, str | None]]:
    """Audio files of a folder as (path, name relative to the folder, class).

    A prepared dataset (with `manifest.json`) lists its items of `split` with their classes. A plain folder is
    walked recursively; a clip's class comes from its sidecar JSON's "class_name", else from its first
    subfolder, else None.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DrumdiffError(f"{root} is not a folder")
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DrumdiffError(f"{manifest_path}: cannot read the dataset manifest ({error})") from error
        if isinstance(manifest, dict) and manifest.get("format") == "drumdiff-dataset":
            items = manifest.get("items", [])
            chosen = [
                (root / item["path"], item["path"], item.get("class"))
                for item in items
                if split == "all" or item.get("split") == split
            ]
            if items and not chosen:
                counts = {name: sum(item.get("split") == name for item in items) for name in SPLITS}
                held = ", ".join(f"{counts[name]} {name}" for name in SPLITS)
                raise DrumdiffError(
                    f"{root}: the prepared dataset has no {split} clips ({held}); "
                    f"choose another split (all, {', '.join(SPLITS)})"
                )
            return chosen
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_audio(path):
                continue
            rel = path.relative_to(root).as_posix()
            has_record, class_name = _sidecar_class(path)
            if not has_record and "/" in rel:
                class_name = rel.split("/")[0]
            found.append((path, rel, class_name))
    return found


def load_clips(
    entries: Sequence[tuple[Path, str, str | None]],
    *,
    root: Path,
    sample_rate: int,
    length: int,
    channels: int = 2,
    progress: bool = False,
    desc: str = "reading",
) -> ClipSet:
    """Decode each file, measure its raw artifacts and fit it like `data prepare`; bad files are skipped."""
    from tqdm.auto import tqdm

    from drumdiff.data import PrepareSettings, condition

    settings = PrepareSettings(sample_rate=sample_rate, length=length, channels=channels)
    clips = ClipSet(root=root)
    for path, rel, class_name in tqdm(entries, desc=desc, unit="clip", disable=not progress, leave=False):
        try:
            decoded = audio_io.decode(path)
        except DrumdiffError as error:
            clips.skipped.append({"file": str(path), "error": str(error)})
            continue
        except Exception as error:  # never let one odd file stop an evaluation
            clips.skipped.append({"file": str(path), "error": f"{path}: {type(error).__name__}: {error}"})
            continue
        if decoded.partial:  # a truncated file or a lying header: its numbers would mislead
            clips.skipped.append(
                {"file": str(path), "error": f"{path}: decoded only partly ({decoded.partial_reason})"}
            )
            continue
        artifacts = artifact_metrics(decoded.audio, decoded.sample_rate)
        fitted, _, _ = condition(decoded, settings)
        if fitted is None:  # silent or too short: prepare would reject it; keep it, fitted plainly
            x = audio_io.to_channels(decoded.audio, channels)
            if decoded.sample_rate != sample_rate:
                x = audio_io.resample(x, decoded.sample_rate, sample_rate)
            fitted = audio_io.fit_length(x, length, sample_rate=sample_rate)
        clips.files.append(rel)
        clips.classes.append(class_name)
        clips.audio.append(fitted.float())
        clips.artifacts.append(artifacts)
    return clips
