"""Samplers against exact answers: Gaussian data has a closed-form ideal denoiser and probability-flow ODE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drumdiff.diffusion import add_noise, alpha_sigma, log_snr, t_from_log_snr, v_target, x0_from_v
from drumdiff.sampling import (
    SAMPLERS,
    get_sampler,
    invert_ddim,
    linear_schedule,
    log_snr_schedule,
    sample_ddim,
    sample_dpmpp_2m,
    slerp,
)

# Data ~ N(0, diag(s^2)) with s from 0.05 to 2, one "channel" per scale.
SCALES = torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=torch.float64).reshape(1, 16, 1)


def gaussian_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(0, s^2): alpha s^2 x / (alpha^2 s^2 + sigma^2)."""
    alpha, sigma = alpha_sigma(t.reshape(-1, 1, 1))
    return alpha * SCALES**2 * x / (alpha**2 * SCALES**2 + sigma**2)


def flow(x: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """Exact probability-flow map from time t to time s: each dimension scales by its marginal std ratio."""
    a_t, s_t = alpha_sigma(torch.tensor(t, dtype=torch.float64))
    a_s, s_s = alpha_sigma(torch.tensor(s, dtype=torch.float64))
    return x * torch.sqrt((a_s**2 * SCALES**2 + s_s**2) / (a_t**2 * SCALES**2 + s_t**2))


def sampler_error(name: str, steps: int) -> float:
    ts = log_snr_schedule(steps, t_max=0.999, t_min=0.001)
    x = torch.randn(4, 16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # x at t = 0.999 is N(0, alpha^2 s^2 + sigma^2), within 1e-5 of N(0, 1).
    out = get_sampler(name)(gaussian_denoiser, x, ts)
    # The schedule's last step (t_min -> 0) returns the ideal denoiser's answer at t_min.
    t_min = float(ts[-2])
    exact = gaussian_denoiser(flow(x, float(ts[0]), t_min), torch.tensor([t_min], dtype=torch.float64))
    return float((out - exact).pow(2).mean().sqrt())


@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("dpmpp-2m", 2)])
def test_sampler_error_shrinks_at_its_order(name: str, order: int) -> None:
    # Doubling the evaluations from 5 to 40 must shrink the error every time, and by about 2^order once
    # out of the pre-asymptotic range: at 5-10 lambda-uniform steps over this wide log-SNR range (h > 1.4)
    # DPM-Solver++(2M)'s h^2 and h^3 error terms have opposite signs and partly cancel.
    steps = np.array([5, 10, 20, 40])
    errors = np.array([sampler_error(name, int(n)) for n in steps])
    assert np.all(np.diff(errors) < 0), errors
    slope = -np.log(errors[-1] / errors[-2]) / np.log(2)
    assert order - 0.3 < slope < order + 0.5, (slope, errors)


def test_dpmpp_2m_beats_ddim_at_ten_evaluations() -> None:
    assert sampler_error("dpmpp-2m", 10) <= sampler_error("ddim", 10) / 5


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_shaped_finite_and_seeded(name: str) -> None:
    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 16, 64, dtype=torch.float64, generator=gen)
        noise_fn = lambda: torch.randn(2, 16, 64, dtype=torch.float64, generator=gen)  # noqa: E731
        return get_sampler(name)(gaussian_denoiser, x, linear_schedule(6), noise_fn=noise_fn)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (2, 16, 64)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unknown_sampler_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="ddim.*dpmpp-2m"):
        get_sampler("euler")


def test_schedules() -> None:
    lin = linear_schedule(4)
    assert lin.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    ts = log_snr_schedule(5)
    assert float(ts[0]) == 1.0 and float(ts[-1]) == 0.0 and len(ts) == 6
    assert torch.all(ts[1:] < ts[:-1])
    lams = log_snr(ts[1:-1])
    assert torch.allclose(lams.diff(), lams.diff()[:1].expand(3))
    assert log_snr_schedule(1, t_max=0.4).tolist() == [0.4, 0.0]
    with pytest.raises(ValueError, match="steps"):
        linear_schedule(0)


def test_diffusion_identities() -> None:
    gen = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 2, 32, generator=gen), torch.randn(3, 2, 32, generator=gen)
    t = torch.tensor([0.1, 0.5, 0.9])
    x_t = add_noise(x0, noise, t)
    assert torch.allclose(x0_from_v(x_t, v_target(x0, noise, t), t), x0, atol=1e-6)
    lam = log_snr(t)
    assert torch.allclose(t_from_log_snr(lam), t, atol=1e-6)


def test_sigma_data_units_round_trip_and_keep_the_network_at_unit_scale() -> None:
    """A sigma_data model sees and predicts unit-variance signals for data of that RMS, at every noise level."""
    from drumdiff.diffusion import net_input, v_error_gain

    gen = torch.Generator().manual_seed(4)
    x0 = 0.1 * torch.randn(5, 2, 4096, generator=gen)  # data of RMS 0.1, like the corpus
    noise = torch.randn(5, 2, 4096, generator=gen)
    t = torch.tensor([0.0, 0.02, 0.5, 0.9, 1.0])
    x_t = add_noise(x0, noise, t)
    v = v_target(x0, noise, t, sigma_data=0.1)
    assert torch.allclose(x0_from_v(x_t, v, t, sigma_data=0.1), x0, atol=1e-6)
    for name, signal in (("input", net_input(x_t, t, sigma_data=0.1)), ("v", v)):
        rms = signal.pow(2).mean(dim=(1, 2)).sqrt()
        assert torch.allclose(rms, torch.ones(5), atol=0.03), (name, rms)
    assert net_input(x_t, t).equal(x_t)  # sigma_data 1: the plain v-parameterisation, untouched
    # The plain parameterisation's input at t = 0 and its v at t = 1 are the data: 20 dB under unit scale.
    assert float(x_t[0].std()) < 0.11 and float(v_target(x0, noise, torch.ones(5))[4].std()) < 0.11
    # An error e in a sigma_data model's v is the error gain * e in the plain v implied by its x0 estimate.
    x0, x_t, v, t_inner = x0[1:4].double(), x_t[1:4].double(), v[1:4].double(), t[1:4].double()
    error = 0.01 * torch.randn(x_t.shape, generator=gen, dtype=torch.float64)
    moved = x0_from_v(x_t, v + error, t_inner, sigma_data=0.1) - x0
    _, sigma = alpha_sigma(t_inner)
    implied_plain_v_error = -moved / sigma.view(-1, 1, 1)
    gain = v_error_gain(t_inner, 0.1).view(-1, 1, 1)
    assert torch.allclose(implied_plain_v_error, gain * error, atol=1e-6)
    assert torch.equal(v_error_gain(t_inner, 1.0), torch.ones(3))


def test_sigma_data_one_is_the_plain_parameterisation_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(6)
    x_t, v = torch.randn(3, 2, 64, generator=gen), torch.randn(3, 2, 64, generator=gen)
    t = torch.tensor([0.1, 0.5, 0.9])
    alpha, sigma = (s.view(-1, 1, 1) for s in alpha_sigma(t))
    assert torch.equal(x0_from_v(x_t, v, t, sigma_data=1.0), alpha * x_t - sigma * v)
    assert torch.equal(v_target(x_t, v, t, sigma_data=1.0), alpha * v - sigma * x_t)


def test_skip_scale_round_trips_and_keeps_silence_cheap_at_low_noise() -> None:
    """skip_scale k < 1: x0 comes back from its target, an error in o costs what the same x0 error costs
    at k = 1 after the loss's weight, and a silent clip at low noise asks for a small o instead of a copy of
    the input noise; k = 1 is the model of before, bit for bit."""
    from drumdiff.diffusion import scaled_alpha_sigma, v_loss

    gen = torch.Generator().manual_seed(8)
    x0 = 0.1 * torch.randn(4, 2, 2048, generator=gen, dtype=torch.float64)
    noise = torch.randn(4, 2, 2048, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.0, 0.05, 0.5, 1.0], dtype=torch.float64)
    x_t = add_noise(x0, noise, t)
    for k in (1.0, 0.3, 0.05):
        o = v_target(x0, noise, t, sigma_data=0.1, skip_scale=k)
        assert torch.allclose(x0_from_v(x_t, o, t, sigma_data=0.1, skip_scale=k), x0, atol=1e-9), k
    # v_loss weighs o's error as the error of the v that its x0 estimate implies (x0 error / sigma'),
    # so every k trains on the same x0 errors

    alpha, sigma, _ = scaled_alpha_sigma(t.view(-1, 1, 1), 0.1)
    for k in (1.0, 0.3, 0.05):
        o = v_target(x0, noise, t, sigma_data=0.1, skip_scale=k)
        wrong = o + 0.01 * torch.randn(o.shape, generator=gen, dtype=torch.float64)
        loss = v_loss(
            lambda y, tt, class_id=None, wrong=wrong: wrong, x0, noise, t, sigma_data=0.1, skip_scale=k
        )
        moved = x0_from_v(x_t, wrong, t, sigma_data=0.1, skip_scale=k) - x0
        implied = (moved[1:] / (0.1 * sigma[1:])).pow(2).flatten(1).mean(1)  # sigma' = 0 at t = 0
        assert torch.allclose(loss[1:].double(), implied, rtol=1e-4), k
    # a silent clip at t = 0.05 (noise about at the data's scale): k = 1 asks for most of the input noise back
    silent = torch.zeros(1, 2, 2048, dtype=torch.float64)
    low = torch.tensor([0.05], dtype=torch.float64)
    copy = v_target(silent, noise[:1], low, sigma_data=0.1).std()
    small = v_target(silent, noise[:1], low, sigma_data=0.1, skip_scale=0.05).std()
    assert float(copy) > 0.75 and float(small) < 0.1
    # k = 1 leaves the earlier computation untouched
    plain = x0_from_v(x_t.float(), noise.float(), t.float(), sigma_data=0.1)
    assert torch.equal(
        plain, x0_from_v(x_t.float(), noise.float(), t.float(), sigma_data=0.1, skip_scale=1.0)
    )


def test_ddim_inversion_reconstructs_on_the_analytic_model() -> None:
    x0 = torch.randn(2, 16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * SCALES
    down = log_snr_schedule(400, t_max=1.0, t_min=1e-3)
    latent = invert_ddim(gaussian_denoiser, x0, down[:-1].flip(0))
    back = sample_ddim(gaussian_denoiser, latent, down)
    snr_db = 10 * math.log10(float(x0.pow(2).sum() / (back - x0).pow(2).sum()))
    assert snr_db > 30, snr_db


def test_dpmpp_2m_is_first_order_from_pure_noise() -> None:
    # From t = 1 the first step equals DDIM's.
    x = torch.randn(1, 16, 8, dtype=torch.float64)
    ts = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose(sample_dpmpp_2m(gaussian_denoiser, x, ts), sample_ddim(gaussian_denoiser, x, ts))


def test_slerp_endpoints_and_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4096, generator=gen), torch.randn(2, 4096, generator=gen)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert abs(float(mid.norm() / a.norm()) - 1) < 0.05  # a linear mix would lose ~30 % of the norm


def test_guidance_runs_two_evaluations_only_inside_its_interval() -> None:
    from drumdiff.diffusion import make_denoiser

    batches = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, *, class_id=None):
            batches.append((x.shape[0], sorted(set(class_id.tolist()))))
            return torch.zeros_like(x) + class_id.view(-1, 1, 1).float()  # v depends on the class only

    ids = torch.tensor([1, 1])
    denoise = make_denoiser(Spy(), class_id=ids, guidance=3.0, null_class=4, interval=(0.1, 0.99))
    x = torch.ones(2, 2, 8)
    inside = denoise(x, torch.tensor(0.5))
    plain = denoise(x, torch.tensor(0.995))
    low = denoise(x, torch.tensor(0.05))  # below the interval
    assert batches == [(4, [1, 4]), (2, [1]), (2, [1])]
    # v = v_null + 3 (v_class - v_null) = 4 + 3 (1 - 4) = -5 inside; the class's own v = 1 outside.
    expected_inside = make_denoiser(lambda x, t, class_id: torch.full_like(x, -5.0))(x, torch.tensor(0.5))
    assert torch.allclose(inside, expected_inside)
    expected_plain = make_denoiser(lambda x, t, class_id: torch.ones_like(x))(x, torch.tensor(0.995))
    assert torch.allclose(plain, expected_plain) and low.shape == x.shape


def test_denoiser_feeds_a_sigma_data_model_its_units() -> None:
    """make_denoiser(sigma_data=d) gives the network y_t = c_in x_t and reads its v in units of d."""
    from drumdiff.diffusion import make_denoiser, net_input

    seen = []

    def net(x, t, class_id=None):
        seen.append(x)
        return torch.zeros_like(x)

    x, t = torch.randn(2, 2, 8, generator=torch.Generator().manual_seed(2)), torch.tensor(0.7)
    x0 = make_denoiser(net, sigma_data=0.1)(x, t)
    assert torch.allclose(seen[0], net_input(x, t.expand(2), sigma_data=0.1))
    assert not torch.allclose(seen[0], x)
    assert torch.allclose(x0, x0_from_v(x, torch.zeros_like(x), t.expand(2), sigma_data=0.1))
