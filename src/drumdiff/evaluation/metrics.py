"""Evaluation metrics on arrays and tensors: distribution distances, nearest neighbours, artifacts.

Embedding metrics (Frechet distance, KID, Inception score, variety) take the classifier's `[N, D]` embeddings or
`[N, K]` class probabilities as numpy arrays. Artifact metrics take one raw decoded clip `[C, T]`. Every metric
name that `evaluate_folders` reports is documented in docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drumdiff import audio as audio_io

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


def set_distances(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """FD and KID between two embedding sets, rounded for the report (None where a set has fewer than 2)."""
    if len(a) < 2 or len(b) < 2:
        return {"fd": None, "kid": None, "kid_std": None, "kid_subset_size": None}
    kid, kid_std, size = kernel_inception_distance(a, b)
    return {
        "fd": round(frechet_distance(a, b), 4),
        "kid": round(kid, 5),
        "kid_std": round(kid_std, 5),
        "kid_subset_size": size,
    }


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


# ----------------------------------------------------------------------------------------------------------
# Nearest neighbours


def cosine_similarity(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Cosine similarity of every `[N, F]` query row with every `[M, F]` bank row: `[N, M]`."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    k = bank / np.linalg.norm(bank, axis=1, keepdims=True).clip(1e-12)
    return q @ k.T  # (N, M)


def nearest_neighbours(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each `[N, F]` query row to its nearest `[M, F]` bank row: (similarity, index)."""
    sims = cosine_similarity(query, bank)  # (N, M)
    index = sims.argmax(1)
    return sims[np.arange(len(query)), index], index


def spectral_vectors(spectra: np.ndarray) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------------------
# Artifacts on the raw decoded file


def _db(ratio: float, *, per_decade: float = 20.0) -> float:
    """`per_decade * log10(ratio)` (20: amplitude, 10: power), floored at FLOOR_DB (also for ratio 0)."""
    return max(FLOOR_DB, per_decade * math.log10(ratio)) if ratio > 0 else FLOOR_DB


def _loudest_frame_rms(mono: Tensor) -> float:
    """RMS of the loudest 2048-sample frame (hop 512) of a mono signal `[T]`: the level that tails are read against."""
    padded = torch.nn.functional.pad(mono, (0, max(0, FRAME - mono.numel())))  # at least one frame
    frames = padded.unfold(0, FRAME, HOP)  # (N, FRAME)
    return float(frames.square().mean(dim=1).sqrt().max())


def tail_noise_db(audio: Tensor) -> float:
    """RMS of the last 8192 samples of the mono mix relative to the loudest 2048-sample frame (hop 512), dB."""
    mono = audio.double().mean(dim=0)  # (T,)
    loudest = _loudest_frame_rms(mono)
    tail = float(mono[-TAIL_SAMPLES:].square().mean().sqrt())
    return _db(tail / loudest) if loudest > 0 else FLOOR_DB


def hiss_measures(audio: Tensor, sample_rate: int) -> tuple[float, float] | None:
    """The second half's content above 14 kHz (Hann-windowed spectrum of the mono mix), dB: its share of the
    half's energy, and its RMS relative to the loudest 2048-sample frame (the hiss against the drum, as
    `tail_noise_db` reads the tail). The share is a ratio: the same hiss under a quieter decay scores higher;
    the level does not.

    None when the file's Nyquist frequency is not above 14 kHz.
    """
    if sample_rate / 2 <= HISS_HZ:
        return None
    mono = audio.double().mean(dim=0)  # (T,)
    half = mono[mono.numel() // 2 :]
    if half.numel() < 2:
        return FLOOR_DB, FLOOR_DB
    window = torch.hann_window(half.numel(), dtype=torch.float64)
    # power per bin, scaled so that a steady signal reads its own mean square
    power = torch.fft.rfft(half * window).abs().square() * (
        2.0 / (half.numel() * float(window.square().sum()))
    )
    freqs = torch.fft.rfftfreq(half.numel(), 1.0 / sample_rate, dtype=torch.float64)
    high, total = float(power[freqs > HISS_HZ].sum()), float(power.sum())
    loudest = _loudest_frame_rms(mono)
    share = _db(high / total, per_decade=10.0) if total > 0 else FLOOR_DB
    level = _db(high / loudest**2, per_decade=10.0) if loudest > 0 else FLOOR_DB
    return share, level


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
    """Artifacts of one raw decoded clip `[C, T]`: tail_db, hiss_db, hiss_level_db, dc_offset, clipped_samples,
    silent, peak_db."""
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    hiss = hiss_measures(audio, sample_rate)
    return {
        "tail_db": round(tail_noise_db(audio), 3),
        "hiss_db": None if hiss is None else round(hiss[0], 3),
        "hiss_level_db": None if hiss is None else round(hiss[1], 3),
        "dc_offset": round(float(audio.double().mean(dim=1).abs().max()), 6),
        "clipped_samples": clipped_samples(audio),
        "silent": peak == 0 or 20 * math.log10(peak) < SILENT_DB,
        "peak_db": round(_db(peak), 3),
    }


def summarize_artifacts(clips: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Set-level artifact figures from per-clip `artifact_metrics`."""
    tails = np.array([c["tail_db"] for c in clips], np.float64)
    hiss = np.array([c["hiss_db"] for c in clips if c["hiss_db"] is not None], np.float64)
    level = np.array([c["hiss_level_db"] for c in clips if c.get("hiss_level_db") is not None], np.float64)
    dc = np.array([c["dc_offset"] for c in clips], np.float64)
    nan = float("nan")
    return {
        "tail_db_mean": round(float(tails.mean()), 3) if len(tails) else nan,
        "tail_db_median": round(float(np.median(tails)), 3) if len(tails) else nan,
        "tail_db_max": round(float(tails.max()), 3) if len(tails) else nan,
        "hiss_db_mean": round(float(hiss.mean()), 3) if len(hiss) else nan,
        "hiss_db_median": round(float(np.median(hiss)), 3) if len(hiss) else nan,
        "hiss_db_max": round(float(hiss.max()), 3) if len(hiss) else nan,
        "hiss_level_db_mean": round(float(level.mean()), 3) if len(level) else nan,
        "hiss_level_db_median": round(float(np.median(level)), 3) if len(level) else nan,
        "hiss_level_db_max": round(float(level.max()), 3) if len(level) else nan,
        "dc_offset_mean": round(float(dc.mean()), 6) if len(dc) else nan,
        "dc_offset_max": round(float(dc.max()), 6) if len(dc) else nan,
        "clipped_samples": int(sum(c["clipped_samples"] for c in clips)),
        "clipped_clips": int(sum(c["clipped_samples"] > 0 for c in clips)),
        "silent_clips": int(sum(bool(c["silent"]) for c in clips)),
    }
