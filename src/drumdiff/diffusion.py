"""v-diffusion math, once: the schedule, noising, the v-target, the loss and the denoiser.

Conventions (shared with the original tiny-audio-diffusion):
    t in [0, 1] is what the network receives (the original called it "sigma");
    alpha = cos(pi t / 2), sigma = sin(pi t / 2), log-SNR lambda = log(alpha / sigma);
    x_t = alpha x0 + sigma eps;  v = alpha eps - sigma x0;  x0_hat = alpha x_t - sigma v_hat.
Training and every sampler use these functions.

A model with `ModelConfig.sigma_data` d != 1 predicts the v of its clip in units of d, y = x0 / d, at the
same noise level (the same information: y_t = c_in x_t with alpha' / sigma' = d alpha / sigma), and sees
y_t. This is the preconditioning of Karras et al. 2022 ("Elucidating the design space of diffusion-based
generative models") with their sigma_data = d: the network's error reaches x0 times d sigma' instead of
sigma, so a model of quiet data (drums: RMS about 0.1) no longer needs 0.1% precision at high noise to
keep a tail silent. d = 1 is the plain v-parameterisation above, computed exactly as before.

`ModelConfig.skip_scale` k (in (0, 1]) is the clip scale, in units of d, that the preconditioning's skip
assumes: x0_hat / d = k^2 alpha' / D^2 y_t - k sigma' / D o, D^2 = sigma'^2 + k^2 alpha'^2, and the network
predicts o = (k / D) (alpha' eps - sigma' y0 / k^2) (Karras et al.'s c_skip and c_out with their sigma_data = k
on the scaled clip). k = 1 is the v above, exactly. A smaller k moves the network from predicting the noise
towards predicting the clip: once the noise is above k, a silent stretch asks for o near 0, where at k = 1 it
asks for an exact copy of the input noise, whose every error is left in the tail. The loss weights o's error
by (k / D)^2, so every k trains on the same x0 error at every noise level; only what the network outputs
differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

# A denoiser maps (x_t [B, C, T], t [B]) to x0_hat [B, C, T]; samplers only ever see this.
Denoiser = Callable[[Tensor, Tensor], Tensor]

QUIET_BLOCK, QUIET_REACH = 512, 2  # quiet_weights' envelope: max |x| per 512 samples, +-2 blocks


def alpha_sigma(t: Tensor) -> tuple[Tensor, Tensor]:
    """Signal and noise scales at time t (any shape)."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def scaled_alpha_sigma(t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor | None]:
    """alpha', sigma' of the clip in units of `sigma_data` at t's noise level, and c_in (y_t = c_in x_t).

    c_in is None for sigma_data 1 (alpha' = alpha, sigma' = sigma, y_t = x_t). Finite at t = 0 and t = 1.
    """
    alpha, sigma = alpha_sigma(t)
    if sigma_data == 1.0:
        return alpha, sigma, None
    c_in = torch.rsqrt(sigma.square() + (sigma_data * alpha).square())
    return sigma_data * alpha * c_in, sigma * c_in, c_in


def skip_gain(alpha: Tensor, sigma: Tensor, skip_scale: float) -> Tensor | float:
    """k / D of the module docstring for the scaled alpha', sigma': 1 (exactly) when skip_scale is 1."""
    if skip_scale == 1.0:
        return 1.0
    return skip_scale * torch.rsqrt(sigma.square() + (skip_scale * alpha).square())


def log_snr(t: Tensor) -> Tensor:
    """lambda(t) = log(alpha / sigma); +inf at t = 0, -inf at t = 1."""
    alpha, sigma = alpha_sigma(t)
    return torch.log(alpha) - torch.log(sigma)


def t_from_log_snr(lam: Tensor) -> Tensor:
    """Inverse of `log_snr`: t = (2 / pi) atan(exp(-lambda))."""
    return torch.atan(torch.exp(-lam)) * (2 / math.pi)


def _expand(values: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, 1] (or a scalar left alone) so it broadcasts over [B, C, T]."""
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = alpha x0 + sigma eps, with t of shape [B] or scalar."""
    alpha, sigma = alpha_sigma(_expand(t, x0))
    return alpha * x0 + sigma * noise


def v_target(
    x0: Tensor, noise: Tensor, t: Tensor, *, sigma_data: float = 1.0, skip_scale: float = 1.0
) -> Tensor:
    """v = alpha eps - sigma x0 (in units of `sigma_data`: alpha' eps - sigma' x0 / sigma_data; with
    `skip_scale` k != 1, the o of the module docstring)."""
    alpha, sigma, _ = scaled_alpha_sigma(_expand(t, x0), sigma_data)
    gain = skip_gain(alpha, sigma, skip_scale)
    # / 1.0 and * 1.0 are exact: the plain v, bit for bit
    return gain * (alpha * noise - sigma * (x0 / sigma_data / skip_scale**2))


def net_input(x_t: Tensor, t: Tensor, *, sigma_data: float = 1.0) -> Tensor:
    """What the network sees of x_t: x_t itself, or y_t = c_in x_t for sigma_data != 1."""
    _, _, c_in = scaled_alpha_sigma(_expand(t, x_t), sigma_data)
    return x_t if c_in is None else c_in * x_t


def x0_from_v(
    x_t: Tensor, v: Tensor, t: Tensor, *, sigma_data: float = 1.0, skip_scale: float = 1.0
) -> Tensor:
    """x0_hat = alpha x_t - sigma v_hat (for sigma_data != 1: sigma_data (alpha' y_t - sigma' v_hat); with
    `skip_scale` k != 1: sigma_data (g^2 alpha' y_t - g sigma' v_hat), g = k / D of the module docstring)."""
    alpha, sigma, c_in = scaled_alpha_sigma(_expand(t, x_t), sigma_data)
    if skip_scale != 1.0:
        gain = skip_gain(alpha, sigma, skip_scale)
        alpha, sigma = gain.square() * alpha, gain * sigma
    if c_in is None:
        return alpha * x_t - sigma * v
    return sigma_data * (alpha * c_in * x_t - sigma * v)


def v_error_gain(t: Tensor, sigma_data: float) -> Tensor:
    """How an error in a sigma_data model's v reaches the plain v implied by its x0 estimate: sigma_data c_in.

    The plain v error is the x0 error / sigma; multiply a squared v error by this squared to compare models
    of different sigma_data on one scale (1 for sigma_data 1).
    """
    _, _, c_in = scaled_alpha_sigma(t, sigma_data)
    return torch.ones_like(t) if c_in is None else sigma_data * c_in


def eps_from_x0(x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    """The noise implied by x_t and a clean estimate: eps = (x_t - alpha x0) / sigma."""
    alpha, sigma = alpha_sigma(_expand(t, x_t))
    return (x_t - alpha * x0) / sigma


def v_loss(
    net: nn.Module,
    x0: Tensor,
    noise: Tensor,
    t: Tensor,
    *,
    class_id: Tensor | None = None,
    weight: Tensor | None = None,
    sigma_data: float = 1.0,
    skip_scale: float = 1.0,
) -> Tensor:
    """Per-example mean squared error of the v-prediction, shape [B]; `weight` ([B, 1, T] or [B, C, T])
    weights each sample's squared error (see `quiet_weights`); `sigma_data` and `skip_scale` are the model's
    (`ModelConfig`, the module docstring: with skip_scale k != 1 the error of o, times (k / D)^2, which is
    the error of the v that its x0 estimate implies)."""
    x_t = add_noise(x0, noise, t)  # (B, C, T)
    v_hat = net(net_input(x_t, t, sigma_data=sigma_data), t, class_id=class_id)
    target = v_target(x0, noise, t, sigma_data=sigma_data, skip_scale=skip_scale)
    error = (v_hat.float() - target.float()).pow(2)
    if skip_scale != 1.0:
        alpha, sigma, _ = scaled_alpha_sigma(_expand(t, x0), sigma_data)
        error = error * skip_gain(alpha, sigma, skip_scale).float().square()
    if weight is not None:
        error = error * weight
    return error.flatten(1).mean(1)


def quiet_weights(
    x0: Tensor, max_weight: float, *, block: int = QUIET_BLOCK, reach: int = QUIET_REACH
) -> Tensor:
    """Per-sample loss weights [B, 1, T] that grow where the clean clip `x0` [B, C, T] is quiet.

    The weight is (peak / envelope)^2 clamped to [1, max_weight]: 1 where the clip is as loud as its peak,
    `max_weight` at and below 10 log10(max_weight) dB under it. The envelope is the largest |x0| over both
    channels within `reach` blocks of `block` samples either side, so a weight never rises right before an
    onset or inside a decay's quiet zero crossings. Plain MSE on the waveform counts an error of 0.01 under
    the attack (masked) the same as in the silent tail (audible hiss); this makes the tail cost up to
    `max_weight` times more, which is how the error of a perceptual noise-weighting filter is shaped in
    speech coding (Atal & Schroeder 1979, "Predictive coding of speech signals and subjective error
    criteria"), here over time instead of frequency.
    """
    batch, length = x0.shape[0], x0.shape[-1]
    blocks = -(-length // block)
    mag = torch.nn.functional.pad(x0.abs().amax(dim=1), (0, blocks * block - length))  # (B, blocks*block)
    env = mag.reshape(batch, 1, blocks, block).amax(dim=-1)  # (B, 1, blocks)
    env = torch.nn.functional.max_pool1d(env, 2 * reach + 1, stride=1, padding=reach)
    peak = env.amax(dim=-1, keepdim=True)
    # An all-zero clip has ratio 0 everywhere, which the clamp makes 1: no emphasis.
    ratio = (peak / env.clamp_min(1e-12)).square().clamp(1.0, max_weight)
    return ratio.repeat_interleave(block, dim=-1)[..., :length]


def make_denoiser(
    net: nn.Module,
    *,
    class_id: Tensor | None = None,
    guidance: float = 1.0,
    null_class: int | None = None,
    interval: tuple[float, float] = (0.0, 1.0),
    sigma_data: float = 1.0,
    skip_scale: float = 1.0,
) -> Denoiser:
    """Wrap a v-predicting network as x0_hat = D(x_t, t), with classifier-free guidance.

    `sigma_data` and `skip_scale` are the model's (`ModelConfig`): the units of its input and of its v.

    guidance 1.0 is the plain conditional model; > 1 pushes away from the unconditional (null-class)
    prediction, v = v_null + g (v_class - v_null), at the times low < t <= high of `interval` (elsewhere the
    plain conditional prediction: one network evaluation). `null_class` is the id of the "no class" embedding.
    """
    use_guidance = class_id is not None and guidance != 1.0
    if use_guidance and null_class is None:
        raise ValueError("classifier-free guidance needs the null class id")
    low, high = interval

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        t_batch = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        seen = net_input(x_t, t_batch, sigma_data=sigma_data)
        if not use_guidance or not low < float(t_batch[0]) <= high:  # a sampler's batch shares one t
            v = net(seen, t_batch, class_id=class_id)
        else:
            null = torch.full_like(class_id, null_class)
            v_both = net(
                torch.cat([seen, seen]), torch.cat([t_batch, t_batch]), class_id=torch.cat([class_id, null])
            )
            v_class, v_null = v_both.chunk(2)
            v = v_null + guidance * (v_class - v_null)
        return x0_from_v(x_t, v.to(x_t.dtype), t_batch, sigma_data=sigma_data, skip_scale=skip_scale)

    return denoise
