"""The takes of a kit: sample every pad (first take, round robins), re-draw near-copies, order the pads of
a family, fade and level. Pure functions over `[K, C, T]` tensors; `drumdiff.kits.make` writes them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from drumdiff import audio as audio_io
from drumdiff.errors import DrumdiffError
from drumdiff.files import stable_seed
from drumdiff.kits.pads import Pad
from drumdiff.pipeline import DrumPipeline, SamplingOptions

if TYPE_CHECKING:
    from drumdiff.evaluation.originality import OriginalityCheck

PEAK_DBFS = -0.3  # the ceiling of every take: inter-sample peaks and 24-bit rounding stay below 0 dBFS


def sample_takes(
    pipeline: DrumPipeline,
    pads: list[Pad],
    classes: list[str],
    *,
    kit_seed: int,
    round_robins: int,
    vary_strength: float,
    options: SamplingOptions,
    originality: OriginalityCheck | None,
    max_similarity: float | None,
    progress: Callable[[int], None] | None,
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Every pad's takes [K, C, T] at the model's level, and the seeds used ({"seed", "vary_seed",
    "redrawn_from_seeds"})."""
    takes, seeds = [], []
    for pad, class_name in zip(pads, classes, strict=True):
        draw = _drawer(pipeline, class_name, options=options, progress=progress)
        seed = stable_seed("kit", kit_seed, pad.note)
        first, tried = draw(seed), [seed]
        if originality is not None and max_similarity is not None:
            from drumdiff.evaluation.originality import redraw_near_copy

            first, _, tried = redraw_near_copy(
                first, seed, draw=draw,
                seeds=(stable_seed("kit", kit_seed, pad.note, attempt) for attempt in itertools.count(1)),
                nearest=lambda c: originality.check(c, pipeline.sample_rate)[0], limit=max_similarity,
            )  # fmt: skip
        used: dict[str, Any] = {"seed": tried[-1], "redrawn_from_seeds": tuple(tried[:-1])}
        clips = first
        if round_robins > 1:
            used["vary_seed"] = stable_seed("kit-rr", kit_seed, pad.note)
            more = pipeline.vary(
                first[0], strength=vary_strength, n=round_robins - 1, seed=used["vary_seed"],
                class_name=class_name, options=options, progress=progress,
            )  # fmt: skip
            clips = torch.cat([first, more])
        if not bool(torch.isfinite(clips).all()):
            raise DrumdiffError(
                f"sampling pad {pad.name} gave NaN or Inf samples: the model {pipeline.path} is broken, or "
                f"--guidance {options.guidance:g} is too large for it"
            )
        takes.append(clips)
        seeds.append(used)
    return takes, seeds


def _drawer(
    pipeline: DrumPipeline,
    class_name: str,
    *,
    options: SamplingOptions,
    progress: Callable[[int], None] | None,
) -> Callable[[int], Tensor]:
    """draw(seed) -> one generated clip [1, C, T] of the class."""
    return lambda seed: pipeline.generate(
        n=1, seed=seed, class_name=class_name, options=options, progress=progress
    )


def order_families(
    pads: list[Pad], takes: list[Tensor], seeds: list[dict[str, Any]], *, sample_rate: int
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Swap whole pads (takes and seeds) within each family so that rank follows the family's measure:
    toms by spectral centroid (low tom = darkest), hi-hats by tail length (open = longest)."""
    measure = {"tom": lambda c: _centroid(c, sample_rate), "hihat": _tail}
    takes, seeds = list(takes), list(seeds)
    for family, key in measure.items():
        members = [i for i, pad in enumerate(pads) if pad.order is not None and pad.order[0] == family]
        by_rank = sorted(members, key=lambda i: pads[i].order[1])  # type: ignore[index]
        by_measure = sorted(members, key=lambda i: (key(takes[i][0]), i))
        moved = {rank: source for rank, source in zip(by_rank, by_measure, strict=True)}
        old_takes, old_seeds = list(takes), list(seeds)
        for target, source in moved.items():
            takes[target], seeds[target] = old_takes[source], old_seeds[source]
    return takes, seeds


def _centroid(clip: Tensor, sample_rate: int) -> float:
    """Spectral centroid in Hz of a clip [C, T] (its channels' mean)."""
    spectrum = torch.fft.rfft(clip.mean(dim=0).double()).abs()
    freqs = torch.fft.rfftfreq(clip.shape[-1], d=1.0 / sample_rate, dtype=torch.float64)
    return float((spectrum * freqs).sum() / spectrum.sum().clamp_min(1e-12))


def _tail(clip: Tensor) -> int:
    """Samples from the first to the last sample within 40 dB of the clip's peak."""
    peak = audio_io.peak_db(clip)
    return 0 if not math.isfinite(peak) else audio_io.active_span(clip, threshold_db=peak - 40.0)


def fade_out(clips: Tensor, samples: int) -> Tensor:
    """A raised-cosine fade over the last `samples` of every clip [K, C, T]."""
    ramp = 0.5 * (1 + torch.cos(torch.linspace(0, math.pi, samples, dtype=clips.dtype)))  # 1 -> 0
    out = clips.clone()
    out[..., -samples:] *= ramp
    return out


def level(clips: Tensor, target_lufs: float, sample_rate: int) -> tuple[Tensor, float]:
    """Clips [K, C, T] times one gain: their energy-mean loudness at the target, no peak above PEAK_DBFS.
    Returns (clips, gain in dB); digital silence stays as it is (gain 0 dB)."""
    loudness = [audio_io.loudness_lufs(clip, sample_rate) for clip in clips]
    peak = max(audio_io.peak_db(clip) for clip in clips)
    heard = [value for value in loudness if math.isfinite(value)]
    if not heard or not math.isfinite(peak):
        return clips, 0.0
    mean = 10 * math.log10(sum(10 ** (value / 10) for value in heard) / len(heard))
    gain_db = min(target_lufs - mean, PEAK_DBFS - peak)
    return clips * 10 ** (gain_db / 20), gain_db
