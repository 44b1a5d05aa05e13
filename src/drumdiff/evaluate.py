"""Evaluation metrics for generated drum one-shots: quality, class fidelity, artifacts, variety, memorisation.

Embedding metrics (Frechet distance, KID) use the shipped drum classifier (`drumdiff.nn.classifier`), on
audio fitted the way `drumdiff data prepare` fits it. Artifact metrics are measured on the raw decoded file.
Every metric name that `evaluate_folders` returns is documented in docs/evaluation.md.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from drumdiff import audio as audio_io
from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path

REPORT_FORMAT = "drumdiff-evaluation"
REPORT_VERSION = 1
TAIL_SAMPLES = 8192  # tail noise: RMS of the last 8192 samples ...
FRAME, HOP = 2048, 512  # ... relative to the loudest 2048-sample frame, hop 512
FLOOR_DB = -120.0
HISS_HZ = 14000.0  # hiss: share of energy above 14 kHz in the second half of the clip
CLIP_LEVEL = 0.999  # a sample at or above this magnitude, next to another one, is a flat top
SILENT_DB = audio_io.SILENCE_DB  # peak below -60 dBFS: silent (the same rule as data prepare)
MEMORISED_SIMILARITY = 0.97  # nearest-neighbour waveform correlation at or above this: a copy
NN_CANDIDATES = 8  # training clips per generated clip whose waveforms are compared (best log-mel matches)
NN_SAMPLES, NN_LAG = 16384, 512  # waveform correlation: first 16384 samples, lags up to +-512 samples
KID_SUBSETS = 100

Split = Literal["all", "train", "val"]


# ----------------------------------------------------------------------------------------------------------
# Distribution distances on embeddings


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to `[N, D]` and `[M, D]` embeddings (N, M >= 2).

    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2), with the trace of the matrix square root taken
    from the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, so exact without scipy).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Frechet distance needs at least 2 embeddings per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (D, D)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (the KID estimator) for `[m, D]`, `[n, D]`."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, *, subsets: int = KID_SUBSETS, subset_size: int | None = None, seed: int = 0
) -> tuple[float, float, int]:
    """KID of `[N, D]` vs `[M, D]`: (mean, std over random subsets, subset size).

    The default subset size is half the smaller set (at least 2), so that the subsets differ and the standard
    deviation is honest for the 10-100 clips a user evaluates; subsets are drawn without replacement.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"KID needs at least 2 embeddings per set, got {len(a)} and {len(b)}")
    size = subset_size or max(2, min(len(a), len(b)) // 2)
    size = min(size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values)), size


def inception_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) for `[N, K]` class probabilities: 1 (one class or unsure) .. K."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean()))


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of `[N, D]` embeddings (variety)."""
    emb = np.asarray(emb, np.float64)
    if len(emb) < 2:
        return float("nan")
    sq = (emb**2).sum(1)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0, None))
    n = len(emb)
    return float(dist[np.triu_indices(n, 1)].mean())


def nearest_neighbours(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each `[N, F]` query row to its nearest `[M, F]` bank row: (similarity, index)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    k = bank / np.linalg.norm(bank, axis=1, keepdims=True).clip(1e-12)
    sims = q @ k.T  # (N, M)
    index = sims.argmax(1)
    return sims[np.arange(len(q)), index], index


# ----------------------------------------------------------------------------------------------------------
# Artifacts on the raw decoded file


def _db(ratio: float) -> float:
    return max(FLOOR_DB, 20 * math.log10(ratio)) if ratio > 0 else FLOOR_DB


def tail_noise_db(audio: Tensor) -> float:
    """RMS of the last 8192 samples of the mono mix relative to the loudest 2048-sample frame (hop 512), dB."""
    mono = audio.double().mean(dim=0)  # (T,)
    padded = torch.nn.functional.pad(mono, (0, max(0, FRAME - mono.numel())))  # at least one frame
    frames = padded.unfold(0, FRAME, HOP)  # (N, FRAME)
    loudest = float(frames.square().mean(dim=1).sqrt().max())
    tail = float(mono[-TAIL_SAMPLES:].square().mean().sqrt())
    return _db(tail / loudest) if loudest > 0 else FLOOR_DB


def hiss_db(audio: Tensor, sample_rate: int) -> float | None:
    """Share of the second half's energy above 14 kHz (Hann-windowed spectrum of the mono mix), dB.

    None when the file's Nyquist frequency is not above 14 kHz.
    """
    if sample_rate / 2 <= HISS_HZ:
        return None
    mono = audio.double().mean(dim=0)
    half = mono[mono.numel() // 2 :]
    if half.numel() < 2:
        return FLOOR_DB
    power = torch.fft.rfft(half * torch.hann_window(half.numel(), dtype=torch.float64)).abs().square()
    freqs = torch.fft.rfftfreq(half.numel(), 1.0 / sample_rate, dtype=torch.float64)
    total = float(power.sum())
    if total <= 0:
        return FLOOR_DB
    return max(FLOOR_DB, 10 * math.log10(max(float(power[freqs > HISS_HZ].sum()) / total, 1e-30)))


def clipped_samples(audio: Tensor) -> int:
    """Samples beyond full scale, or at |x| >= 0.999 next to another such sample in the same channel."""
    mag = audio.abs()
    over = mag > 1.0
    high = mag >= CLIP_LEVEL
    neighbour = torch.zeros_like(high)
    neighbour[:, 1:] |= high[:, :-1]
    neighbour[:, :-1] |= high[:, 1:]
    return int((over | (high & neighbour)).sum())


def artifact_metrics(audio: Tensor, sample_rate: int) -> dict[str, Any]:
    """Artifacts of one raw decoded clip `[C, T]`: tail_db, hiss_db, dc_offset, clipped_samples, silent, peak_db."""
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    return {
        "tail_db": round(tail_noise_db(audio), 3),
        "hiss_db": None if (h := hiss_db(audio, sample_rate)) is None else round(h, 3),
        "dc_offset": round(float(audio.double().mean(dim=1).abs().max()), 6),
        "clipped_samples": clipped_samples(audio),
        "silent": peak == 0 or 20 * math.log10(peak) < SILENT_DB,
        "peak_db": round(_db(peak), 3),
    }


def summarize_artifacts(clips: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Set-level artifact figures from per-clip `artifact_metrics`."""
    tails = np.array([c["tail_db"] for c in clips], np.float64)
    hiss = np.array([c["hiss_db"] for c in clips if c["hiss_db"] is not None], np.float64)
    dc = np.array([c["dc_offset"] for c in clips], np.float64)
    nan = float("nan")
    return {
        "tail_db_mean": round(float(tails.mean()), 3) if len(tails) else nan,
        "tail_db_median": round(float(np.median(tails)), 3) if len(tails) else nan,
        "tail_db_max": round(float(tails.max()), 3) if len(tails) else nan,
        "hiss_db_mean": round(float(hiss.mean()), 3) if len(hiss) else nan,
        "hiss_db_median": round(float(np.median(hiss)), 3) if len(hiss) else nan,
        "hiss_db_max": round(float(hiss.max()), 3) if len(hiss) else nan,
        "dc_offset_mean": round(float(dc.mean()), 6) if len(dc) else nan,
        "dc_offset_max": round(float(dc.max()), 6) if len(dc) else nan,
        "clipped_samples": int(sum(c["clipped_samples"] for c in clips)),
        "clipped_clips": int(sum(c["clipped_samples"] > 0 for c in clips)),
        "silent_clips": int(sum(bool(c["silent"]) for c in clips)),
    }


# ----------------------------------------------------------------------------------------------------------
# Finding and loading clips


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
            return [
                (root / item["path"], item["path"], item.get("class"))
                for item in items
                if split == "all" or item.get("split") == split
            ]
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


def _spectral_vectors(spectra: np.ndarray) -> np.ndarray:
    """Flattened, mean-removed log-mel images floored at -60 dB: cosine similarity = Pearson correlation."""
    flat = np.maximum(spectra, -0.6).reshape(len(spectra), -1).astype(np.float64)
    return flat - flat.mean(axis=1, keepdims=True)


def waveform_similarity(query: Tensor, bank: Tensor, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best normalised cross-correlation of each query clip with its candidate bank clips.

    `query [N, C, T]`, `bank [M, C, T]`, `candidates [N, K]` bank indices. Mono mixes, first 16384 samples,
    lags up to +-512 samples. A copy (even with noise 45 dB down) scores about 0.99; different recordings of
    one drum from other kits stay below about 0.85. Returns (similarity [N], bank index [N]).
    """
    n, lag = min(NN_SAMPLES, query.shape[-1]), NN_LAG
    size = 2 * n

    def spectra(audio: Tensor) -> Tensor:
        mono = audio.double().mean(dim=1)[:, :n]  # (B, n)
        mono = mono / mono.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.fft.rfft(mono, size)  # (B, F)

    best = np.zeros(len(query))
    index = np.zeros(len(query), dtype=np.int64)
    for i in range(len(query)):
        cands = torch.as_tensor(candidates[i])
        corr = torch.fft.irfft(spectra(query[i : i + 1]) * spectra(bank[cands]).conj(), size)  # (K, size)
        corr = torch.cat([corr[:, : lag + 1], corr[:, -lag:]], dim=1).amax(dim=1)  # (K,)
        k = int(corr.argmax())
        best[i], index[i] = float(corr[k]), int(cands[k])
    return best, index


def _nearest_training_clips(
    gen: ClipSet, gen_f: Features, train: ClipSet, train_f: Features
) -> tuple[np.ndarray, np.ndarray]:
    """Waveform similarity of each generated clip to its nearest training clip: (similarity [N], index [N]).

    Only the NN_CANDIDATES training clips with the most similar log-mel images are compared sample by sample.
    """
    gen_spec, train_spec = _spectral_vectors(gen_f.spectra), _spectral_vectors(train_f.spectra)
    gen_spec /= np.linalg.norm(gen_spec, axis=1, keepdims=True).clip(1e-12)
    train_spec /= np.linalg.norm(train_spec, axis=1, keepdims=True).clip(1e-12)
    candidates = np.argsort(-(gen_spec @ train_spec.T), axis=1)[:, :NN_CANDIDATES]  # (N, K)
    return waveform_similarity(gen.stack(), train.stack(), candidates)


def _distances(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """FD and KID between two embedding sets (None where a set has fewer than 2 clips)."""
    if len(a) < 2 or len(b) < 2:
        return {"fd": None, "kid": None, "kid_std": None, "kid_subset_size": None}
    kid, kid_std, size = kernel_inception_distance(a, b)
    return {
        "fd": round(frechet_distance(a, b), 4),
        "kid": round(kid, 5),
        "kid_std": round(kid_std, 5),
        "kid_subset_size": size,
    }


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
    from drumdiff.nn.classifier import (
        DEFAULT_CLASSIFIER,
        file_sha256,
        load_classifier,
        read_classifier_metadata,
    )

    classifier_path = Path(classifier) if classifier is not None else DEFAULT_CLASSIFIER
    model = load_classifier(classifier_path)
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

    metadata = read_classifier_metadata(classifier_path)
    provenance = metadata.get("provenance", {})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "drumdiff_version": __version__,
        "classifier": {
            "file": str(classifier_path),
            "sha256": file_sha256(classifier_path),
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
    report.update(_distances(gen_f.embeddings, ref_f.embeddings))
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
                    for key in ("tail_db", "hiss_db", "dc_offset", "clipped_samples", "silent")
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
            "predicted": dict(Counter(names[int(p)] for p in predicted[g])),
        }
        entry.update(_distances(gen_f.embeddings[g], ref_f.embeddings[r]))
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
        "predicted": dict(Counter(names[int(p)] for p in predicted)),
        "per_class": per_class,
    }


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


# ----------------------------------------------------------------------------------------------------------
# The plot


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
