"""The pipeline: generate / vary / interpolate / inpaint on tiny and analytic models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from drumdiff.errors import DrumdiffError, ModelFileError
from drumdiff.modelfile import load_model_file, read_metadata
from drumdiff.pipeline import DEFAULT_GUIDANCE, DrumPipeline, SamplingOptions, load_model
from drumdiff.sampling import log_snr_schedule
from tests.helpers import AnalyticGaussianNet, tiny_config, tiny_model_file


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tiny_model_file(tmp_path_factory.mktemp("m") / "tiny.safetensors")
    return load_model(path, device="cpu")


@pytest.fixture(scope="module")
def analytic():
    scales = torch.tensor([0.3, 0.6])
    return DrumPipeline.from_network(AnalyticGaussianNet(scales), tiny_config()), scales


def test_generate_is_seeded_per_clip(model) -> None:
    a = model.generate(n=3, seed=7, steps=3, batch_size=2)
    assert a.shape == (3, 2, model.length) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, model.generate(n=3, seed=7, steps=3, batch_size=2))
    # Clip i uses seed + i whatever n and the batch size are.
    single = model.generate(n=1, seed=8, steps=3)
    assert torch.allclose(a[1], single[0], atol=1e-5)
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "ddpm"])
def test_every_sampler_through_the_pipeline(model, sampler: str) -> None:
    out = model.generate(n=2, seed=1, steps=2, sampler=sampler, schedule="linear")
    assert out.shape == (2, 2, model.length) and torch.isfinite(out).all()
    assert torch.equal(out, model.generate(n=2, seed=1, steps=2, sampler=sampler, schedule="linear"))


def test_vary_strength_one_is_generate(model) -> None:
    clip = torch.randn(2, model.length) * 0.1
    varied = model.vary(clip, strength=1.0, seed=5, steps=4, n=2)
    assert torch.equal(varied, model.generate(seed=5, steps=4, n=2))


def test_vary_moves_away_with_strength(analytic) -> None:
    pipe, scales = analytic
    clip = torch.randn(2, pipe.length, generator=torch.Generator().manual_seed(0)) * scales.reshape(2, 1)
    distances = []
    for strength in (0.05, 0.2, 0.5, 0.9):
        out = pipe.vary(clip, strength=strength, seed=1, steps=20, n=4)
        distances.append(float((out - clip).pow(2).mean()))
    assert distances == sorted(distances), distances
    assert distances[0] < 0.1 * distances[-1]


def test_interpolate_reconstructs_endpoints_and_is_not_a_crossfade(analytic) -> None:
    pipe, scales = analytic
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, pipe.length, generator=gen) * scales.reshape(2, 1)
    b = torch.randn(2, pipe.length, generator=gen) * scales.reshape(2, 1)
    frames = pipe.interpolate(a, b, frames=3, steps=400)
    snr = [
        10 * math.log10(float(x.pow(2).sum() / (f - x).pow(2).sum()))
        for x, f in ((a, frames[0]), (b, frames[2]))
    ]
    print(f"interpolation endpoint SNR: {snr[0]:.1f} dB, {snr[1]:.1f} dB")
    assert min(snr) >= 30, snr
    crossfade = 0.5 * (a + b)
    assert float((frames[1] - crossfade).pow(2).mean()) > 0.1 * float(crossfade.pow(2).mean())
    # A crossfade of independent clips loses energy; the slerped middle frame keeps it.
    assert float(frames[1].pow(2).mean()) > 0.8 * float(a.pow(2).mean() + b.pow(2).mean()) / 2


def test_inpaint_keeps_the_attack_bit_exact(model) -> None:
    clip = torch.randn(2, model.length, generator=torch.Generator().manual_seed(2)) * 0.3
    keep = 441
    out = model.inpaint(clip, keep=(0, keep), seed=3, steps=4, n=2)
    assert torch.equal(out[:, :, :keep], clip[:, :keep].expand(2, -1, -1))
    assert not torch.allclose(out[:, :, keep:], clip[:, keep:].expand(2, -1, -1))
    default = model.inpaint(clip, seed=3, steps=2)  # default: first 40 ms
    kept = round(0.040 * model.sample_rate)
    assert torch.equal(default[0, :, :kept], clip[:, :kept])


def test_sampling_options_are_checked_when_made_and_equal_their_keywords(model) -> None:
    with pytest.raises(DrumdiffError, match="guidance must be a finite number"):
        SamplingOptions(guidance=math.nan)
    with pytest.raises(DrumdiffError, match="batch size"):
        model.generate(batch_size=0)
    with pytest.raises(DrumdiffError, match="unknown schedule 'cosine'"):
        SamplingOptions(schedule="cosine")
    with pytest.raises(DrumdiffError, match="unknown sampling option stepz"):
        model.generate(stepz=3)
    options = SamplingOptions(steps=3, batch_size=2, sampler="ddim")
    by_options = model.generate(n=3, seed=7, options=options)
    assert torch.equal(by_options, model.generate(n=3, seed=7, steps=3, batch_size=2, sampler="ddim"))
    # keywords override the given options; the rest are kept
    one = model.generate(n=1, seed=7, options=options, batch_size=1)
    assert torch.allclose(one, by_options[:1], atol=1e-6)  # batch size changes only float rounding


def test_bad_requests_name_the_value(model) -> None:
    clip = torch.zeros(2, model.length)
    with pytest.raises(DrumdiffError, match="strength"):
        model.vary(clip, strength=1.5)
    with pytest.raises(DrumdiffError, match="frames"):
        model.interpolate(clip, clip, frames=1)
    with pytest.raises(DrumdiffError, match="steps"):
        model.generate(steps=0)
    with pytest.raises(DrumdiffError, match="unknown sampler 'euler'.*ddim"):
        model.generate(sampler="euler")
    with pytest.raises(DrumdiffError, match="unknown class"):
        model.generate(class_name="cowbell")
    with pytest.raises(DrumdiffError, match="shape"):
        model.vary(torch.zeros(1, 100))


def test_conditional_model_classes_and_guidance(tmp_path) -> None:
    path = tiny_model_file(tmp_path / "cond.safetensors", num_classes=2, class_names=["kick", "snare"])
    pipe = load_model(path, device="cpu")
    kick = pipe.generate(class_name="kick", seed=0, steps=6, guidance=1.0)
    snare = pipe.generate(class_name="snare", seed=0, steps=6, guidance=1.0)
    null = pipe.generate(seed=0, steps=6)
    assert not torch.equal(kick, snare) and not torch.equal(kick, null)
    guided = pipe.generate(class_name="kick", seed=0, steps=6, guidance=3.0)
    assert torch.isfinite(guided).all() and not torch.equal(guided, kick)
    with pytest.raises(DrumdiffError, match="knows kick, snare"):
        pipe.generate(class_name="hat")
    # No guidance given: the default with a class, none without; an explicit scale needs a class.
    assert pipe.guidance_for("kick", SamplingOptions()) == DEFAULT_GUIDANCE != 1.0
    assert pipe.guidance_for(None, SamplingOptions()) == 1.0
    default = pipe.generate(class_name="kick", seed=0, steps=6)
    assert torch.equal(default, pipe.generate(class_name="kick", seed=0, steps=6, guidance=DEFAULT_GUIDANCE))
    with pytest.raises(DrumdiffError, match="guidance 3 needs a class name"):
        pipe.generate(seed=0, steps=6, guidance=3.0)
    # Guidance only inside its interval: one that holds no step of the schedule is plain conditional.
    times = [float(t) for t in log_snr_schedule(6)[:-1]]
    empty = (0.0, min(times) / 2)
    outside = pipe.generate(class_name="kick", seed=0, steps=6, guidance=3.0, guidance_interval=empty)
    assert torch.equal(outside, kick)
    everywhere = pipe.generate(class_name="kick", seed=0, steps=6, guidance=3.0, guidance_interval=(0.0, 1.0))
    assert not torch.equal(everywhere, guided)  # the default interval leaves the first and last steps plain
    for bad in ((0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), (0.1, math.nan)):
        with pytest.raises(DrumdiffError, match="guidance interval"):
            SamplingOptions(guidance_interval=bad)


def test_a_sigma_data_model_file_samples_in_its_units(tmp_path) -> None:
    """sigma_data, skip_scale and output_skip travel in the file, and the pipeline samples with them."""
    scaled = load_model(tiny_model_file(tmp_path / "d.safetensors", sigma_data=0.1, output_skip=False))
    assert scaled.config.sigma_data == 0.1 and scaled.config.output_skip is False
    plain = load_model(tiny_model_file(tmp_path / "p.safetensors", output_skip=False))  # the same weights
    assert plain.config.sigma_data == 1.0
    ours, theirs = scaled.generate(seed=0, steps=6), plain.generate(seed=0, steps=6)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, theirs, atol=1e-3)
    assert torch.equal(ours, scaled.generate(seed=0, steps=6))
    # skip_scale too: the same weights read as the other parameterisation make another sound
    skipped = load_model(
        tiny_model_file(tmp_path / "k.safetensors", sigma_data=0.1, skip_scale=0.2, output_skip=False)
    )
    assert skipped.config.skip_scale == 0.2 and scaled.config.skip_scale == 1.0
    other = skipped.generate(seed=0, steps=6)
    assert torch.isfinite(other).all() and not torch.allclose(other, ours, atol=1e-3)


def test_model_file_round_trip_and_errors(tmp_path) -> None:
    path = tiny_model_file(tmp_path / "a.safetensors")
    meta = read_metadata(path)
    assert meta["config"] == tiny_config() and meta["provenance"] == {"made_by": "tests"}
    torch.manual_seed(0)
    expected_draw = torch.rand(4)
    torch.manual_seed(0)
    loaded = load_model_file(path)
    assert not loaded.net.training
    # built without random initialisation (the file replaces every weight): the global stream is untouched
    assert torch.equal(torch.rand(4), expected_draw)
    tensors = load_file(str(path))
    state = loaded.net.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in tensors.items())
    assert {t.device.type for t in [*loaded.net.parameters(), *loaded.net.buffers()]} == {"cpu"}

    bumped = tmp_path / "future.safetensors"
    save_file(
        tensors, str(bumped), metadata={"format": "drumdiff-model", "format_version": "99", "config": "{}"}
    )
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model_file(bumped)

    wrong = tmp_path / "wrong.safetensors"
    first = next(iter(tensors))
    tensors[first] = torch.zeros(3)
    raw_meta = {
        "format": "drumdiff-model",
        "format_version": "1",
        "config": json.dumps(tiny_config().to_dict()),
    }
    save_file(tensors, str(wrong), metadata=raw_meta)
    with pytest.raises(ModelFileError, match=f"mis-shaped: {first}"):
        load_model_file(wrong)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_model_file(junk)
    with pytest.raises(DrumdiffError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_fp16_model_file_is_half_the_size(tmp_path) -> None:
    from drumdiff.modelfile import save_model_file
    from drumdiff.nn.unet1d import UNet1d

    net = UNet1d(tiny_config())
    full = save_model_file(tmp_path / "f32.safetensors", state_dict=net.state_dict(), config=tiny_config())
    half = save_model_file(
        tmp_path / "f16.safetensors", state_dict=net.state_dict(), config=tiny_config(), fp16=True
    )
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert read_metadata(half)["dtype"] == "float16"
    assert load_model_file(half).net(torch.zeros(1, 2, 4096), torch.tensor([0.5])).dtype == torch.float32


def test_seeds_devices_and_class_names_are_checked_in_the_library(model, tmp_path) -> None:
    """What the CLI checks holds for Python callers too: one DrumdiffError naming the value."""
    from drumdiff.pipeline import SEED_MAX, pick_device

    for seed, n in ((-1, 1), (SEED_MAX + 1, 1), (SEED_MAX, 2), (1.5, 1), (True, 1)):
        with pytest.raises(DrumdiffError, match="seed must be a whole number from 0 to"):
            model.generate(n=n, seed=seed, steps=1)
    assert model.generate(n=1, seed=SEED_MAX, steps=1).shape[0] == 1
    with pytest.raises(DrumdiffError, match="cannot run drumdiff"):
        pick_device("meta")
    pipe = load_model(
        tiny_model_file(tmp_path / "c.safetensors", num_classes=2, class_names=["Hi-Hats", "Kick"])
    )
    assert pipe.resolve_class("hihat") == "Hi-Hats" and pipe.resolve_class("KICKS") == "Kick"
    assert torch.equal(
        pipe.generate(class_name="kick", seed=1, steps=1), pipe.generate(class_name="Kick", seed=1, steps=1)
    )
    with pytest.raises(DrumdiffError, match="interpolate needs at least 2 steps"):
        model.interpolate(torch.zeros(2, model.length), torch.zeros(2, model.length), steps=1)
    clip = torch.randn(2, model.length) * 0.1
    assert (model.vary(clip, strength=1e-9, seed=0, steps=20) - clip).abs().max() < 1e-4
