"""Optional clean-up of generated clips, off unless asked for (`generate --gate`): the tail gate.

A diffusion model's output can carry a steady noise floor that the drum's decay sinks into (the shipped model
does: MODEL_CARD.md, Known weaknesses). The gate finds where the decay reaches that floor and fades the clip
out there, the way a producer trims a one-shot by hand: the attack and body are untouched, the rest becomes
digital silence. It measures on the mono mix and applies one gain curve to every channel.

The level is the RMS of the mono mix over 58 ms around each 512-sample frame; the floor is the level of the
quietest frames after the peak (FLOOR_QUANTILE of them). The fade (raised cosine, `fade_ms`) starts where
the level first comes within `margin_db` of the floor after the peak. A clip whose decay reaches digital
silence by itself is left as it is, and so is one whose floor is within MIN_DEPTH_DB of its peak (a sound
that rings on, or noise from start to end). A sound that rings quietly to the end, more than MIN_DEPTH_DB
below its attack, can be shortened: the gate cannot tell a steady ring from a steady floor, which is why it
is off by default and every clip's record says whether it ran.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FRAME = 512  # samples per level frame (11.6 ms at 44.1 kHz)
SMOOTH = 5  # frames averaged for the level (58 ms)
FLOOR_QUANTILE = 0.2  # the floor: this quantile of the frame levels after the peak
MIN_DEPTH_DB = 12.0  # a floor within this of the peak is part of the sound (a steady ring): no gate
SILENT = 1e-5  # -100 dBFS: frame RMS below this is silence, nothing to gate
DEFAULT_MARGIN_DB = 6.0
DEFAULT_FADE_MS = 30.0


def gate_tail(
    audio: Tensor,
    sample_rate: int,
    *,
    margin_db: float = DEFAULT_MARGIN_DB,
    fade_ms: float = DEFAULT_FADE_MS,
) -> Tensor:
    """Fade out the tail of clips [C, T] or [N, C, T] where their decay meets the noise floor; same shape.

    Raises ValueError for a margin that is not positive or a fade that is negative (or not finite)."""
    if not (math.isfinite(margin_db) and margin_db > 0):
        raise ValueError(f"margin_db must be a positive number of dB, got {margin_db}")
    if not (math.isfinite(fade_ms) and fade_ms >= 0):
        raise ValueError(f"fade_ms must be a number of milliseconds >= 0, got {fade_ms}")
    if audio.dim() == 2:
        return gate_tail(audio[None], sample_rate, margin_db=margin_db, fade_ms=fade_ms)[0]
    if audio.dim() != 3:
        raise ValueError(f"audio must be [C, T] or [N, C, T], got shape {tuple(audio.shape)}")
    fade = round(fade_ms * sample_rate / 1000)
    return torch.stack([clip * _gain(clip, margin_db=margin_db, fade=fade) for clip in audio])


def cut_point(clip: Tensor, *, margin_db: float = DEFAULT_MARGIN_DB) -> int | None:
    """The sample where the gate's fade of one clip [C, T] starts, or None when there is nothing to gate."""
    frames = clip.shape[-1] // FRAME
    if frames < 2 * SMOOTH:
        return None  # too short to tell a floor from a decay
    mono = clip.float().mean(dim=0)[: frames * FRAME].reshape(frames, FRAME)  # (F, FRAME)
    energy = mono.pow(2).mean(dim=1)  # (F,)
    # Mean energy over SMOOTH frames around each frame: a noise floor's frame-to-frame wobble averages out.
    kernel = torch.full((1, 1, SMOOTH), 1 / SMOOTH, dtype=energy.dtype)
    level = torch.nn.functional.conv1d(energy[None, None], kernel, padding=SMOOTH // 2)[0, 0].sqrt()  # (F,)
    peak = int(level.argmax())
    after = level[peak + 1 :]
    if after.numel() < SMOOTH:
        return None
    floor = float(torch.quantile(after, FLOOR_QUANTILE))
    if floor < SILENT or floor > float(level[peak]) * 10 ** (-MIN_DEPTH_DB / 20):
        return None  # the decay reaches silence by itself, or the sound rings on well above any floor
    met = (after <= floor * 10 ** (margin_db / 20)).nonzero()
    start = (peak + 1 + int(met[0])) * FRAME
    return start if start < clip.shape[-1] else None


def _gain(clip: Tensor, *, margin_db: float, fade: int) -> Tensor:
    """The gate's gain curve for one clip [C, T]: 1, then a raised-cosine fade from the cut point, then 0."""
    length = clip.shape[-1]
    gain = torch.ones(length, dtype=clip.dtype, device=clip.device)
    start = cut_point(clip, margin_db=margin_db)
    if start is None:
        return gain
    end = min(length, start + fade)
    if end > start:
        ramp = torch.arange(end - start, dtype=torch.float64, device=clip.device) / max(1, fade)
        gain[start:end] = (0.5 * (1 + torch.cos(math.pi * ramp))).to(clip.dtype)
    gain[end:] = 0
    return gain
