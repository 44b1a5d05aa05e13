"""Originality: how close each generated clip comes to its nearest training clip, from a small shipped index.

The index (`<model file stem>.index.safetensors`, beside the model file) holds one vector per training clip and
the clip's id (manifest path, kit, class). The vector is the classifier's own log-mel front end, floored at
-40 dB below the clip's loudest bin and averaged over five time segments (0-46, 46-93, 93-186, 186-372 ms and
the rest) per mel band: 64 x 5 = 320 numbers, stored unit-length in float16 (about 0.6 KB per clip). The
similarity of two clips is the Pearson correlation of these profiles: 1.0 for the same recording (also after
a gain change, a polarity flip, a few samples' shift, noise 60 dB down, a resample or an fp16 round trip),
below about 0.99 for real clips from different kits. The measure was chosen by measurement on the real
corpus, where the classifier's 64-d embedding cannot tell a copy from another kit's drum of the same kind
(docs/evaluation.md, "Originality", has the numbers and the default threshold).

    python -m drumdiff.evaluation.originality DATA --out MODEL.index.safetensors   # build an index

The file is `.safetensors`: tensor `vectors` [N, D] float16 and JSON metadata (format name and version, the
classifier's sha256, the dataset manifest's sha256, the measure, the clip ids, and the yardstick and
near-copy numbers measured when it was built).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drumdiff import audio as audio_io
from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.classifier import DrumClassifier, classifier_path, load_classifier
from drumdiff.evaluation.metrics import MEMORISED_SIMILARITY, NN_CANDIDATES, NN_SAMPLES, waveform_similarity
from drumdiff.files import atomic_path, check_format, file_digest, stable_seed

FORMAT = "drumdiff-originality-index"
FORMAT_VERSION = 1
INDEX_SUFFIX = ".index.safetensors"  # = commands.session.INDEX_SUFFIX (tested)
MEASURE = "logmel-profile-correlation"
PROFILE_FLOOR_DB = -40.0  # below the clip's loudest log-mel bin: a noise floor 50-60 dB down hides no copy
SEGMENT_FRAMES = (0, 4, 8, 16, 32)  # time segments start at these frames (hop 512 at 44.1 kHz: 11.6 ms each)
DEFAULT_MAX_SIMILARITY = 0.99  # above it a clip is reported as a near-copy (docs/evaluation.md)
MAX_REDRAWS = 5  # new seeds tried per clip before the least similar draw is kept
PERCENTILES = (50, 95, 99, 100)
NEAR_COPY_CLIPS = 64  # training clips changed slightly for the near-copy numbers recorded in the index
BATCH = 32


# ----------------------------------------------------------------------------------------------------------
# The measure


def conform(clips: Tensor, sample_rate: int, classifier: DrumClassifier) -> Tensor:
    """Clips `[M, C, T]` at `sample_rate` -> the classifier's rate and length `[M, C, L]` (cropped with a fade,
    or zero-padded at the end, like `data prepare` does)."""
    cfg = classifier.config
    out = []
    for clip in clips.float().cpu():
        if sample_rate != cfg.sample_rate:
            clip = audio_io.resample(clip, sample_rate, cfg.sample_rate)
        out.append(audio_io.fit_length(clip, cfg.length, sample_rate=cfg.sample_rate))
    return torch.stack(out)  # (M, C, L)


@torch.no_grad()
def profile_vectors(classifier: DrumClassifier, audio: Tensor) -> Tensor:
    """The originality vectors `[M, D]` (float32, unit length, mean removed) of audio `[M, C, L]` already in
    the classifier's format: their dot product is the similarity."""
    floor = max(PROFILE_FLOOR_DB / classifier.config.top_db, -1.0)
    rows = []
    for start in range(0, len(audio), BATCH):
        image = classifier.frontend(audio[start : start + BATCH])[:, 0].clamp_min(floor)  # (B, M, N)
        frames = image.shape[-1]
        edges = [e for e in SEGMENT_FRAMES if e < frames] + [frames]
        segments = [image[:, :, a:b].mean(dim=2) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        profile = torch.stack(segments, dim=2).flatten(1).double()  # (B, M * S)
        profile = profile - profile.mean(dim=1, keepdim=True)
        rows.append(profile / profile.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.cat(rows).float() if rows else torch.zeros(0, 0)


# ----------------------------------------------------------------------------------------------------------
# The index


@dataclass
class OriginalityIndex:
    """Training clips' originality vectors and ids; `nearest` finds each query's most similar clip."""

    vectors: Tensor  # (N, D) float16, unit rows
    clips: list[dict[str, Any]]  # per row: {"path": manifest path, "group": kit, "class": class name}
    classifier_sha256: str
    measure: str = MEASURE
    info: dict[str, Any] = field(default_factory=dict)  # manifest sha256, split, yardstick, near copies, ...

    def __len__(self) -> int:
        return len(self.clips)

    def nearest(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """Similarity of each `[M, D]` query vector to its nearest clip, and that clip's row: `([M], [M])`."""
        if vectors.dim() != 2 or vectors.shape[1] != self.vectors.shape[1]:
            raise DrumdiffError(
                f"originality vectors of shape {tuple(vectors.shape)} do not fit this index "
                f"({self.vectors.shape[1]} numbers per clip)"
            )
        bank = self.vectors.float()
        bank = bank / bank.norm(dim=1, keepdim=True).clamp_min(1e-12)  # undo the float16 rounding of the norm
        best, row = [], []
        for start in range(0, len(vectors), 1024):
            sims = vectors[start : start + 1024].float() @ bank.T  # (m, N)
            value, where = sims.max(dim=1)
            best.append(value.clamp(-1.0, 1.0))
            row.append(where)
        return torch.cat(best), torch.cat(row)

    def record(self, similarity: float, row: int) -> dict[str, Any]:
        """The `nearest_training_clip` record: similarity (4 decimals) and the clip's id."""
        clip = self.clips[row]
        return {
            "similarity": round(float(similarity), 4),
            "clip": clip["path"],
            "group": clip.get("group"),
            "class": clip.get("class"),
        }


def index_from_clips(
    clips: Tensor,
    sample_rate: int,
    *,
    ids: list[dict[str, Any]],
    classifier: str | os.PathLike | None = None,
    info: dict[str, Any] | None = None,
) -> OriginalityIndex:
    """An index of any clips `[N, C, T]` (ids: one {"path", "group", "class"} per clip); classifier: its file
    (default: the shipped one). `build_index` does this for a prepared dataset and adds the yardstick."""
    if len(clips) == 0 or len(ids) != len(clips):
        raise DrumdiffError(
            f"an index needs at least one clip and one id per clip, got {len(clips)} clips, {len(ids)} ids"
        )
    path = classifier_path(classifier)
    model = load_classifier(path)
    vectors = profile_vectors(model, conform(clips, sample_rate, model))
    return OriginalityIndex(
        vectors.half(), [dict(i) for i in ids], file_digest(path), MEASURE, dict(info or {})
    )


def save_index(path: str | os.PathLike, index: OriginalityIndex) -> Path:
    """Write the index as `.safetensors` (float16 vectors + JSON metadata), atomically."""
    from safetensors.torch import save_file

    from drumdiff import __version__

    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),  # safetensors metadata holds strings only
        "measure": index.measure,
        "measure_params": json.dumps({"floor_db": PROFILE_FLOOR_DB, "segment_frames": list(SEGMENT_FRAMES)}),
        "classifier_sha256": index.classifier_sha256,
        "clips": json.dumps(index.clips),
        "info": json.dumps(index.info),
        "drumdiff_version": __version__,
    }
    tensors = {"vectors": index.vectors.detach().cpu().half().contiguous()}
    try:
        with atomic_path(path) as tmp:  # a failed write leaves the old file (if any) and no temp file behind
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as error:
        raise DrumdiffError(
            f"{path}: cannot write the originality index ({error.strerror or error})"
        ) from error
    return path


def load_index(path: str | os.PathLike, *, classifier_sha256: str | None = None) -> OriginalityIndex:
    """Read an index file; with `classifier_sha256`, refuse an index made with another classifier."""
    from safetensors import safe_open

    path = Path(path)
    kind = "drumdiff originality index"
    if not path.is_file():
        raise DrumdiffError(f"{path}: no such originality index file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            check_format(
                metadata,
                source=path,
                kind=kind,
                format=FORMAT,
                version=str(FORMAT_VERSION),
                version_key="format_version",
            )
            vectors = handle.get_tensor("vectors")
        clips = json.loads(metadata["clips"])
        info = json.loads(metadata.get("info", "{}"))
    except DrumdiffError:
        raise
    except Exception as error:  # a truncated, corrupt or foreign file: name it
        raise DrumdiffError(f"{path}: not a readable {kind} ({type(error).__name__}: {error})") from error
    if metadata.get("measure") != MEASURE:
        raise DrumdiffError(
            f"{path}: the index uses the measure {metadata.get('measure')!r}, this drumdiff {MEASURE!r}; "
            + _rebuild_hint(path)
        )
    if vectors.dim() != 2 or not isinstance(clips, list) or len(clips) != len(vectors) or not len(clips):
        ids = len(clips) if isinstance(clips, list) else "no"
        raise DrumdiffError(f"{path}: damaged {kind} ({tuple(vectors.shape)} vectors for {ids} clip ids)")
    if not bool(torch.isfinite(vectors).all()):
        raise DrumdiffError(f"{path}: damaged {kind} (NaN or infinite vectors)")
    made_with = metadata.get("classifier_sha256", "")
    if classifier_sha256 is not None and made_with != classifier_sha256:
        raise DrumdiffError(
            f"{path}: the index was built with another classifier (sha256 {made_with[:12]}..., the classifier "
            f"here is {classifier_sha256[:12]}...); " + _rebuild_hint(path)
        )
    return OriginalityIndex(vectors, clips, made_with, MEASURE, info)


def _rebuild_hint(path: Path) -> str:
    return f"rebuild it with `python -m drumdiff.evaluation.originality DATA --out {path}`"


def index_path_for(model_path: str | os.PathLike) -> Path:
    """Where a model's index lives: beside it, `<model file stem>.index.safetensors`."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + INDEX_SUFFIX)


# ----------------------------------------------------------------------------------------------------------
# Checking clips


@dataclass
class OriginalityCheck:
    """An index and the classifier whose front end made it: `check(clips, rate)` -> one record per clip."""

    index: OriginalityIndex
    classifier: DrumClassifier
    path: Path | None = None  # the index file

    def check(self, clips: Tensor, sample_rate: int) -> list[dict[str, Any]]:
        """`nearest_training_clip` records of clips `[M, C, T]`: similarity, clip path, kit, class."""
        return check_originality(clips, sample_rate, index=self.index, classifier=self.classifier)


def redraw_near_copy(
    first: Tensor,
    seed: int,
    *,
    draw: Callable[[int], Tensor],
    seeds: Iterable[int],
    nearest: Callable[[Tensor], dict[str, Any]],
    limit: float,
    say: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Tensor, dict[str, Any], list[int]]:
    """Draw a clip again while it is a near-copy: `first` (drawn from `seed`) is kept when `nearest(clip)`'s
    similarity is at most `limit`; else `draw(s)` for the next of `seeds` (`MAX_REDRAWS` at most), until one
    is. When every draw is above `limit` the least similar is kept. `say` gets a line per re-draw, `warn` one
    when the least similar is kept. Returns (the kept clip, its nearest record, every seed drawn in order with the kept one last)."""
    draws = [(first, nearest(first), seed)]
    for next_seed in itertools.islice(seeds, MAX_REDRAWS):
        if draws[-1][1]["similarity"] <= limit:
            break
        if say is not None:
            near = draws[-1][1]
            say(f"similarity {near['similarity']:.4f} to the training clip {near['clip']} is above "
                f"{limit:g}; re-drawing it with seed {next_seed}")  # fmt: skip
        clip = draw(next_seed)
        draws.append((clip, nearest(clip), next_seed))
    if draws[-1][1]["similarity"] > limit:
        kept = min(range(len(draws)), key=lambda k: (draws[k][1]["similarity"], k))
        if warn is not None:
            warn(f"every one of {len(draws)} draws is above {limit:g}; kept the least similar "
                f"(seed {draws[kept][2]}, similarity {draws[kept][1]['similarity']:.4f})")  # fmt: skip
        draws.append(draws.pop(kept))
    return draws[-1][0], draws[-1][1], [d[2] for d in draws]


def open_check(index: str | os.PathLike, *, classifier: str | os.PathLike | None = None) -> OriginalityCheck:
    """Load an index file and the classifier (default: the shipped one), refusing an index made with another."""
    path = classifier_path(classifier)
    model = load_classifier(path)  # a missing or broken classifier file: an error naming it
    return OriginalityCheck(load_index(index, classifier_sha256=file_digest(path)), model, Path(index))


def find_index(model_path: str | os.PathLike, index: str | os.PathLike | None = None) -> Path | None:
    """`index` when given (it must exist), else the index beside the model file, else None."""
    if index is not None:
        if not Path(index).is_file():
            raise DrumdiffError(f"{index}: no such originality index file")
        return Path(index)
    beside = index_path_for(model_path)
    return beside if beside.is_file() else None


def open_for_model(
    model_path: str | os.PathLike,
    *,
    index: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
) -> OriginalityCheck | None:
    """The originality check of a model file: `index`, else the index beside the model; None without one."""
    found = find_index(model_path, index)
    return open_check(found, classifier=classifier) if found is not None else None


def similarity_of(
    clips: Tensor, sample_rate: int, *, index: OriginalityIndex, classifier: DrumClassifier
) -> tuple[Tensor, Tensor]:
    """Nearest-training-clip similarity of clips `[M, C, T]` at `sample_rate`: `(similarity [M], row [M])`."""
    if clips.dim() != 3:
        raise DrumdiffError(f"expected clips [M, C, T], got shape {tuple(clips.shape)}")
    return index.nearest(profile_vectors(classifier, conform(clips, sample_rate, classifier)))


def check_originality(
    clips: Tensor, sample_rate: int, *, index: OriginalityIndex, classifier: DrumClassifier
) -> list[dict[str, Any]]:
    """One `nearest_training_clip` record per clip `[M, C, T]`: {"similarity", "clip", "group", "class"}."""
    sims, rows = similarity_of(clips, sample_rate, index=index, classifier=classifier)
    return [index.record(s, r) for s, r in zip(sims.tolist(), rows.tolist(), strict=True)]


# ----------------------------------------------------------------------------------------------------------
# Building an index from a prepared dataset, with the yardstick


def build_index(
    dataset_dir: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    split: str = "train",
    progress: bool | None = None,
) -> OriginalityIndex:
    """Index the `split` clips of a prepared dataset; records the yardstick (each clip's nearest clip from
    another kit, and the val/test clips' nearest training clip) and near-copy numbers in `info`.
    `progress`: None shows a bar on a terminal only."""
    from drumdiff.data.manifest import MANIFEST, SPLITS, load_manifest
    from drumdiff.progress import Progress

    root = Path(dataset_dir)
    manifest = load_manifest(root)
    items = [it for it in manifest.get("items", []) if it.get("split") in SPLITS]
    if not any(it["split"] == split for it in items):
        raise DrumdiffError(f"{root}: the prepared dataset has no {split} clips to index")
    cls_path = classifier_path(classifier)
    model = load_classifier(cls_path)
    rate = int(manifest.get("sample_rate", model.config.sample_rate))
    show = progress if progress is not None else sys.stderr.isatty()
    bar = Progress(len(items), desc="index", unit="clip") if show else None
    vectors, mono = [], []
    try:
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            audio = conform(torch.stack([_read(root, it, rate) for it in chunk]), rate, model)
            vectors.append(profile_vectors(model, audio))
            mono.append(
                audio.mean(dim=1, keepdim=True)[..., :NN_SAMPLES]
            )  # (B, 1, T'): what the waveform check compares
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    vecs, waves = torch.cat(vectors), torch.cat(mono)
    train = np.array([it["split"] == split for it in items])
    clips = [{"path": it["path"], "group": it.get("group"), "class": it.get("class")} for it in items]
    info = {
        "dataset_manifest_sha256": file_digest(root / MANIFEST),
        "dataset": root.name,
        "split": split,
        "classifier_file": cls_path.name,
        "default_max_similarity": DEFAULT_MAX_SIMILARITY,
        "yardstick": _yardstick(vecs, waves, items, train),
        "near_copies": _near_copies(model, vecs[train], items, train, rate, root),
    }
    kept = [c for c, t in zip(clips, train, strict=True) if t]
    return OriginalityIndex(vecs[train].half(), kept, file_digest(cls_path), MEASURE, info)


def _read(root: Path, item: dict[str, Any], rate: int) -> Tensor:
    audio, file_rate = audio_io.read(root / item["path"])
    audio = audio_io.to_channels(audio, 2)
    return audio_io.resample(audio, file_rate, rate) if file_rate != rate else audio


def _stats(values: np.ndarray) -> dict[str, Any]:
    """n and the PERCENTILES (the last, 100, named max) of similarities, 4 decimals."""
    if len(values) == 0:
        return {"n": 0}
    found = np.percentile(values, PERCENTILES)
    names = [f"p{p}" if p < 100 else "max" for p in PERCENTILES]
    return {"n": int(len(values)), **{k: round(float(v), 4) for k, v in zip(names, found, strict=True)}}


def _other_kit_candidates(
    vecs: Tensor, bank_rows: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per clip, the NN_CANDIDATES most similar training clips of other kits: (similarities, bank rows) [N, K],
    -inf where there are fewer."""
    bank = vecs[bank_rows]
    sims_out, rows_out = [], []
    for start in range(0, len(vecs), 1024):
        sims = (vecs[start : start + 1024] @ bank.T).numpy().astype(np.float64)  # (m, N_train)
        own = groups[start : start + 1024, None] == groups[bank_rows][None, :]
        sims[own] = -np.inf  # never the clip's own kit
        top = np.argsort(-sims, axis=1)[:, :NN_CANDIDATES]  # (m, K)
        sims_out.append(np.take_along_axis(sims, top, axis=1))
        rows_out.append(top)
    return np.concatenate(sims_out), np.concatenate(rows_out)


def _yardstick(vecs: Tensor, waves: Tensor, items: list[dict[str, Any]], train: np.ndarray) -> dict[str, Any]:
    """Each clip's nearest training clip from another kit (train: leave-kit-out; val, test: all of train).

    A pair that is the same recording (waveform correlation >= MEMORISED_SIMILARITY among the best
    candidates: kits that share samples) is no fair yardstick: it is counted as a shared recording, a real
    near-copy, instead."""
    rows = np.flatnonzero(train)
    groups = np.array([str(it.get("group")) for it in items])
    sims, top = _other_kit_candidates(vecs, rows, groups)
    nearest = sims[:, 0]
    valid = np.isfinite(nearest)  # False: every training clip is of the clip's own kit
    top = np.where(np.isfinite(sims), top, top[:, :1])  # compare waveforms with other kits' clips only
    wave, _ = waveform_similarity(waves[valid], waves[rows], top[valid])
    shared = np.zeros(len(items), dtype=bool)
    shared[np.flatnonzero(valid)] = wave >= MEMORISED_SIMILARITY
    splits = np.array([it["split"] for it in items])
    fair = valid & ~shared
    out: dict[str, Any] = {}
    for name in ("train", "val", "test"):
        key = "train_leave_kit_out" if name == "train" else name
        out[key] = {
            **_stats(nearest[fair & (splits == name)]),
            "shared_recordings": int((shared & (splits == name)).sum()),
        }
    alarms = int((nearest[fair] > DEFAULT_MAX_SIMILARITY).sum())
    rate = round(alarms / int(fair.sum()), 4) if fair.any() else None
    out["all"] = {**_stats(nearest[fair]), "above_default": alarms, "false_alarm_rate": rate}
    copies = nearest[shared]
    caught = round(float((copies > DEFAULT_MAX_SIMILARITY).mean()), 4) if len(copies) else None
    out["shared_recordings"] = {**_stats(copies), "caught_at_default": caught}
    return out


def _changes(audio: Tensor, rate: int) -> dict[str, Tensor]:
    """Slight changes of clips `[B, C, T]` that leave them copies: what a memorising model might output."""
    peak = audio.abs().amax(dim=(1, 2), keepdim=True)
    noise = torch.randn(audio.shape, generator=torch.Generator().manual_seed(0))

    def shift(k: int) -> Tensor:
        return torch.nn.functional.pad(audio, (k, 0))[..., : audio.shape[-1]]

    def varispeed(ratio: float) -> Tensor:
        y = torch.nn.functional.interpolate(audio, size=round(audio.shape[-1] / ratio), mode="linear")
        return torch.nn.functional.pad(y, (0, max(0, audio.shape[-1] - y.shape[-1])))[..., : audio.shape[-1]]

    via48k = torch.stack([audio_io.resample(audio_io.resample(c, rate, 48000), 48000, rate) for c in audio])
    return {
        "gain +1 dB": audio * 10 ** (1 / 20),
        "gain -1 dB": audio * 10 ** (-1 / 20),
        "noise -60 dB": audio + peak * 1e-3 * noise,
        "shift 3 samples": shift(3),
        "shift 2 ms": shift(round(0.002 * rate)),
        "resample via 48 kHz": via48k,
        "varispeed +0.5%": varispeed(1.005),
        "fp16 round trip": audio.half().float(),
        "polarity": -audio,
        "swap L/R": audio.flip(1),
    }


def _near_copies(
    model: DrumClassifier, bank: Tensor, items: list[dict[str, Any]], train: np.ndarray, rate: int, root: Path
) -> dict[str, Any]:
    """Nearest-clip similarity of slightly changed training clips (a fixed sample of NEAR_COPY_CLIPS)."""
    rows = sorted(np.flatnonzero(train), key=lambda i: stable_seed("originality", items[i]["path"]))
    rows = rows[:NEAR_COPY_CLIPS]
    audio = torch.stack([_read(root, items[i], rate) for i in rows])
    index = OriginalityIndex(bank.half(), [{}] * len(bank), "")
    out: dict[str, Any] = {"clips": len(rows)}
    lowest = 1.0
    for name, changed in _changes(audio, rate).items():
        sims, _ = index.nearest(profile_vectors(model, conform(changed, rate, model)))
        values = sims.numpy().astype(np.float64)
        lowest = min(lowest, float(values.min()))
        out[name] = {
            "min": round(float(values.min()), 4),
            "median": round(float(np.median(values)), 4),
            "caught_at_default": round(float((values > DEFAULT_MAX_SIMILARITY).mean()), 4),
        }
    out["min"] = round(lowest, 4)
    return out


# ----------------------------------------------------------------------------------------------------------
# python -m drumdiff.evaluation.originality DATA --out FILE


def summary(index: OriginalityIndex) -> str:
    """A few lines on what an index holds and how its yardstick and near copies look."""
    yard, near = index.info.get("yardstick", {}), index.info.get("near_copies", {})

    def line(name: str, s: dict[str, Any]) -> str:
        if not s.get("n"):
            return f"  {name}: no clips"
        return f"  {name}: {s['n']} clips, median {s['p50']}, 95% {s['p95']}, 99% {s['p99']}, max {s['max']}"

    lines = [
        f"{len(index)} clips, {index.vectors.shape[1]} numbers per clip ({index.measure})",
        "nearest clip from another kit (the yardstick):",
    ]
    for key in ("train_leave_kit_out", "val", "test"):
        if key in yard:
            lines.append(line(key, yard[key]))
    if yard.get("all", {}).get("n"):
        lines.append(
            f"  above {DEFAULT_MAX_SIMILARITY}: {yard['all']['above_default']} of {yard['all']['n']}"
        )
    if yard.get("shared_recordings", {}).get("n"):
        s = yard["shared_recordings"]
        lines.append(
            f"recordings shared by two kits: {s['n']}, median {s['p50']}, caught {s['caught_at_default']}"
        )
    if near:
        lines.append(f"slightly changed training clips ({near['clips']}): lowest similarity {near['min']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drumdiff.evaluation.originality",
        description="Build the originality index of a model's training set (a prepared dataset): "
        "`drumdiff generate` reports each clip's nearest training clip when the index lies beside the model "
        "file as <model stem>.index.safetensors (or is passed with --index).",
    )
    parser.add_argument(
        "data", type=Path, metavar="DATA", help="prepared dataset folder (drumdiff data prepare)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="index file to write: MODEL.index.safetensors"
    )
    parser.add_argument(
        "--split",
        default="train",
        choices=("train", "val", "test"),
        help="which clips to index (default train: what the model learnt from)",
    )
    parser.add_argument(
        "--classifier",
        type=Path,
        default=None,
        metavar="FILE",
        help="classifier file whose front end to use (default: the shipped one)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: on a terminal)",
    )
    args = parser.parse_args(argv)
    try:
        if args.out.suffix != ".safetensors":
            raise DrumdiffError(f"--out {args.out}: the index file name must end in {INDEX_SUFFIX}")
        index = build_index(args.data, classifier=args.classifier, split=args.split, progress=args.progress)
        save_index(args.out, index)
    except DrumdiffError as error:
        print(f"originality: error: {error}", file=sys.stderr)
        return 2
    print(summary(index))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
