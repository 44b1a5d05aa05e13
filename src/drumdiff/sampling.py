"""Schedules and samplers: small pure functions over a denoiser and an explicit schedule.

A schedule is a 1-D tensor of times `ts` falling from `ts[0]` (where `x` is given) to `ts[-1] == 0`;
a sampler with a schedule of N + 1 points makes N steps. A denoiser is `D(x_t [B, C, T], t [B]) -> x0_hat`
(see `drumdiff.diffusion.make_denoiser`). Every sampler has the signature

    sampler(denoiser, x, ts, *, noise_fn=None, callback=None) -> x0

where `noise_fn()` returns fresh standard-normal noise shaped like `x` (only stochastic samplers call it) and
`callback(i, x, x0_hat)` runs after step i (progress bars). Deterministic samplers give the same output for the
same input, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from drumdiff.diffusion import Denoiser, alpha_sigma, eps_from_x0, log_snr, t_from_log_snr

Callback = Callable[[int, Tensor, Tensor], None]
NoiseFn = Callable[[], Tensor]
Sampler = Callable[..., Tensor]

# Lambda-uniform schedules cannot start at t = 1 (lambda = -inf): they are spaced from here.
T_CAP = 0.999


# ---------------------------------------------------------------------------------------------- schedules


def linear_schedule(steps: int, *, t_max: float = 1.0) -> Tensor:
    """t falling linearly from t_max to 0 in `steps` steps: the original tiny-audio-diffusion schedule."""
    _check_steps(steps)
    return torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)


def log_snr_schedule(steps: int, *, t_max: float = 1.0, t_min: float = 1e-3) -> Tensor:
    """`steps` points uniform in log-SNR from min(t_max, 0.999) to t_min, then a final step to 0.

    When t_max is above 0.999 (generation from pure noise at t = 1) the first point is t_max itself, so
    the sampler starts where the noise is.
    """
    _check_steps(steps)
    if not 0 < t_min < t_max <= 1:
        raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if steps == 1:
        return torch.tensor([t_max, 0.0], dtype=torch.float64)
    t_hi = min(t_max, T_CAP)
    lam_hi, lam_lo = (log_snr(torch.tensor(v, dtype=torch.float64)) for v in (t_hi, t_min))
    lams = torch.linspace(float(lam_hi), float(lam_lo), steps, dtype=torch.float64)
    ts = torch.cat([t_from_log_snr(lams), torch.zeros(1, dtype=torch.float64)])
    ts[0] = t_max
    return ts


SCHEDULES: dict[str, Callable[..., Tensor]] = {"linear": linear_schedule, "log-snr": log_snr_schedule}


def get_schedule(name: str) -> Callable[..., Tensor]:
    """Look a schedule up by its CLI name."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


# ---------------------------------------------------------------------------------------------- samplers


def _t_batch(t: Tensor, x: Tensor) -> Tensor:
    return t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    noise_fn: NoiseFn | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Deterministic DDIM (Song et al. 2021), first order: x_s = alpha_s x0_hat + sigma_s eps_hat."""
    for i in range(len(ts) - 1):
        x0_hat = denoiser(x, _t_batch(ts[i], x))
        x = _ddim_step(x, x0_hat, ts[i], ts[i + 1])
        if callback is not None:
            callback(i, x, x0_hat)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    noise_fn: NoiseFn | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), second order multistep in log-SNR, data prediction.

    The first step, and a step from t = 1 (lambda = -inf) or to t = 0 (lambda = +inf), are first order (DDIM).
    """
    lams = log_snr(ts.to(torch.float64))
    x0_prev: Tensor | None = None
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0_hat = denoiser(x, _t_batch(t, x))
        h = float(lams[i + 1] - lams[i])
        h_prev = float(lams[i] - lams[i - 1]) if i > 0 else math.inf
        if x0_prev is None or not (math.isfinite(h) and math.isfinite(h_prev)):
            x0_mix = x0_hat
        else:
            r = h_prev / h
            x0_mix = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_prev
        # x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) x0_mix: the DDIM step with x0_mix, which
        # stays finite at t = 1.
        x = _ddim_step(x, x0_mix, t, s)
        x0_prev = x0_hat
        if callback is not None:
            callback(i, x, x0_hat)
    return x


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    noise_fn: NoiseFn | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020; DDIM with eta = 1): fresh noise at every step, more variety."""
    if noise_fn is None:
        raise ValueError("the ddpm sampler is stochastic and needs noise_fn")
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0_hat = denoiser(x, _t_batch(t, x))
        eps_hat = _eps(x, x0_hat, t)
        alpha_t, sigma_t = (float(v) for v in alpha_sigma(t))
        alpha_s, sigma_s = (float(v) for v in alpha_sigma(s))
        # DDIM's sigma_eta = eta (sigma_s / sigma_t) sqrt(1 - alpha_t^2 / alpha_s^2).
        ratio = 0.0 if alpha_s == 0 else alpha_t**2 / alpha_s**2
        sigma_eta = eta * (sigma_s / sigma_t) * math.sqrt(max(0.0, 1.0 - ratio))
        x = alpha_s * x0_hat + math.sqrt(max(0.0, sigma_s**2 - sigma_eta**2)) * eps_hat
        if sigma_eta > 0:
            x = x + sigma_eta * noise_fn()
        if callback is not None:
            callback(i, x, x0_hat)
    return x


def _eps(x: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
    return eps_from_x0(x, x0_hat, t.to(device=x.device, dtype=x.dtype))


def _ddim_step(x: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Move x from time t to time s (either direction) along the DDIM ODE: alpha_s x0_hat + sigma_s eps_hat."""
    alpha_s, sigma_s = (float(v) for v in alpha_sigma(s))
    return alpha_s * x0_hat + sigma_s * _eps(x, x0_hat, t)


SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "ddpm": sample_ddpm,
}


def get_sampler(name: str) -> Sampler:
    """Look a sampler up by its CLI name (kebab-case); unknown names list the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


# ---------------------------------------------------------------------------------------------- inversion


@torch.no_grad()
def invert_ddim(denoiser: Denoiser, x0: Tensor, ts: Tensor, *, callback: Callback | None = None) -> Tensor:
    """Deterministic DDIM inversion: run the DDIM ODE backwards along `ts` (rising, ts[0] > 0) from clean audio.

    Returns the latent at ts[-1]; decoding it with `sample_ddim` along the reversed schedule (ending at 0)
    reconstructs x0 up to discretisation error. At ts[0] the input is taken as the noised clip itself
    (sigma(ts[0]) is tiny).
    """
    if len(ts) < 2 or not bool(torch.all(ts[1:] > ts[:-1])) or float(ts[0]) <= 0:
        raise ValueError("inversion needs a rising schedule that starts above 0")
    return sample_ddim(denoiser, x0, ts, callback=callback)  # the same steps, run towards noise


def slerp(a: Tensor, b: Tensor, w: float) -> Tensor:
    """Spherical interpolation between two noise tensors of one shape (w = 0 gives a, w = 1 gives b)."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < 1e-6:
        return (1 - w) * a + w * b
    sin = torch.sin(omega)
    wa, wb = torch.sin((1 - w) * omega) / sin, torch.sin(w * omega) / sin
    return (wa * a.double() + wb * b.double()).to(a.dtype)
