"""The tail gate (drumdiff.postprocess): it silences a steady noise floor after a decay and nothing else."""

from __future__ import annotations

import math

import pytest
import torch

from drumdiff.postprocess import FRAME, cut_point, gate_tail

RATE = 44100
LENGTH = 32768


def _decay(*, floor_db: float | None, seed: int = 0) -> torch.Tensor:
    """A stereo 150 Hz tone decaying by 60 dB in 0.15 s, over white noise at floor_db (None: no noise)."""
    t = torch.arange(LENGTH, dtype=torch.float64) / RATE
    tone = 0.9 * torch.sin(2 * math.pi * 150 * t) * torch.exp(-t * math.log(1000) / 0.15)
    clip = torch.stack([tone, 0.8 * tone])
    if floor_db is not None:
        gen = torch.Generator().manual_seed(seed)
        clip = clip + 10 ** (floor_db / 20) * torch.randn(2, LENGTH, generator=gen, dtype=torch.float64)
    return clip.float()


def test_a_noise_floor_after_the_decay_is_faded_to_silence_and_the_attack_is_kept() -> None:
    clip = _decay(floor_db=-40)
    start = cut_point(clip)
    assert start is not None
    # The tone falls to the floor (-40 dB against a 0.9 peak, +6 dB margin) after about 0.09 s.
    assert 0.05 * RATE < start < 0.2 * RATE, start / RATE
    gated = gate_tail(clip, RATE)
    assert torch.equal(gated[:, :start], clip[:, :start])  # untouched up to the cut
    fade = round(0.030 * RATE)
    assert gated[:, start + fade :].abs().max() == 0  # digital silence after the fade
    middle = gated[:, start + fade // 2].abs() / clip[:, start + fade // 2].abs().clamp_min(1e-12)
    assert (middle < 0.75).all() and (middle > 0.25).all()  # a raised cosine: about half way down


def test_a_decay_into_silence_and_a_silent_clip_are_left_alone() -> None:
    clean = _decay(floor_db=None)
    assert cut_point(clean) is None
    assert torch.equal(gate_tail(clean, RATE), clean)
    silent = torch.zeros(2, LENGTH)
    assert torch.equal(gate_tail(silent, RATE), silent)


def test_batches_keep_their_shape_and_each_clip_gets_its_own_cut() -> None:
    batch = torch.stack([_decay(floor_db=-40, seed=1), _decay(floor_db=-30, seed=2), _decay(floor_db=None)])
    gated = gate_tail(batch, RATE)
    assert gated.shape == batch.shape
    cuts = [cut_point(clip) for clip in batch]
    assert cuts[0] is not None and cuts[1] is not None and cuts[2] is None
    assert cuts[1] < cuts[0]  # a louder floor is met earlier in the decay
    for clip, out in zip(batch, gated, strict=True):
        assert torch.equal(out, gate_tail(clip, RATE))
    assert torch.equal(gated[2], batch[2])


def test_the_first_meeting_with_the_floor_cuts_also_before_a_late_burst() -> None:
    clip = _decay(floor_db=-40)
    plain = cut_point(clip)
    burst = slice(LENGTH - 4 * FRAME, LENGTH - 3 * FRAME)
    clip[:, burst] += 0.3  # a one-shot has one hit: a late bump (a model's artefact) goes with the floor
    assert cut_point(clip) == plain
    assert gate_tail(clip, RATE)[:, burst].abs().max() == 0


def test_a_sound_that_rings_on_near_its_peak_level_is_not_gated() -> None:
    gen = torch.Generator().manual_seed(3)
    ring = 0.3 * torch.randn(2, LENGTH, generator=gen)  # noise from start to end, like a washy cymbal
    ring[:, :2048] *= 3  # an attack 10 dB above the ring
    assert cut_point(ring) is None
    assert torch.equal(gate_tail(ring, RATE), ring)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin_db": 0.0}, "margin_db"),
        ({"margin_db": float("nan")}, "margin_db"),
        ({"fade_ms": -1.0}, "fade_ms"),
    ],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        gate_tail(_decay(floor_db=-40), RATE, **kwargs)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[C, T\] or \[N, C, T\]"):
        gate_tail(torch.zeros(LENGTH), RATE)
