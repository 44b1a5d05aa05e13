"""UNet1d: parity with the original UNetV0, shapes, errors, class conditioning, gradient checkpointing."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import torch

from drumdiff.config import ModelConfig, load_preset, preset_names
from drumdiff.convert import map_original_unet_state_dict, original_key_map
from drumdiff.errors import ModelFileError
from drumdiff.nn.unet1d import UNet1d
from tests.conftest import require_original

SEED_PARAMETERS = 31_574_724


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def original_unet(config: ModelConfig, *, seed: int = 0) -> torch.nn.Module:
    """The original UNetV0 in `config`'s layout, with every parameter moved off its initial value.

    Fresh GroupNorm/LayerNorm weights are exactly 1 and biases 0; perturbing them all makes the parity
    test see every parameter.
    """
    adp = require_original()
    torch.manual_seed(seed)
    net = adp.UNetV0(
        dim=1,
        in_channels=config.audio_channels,
        channels=list(config.channels),
        factors=list(config.factors),
        items=list(config.items),
        attentions=list(config.attentions),
        attention_heads=config.attention_heads,
        attention_features=config.attention_features,
        resnet_groups=config.resnet_groups,
        modulation_features=config.modulation_features,
    )
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return net.eval()


def converted(original: torch.nn.Module, config: ModelConfig) -> UNet1d:
    ours = UNet1d(config).eval()
    ours.load_state_dict(map_original_unet_state_dict(original.state_dict(), config=config))
    return ours


@pytest.fixture(scope="module")
def seed_pair() -> tuple[torch.nn.Module, UNet1d]:
    config = load_preset("seed")
    original = original_unet(config)
    return original, converted(original, config)


@pytest.mark.parametrize(
    ("preset", "parameters"), [("seed", SEED_PARAMETERS), ("small", 10_864_724), ("tiny", 158_492)]
)
def test_preset_parameter_counts(preset: str, parameters: int) -> None:
    """The counts that docs/performance.md and the preset descriptions quote."""
    with torch.device("meta"):
        net = UNet1d(load_preset(preset))
    assert sum(p.numel() for p in net.parameters()) == parameters


def test_seed_parity_with_original(seed_pair) -> None:
    original, ours = seed_pair
    assert sum(p.numel() for p in original.parameters()) == SEED_PARAMETERS
    generator = torch.Generator().manual_seed(1)
    cases = [
        (torch.randn(3, 2, 8192, generator=generator), torch.tensor([0.0, 0.37, 1.0])),
        (torch.randn(1, 2, 32768, generator=generator), torch.tensor([0.81])),  # the real length
    ]
    with torch.no_grad():
        for x, t in cases:
            theirs = original(x, time=t)
            v = ours(x, t)
            assert v.shape == x.shape and v.is_contiguous()
            assert relative_error(v, theirs) < 1e-4
            # The output is x + scale * f(x): check f too, so that the skip cannot hide a mismatch.
            assert relative_error(v - x, theirs - x) < 1e-4


def test_other_layout_parity_with_original_including_gradients() -> None:
    config = load_preset("tiny").replace(length=4096)
    original = original_unet(config, seed=3)
    ours = converted(original, config)
    x, t = torch.randn(2, config.audio_channels, config.length), torch.rand(2)
    theirs, v = original(x, time=t), ours(x, t)
    assert relative_error(v - x, theirs - x) < 1e-4
    theirs.square().mean().backward()
    v.square().mean().backward()
    their_grads = {name: p.grad for name, p in original.named_parameters()}
    for name, theirs_name in original_key_map(config).items():
        grad = ours.get_parameter(name).grad
        assert relative_error(grad, their_grads[theirs_name]) < 1e-3, name


@pytest.mark.parametrize("preset", preset_names())
def test_preset_description_states_its_parameter_count(preset: str) -> None:
    description = json.loads((resources.files("drumdiff") / "presets" / f"{preset}.json").read_text())[
        "description"
    ]
    with torch.device("meta"):
        count = sum(p.numel() for p in UNet1d(load_preset(preset)).parameters())
    exact = re.search(r"([\d,]{5,}) parameters", description)
    if exact:
        assert int(exact.group(1).replace(",", "")) == count
    else:
        stated = float(re.search(r"([\d.]+)M parameters", description).group(1))
        assert stated == round(count / 1e6, 2)


@pytest.mark.parametrize("preset", ["seed", "small", "tiny", "lean"])
def test_key_map_is_one_to_one(preset: str) -> None:
    config = load_preset(preset)
    with torch.device("meta"):
        names = set(UNet1d(config).state_dict())
    key_map = original_key_map(config)
    assert set(key_map) == names
    assert len(set(key_map.values())) == len(key_map)


def test_mapping_names_missing_extra_and_misshaped_tensors() -> None:
    config = load_preset("tiny")
    state = original_unet(config).state_dict()
    first, second = list(state)[:2]
    state.pop(first)
    state["blocks.9.surprise"] = torch.zeros(1)
    state[second] = torch.zeros(3, 3)
    with pytest.raises(ModelFileError) as error:
        map_original_unet_state_dict(state, config=config)
    message = str(error.value)
    assert f"missing: {first}" in message
    assert "unexpected: blocks.9.surprise" in message
    assert f"mis-shaped: {second} (3, 3)" in message


def test_shapes_and_bad_input() -> None:
    config = load_preset("tiny")
    net = UNet1d(config)
    x = torch.randn(2, config.audio_channels, 2 * config.downsampling)
    with torch.no_grad():
        assert net(x, torch.rand(2)).shape == x.shape
        assert net(x, torch.tensor(0.5)).shape == x.shape  # a scalar t is used for the whole batch
    with pytest.raises(ValueError, match="not a multiple of the total downsampling"):
        net(torch.randn(1, config.audio_channels, config.downsampling + 1), torch.rand(1))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(1, config.audio_channels + 1, config.downsampling), torch.rand(1))
    with pytest.raises(ValueError, match="shape"):
        net(x, torch.rand(3))
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.rand(2), class_id=torch.zeros(2, dtype=torch.long))


def test_class_conditioning() -> None:
    config = load_preset("tiny").replace(num_classes=3, length=4096)
    net = UNet1d(config).eval()
    assert net.class_embedding.weight.shape == (4, config.modulation_features)  # 3 classes + null
    torch.nn.init.normal_(net.class_embedding.weight)
    x, t = torch.randn(2, config.audio_channels, config.length), torch.rand(2)
    with torch.no_grad():
        null = net(x, t, class_id=torch.full((2,), 3))
        assert torch.equal(net(x, t), null)  # no class_id: the null class
        kick, snare = net(x, t, class_id=torch.tensor([0, 0])), net(x, t, class_id=torch.tensor([1, 1]))
    assert not torch.allclose(kick, snare)
    assert not torch.allclose(kick, null)
    with pytest.raises(ValueError, match="class_id"):
        net(x, t, class_id=torch.tensor([0]))


def test_gradient_checkpointing_gives_equal_gradients() -> None:
    config = load_preset("tiny").replace(num_classes=2, length=4096)
    torch.manual_seed(0)
    net = UNet1d(config)
    x, t, c = torch.randn(2, config.audio_channels, config.length), torch.rand(2), torch.tensor([0, 2])

    def gradients(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net.zero_grad()
        net.grad_checkpointing = checkpointing
        out = net(x, t, class_id=c)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}

    out_plain, plain = gradients(False)
    out_ckpt, ckpt = gradients(True)
    assert torch.allclose(out_plain, out_ckpt)
    for name, grad in plain.items():
        torch.testing.assert_close(ckpt[name], grad, msg=name)


def test_without_the_output_skip_the_input_is_not_added_to_the_output() -> None:
    """output_skip False drops exactly level 0's skip: the same weights give the plain output minus x."""
    config = load_preset("tiny").replace(num_classes=2, length=4096)
    torch.manual_seed(0)
    plain = UNet1d(config).eval()
    no_skip = UNet1d(config.replace(output_skip=False)).eval()
    no_skip.load_state_dict(plain.state_dict())
    x, t, c = torch.randn(2, config.audio_channels, config.length), torch.rand(2), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(no_skip(x, t, class_id=c), plain(x, t, class_id=c) - x)
    no_skip.train()
    no_skip.grad_checkpointing = True  # the missing skip also goes through checkpointed levels
    no_skip(x, t, class_id=c).square().mean().backward()
    assert all(p.grad is not None for p in no_skip.parameters() if p.requires_grad)


@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_sigma_data_must_be_a_positive_number(value: object) -> None:
    with pytest.raises(ValueError, match="sigma_data"):
        ModelConfig(sigma_data=value)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, float("nan"), float("inf"), "0.1", True])
def test_skip_scale_must_be_a_number_in_zero_to_one(value: object) -> None:
    with pytest.raises(ValueError, match="skip_scale must be a number in"):
        ModelConfig(skip_scale=value)


def test_output_skip_must_be_a_boolean(tmp_path) -> None:
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"output_skip": "false"}))  # a string would be truthy
    with pytest.raises(ValueError, match=r"p\.json: output_skip must be true or false, got 'false'"):
        load_preset(str(preset))


def test_a_preset_takes_its_base_fields_and_replaces_its_own(tmp_path) -> None:
    assert load_preset("small-edm") == load_preset("small").replace(sigma_data=0.1, output_skip=False)
    assert load_preset("small-edm-pos") == load_preset("small-edm").replace(position_features=16)
    assert load_preset("small-edm-pos-skip") == load_preset("small-edm-pos").replace(skip_scale=0.1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "wide.json").write_text(json.dumps({"base": "tiny", "modulation_features": 64}))
    # A file's base path is relative to the file, not to the working directory.
    (tmp_path / "mine" / "wider.json").write_text(json.dumps({"base": "wide.json", "resnet_groups": 2}))
    wider = load_preset(str(tmp_path / "mine" / "wider.json"))
    assert wider == load_preset("tiny").replace(modulation_features=64, resnet_groups=2)


def test_a_bad_preset_base_is_named(tmp_path) -> None:
    loop = tmp_path / "a.json"
    loop.write_text(json.dumps({"base": str(tmp_path / "b.json")}))
    (tmp_path / "b.json").write_text(json.dumps({"base": str(loop)}))
    with pytest.raises(
        ValueError, match=r"b\.json: its bases form a loop: .*a\.json -> .*b\.json -> .*a\.json"
    ):
        load_preset(str(loop))
    missing = tmp_path / "m.json"
    missing.write_text(json.dumps({"base": "no-such-preset"}))
    with pytest.raises(ValueError, match="unknown preset 'no-such-preset'"):
        load_preset(str(missing))
    typed = tmp_path / "t.json"
    typed.write_text(json.dumps({"base": 3}))
    with pytest.raises(ValueError, match=r"t\.json: base must be a preset name or a \.json path, got 3"):
        load_preset(str(typed))
    broken = tmp_path / "x.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"x\.json: not valid JSON"):
        load_preset(str(broken))


def test_clip_positions_start_at_zero_weights_and_then_tell_tail_from_attack() -> None:
    """Position projections start at zero (a warm start from a model without them begins as that model);
    once trained, what they add depends on where in the clip a frame is."""
    config = load_preset("tiny").replace(num_classes=2, length=4096, output_skip=False)
    torch.manual_seed(0)
    plain = UNet1d(config).eval()
    placed = UNet1d(config.replace(position_features=6)).eval()
    missing, unexpected = placed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".position." in key for key in missing)
    x, t, c = torch.randn(2, config.audio_channels, config.length), torch.rand(2), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(placed(x, t, class_id=c), plain(x, t, class_id=c))
        for level in placed.levels:
            level.position.weight.normal_(0, 0.3)
        added = placed(x, t, class_id=c) - plain(x, t, class_id=c)
    head, tail = added[..., :1024].square().mean(), added[..., -1024:].square().mean()
    assert head > 1e-6 and tail > 1e-6 and not torch.isclose(head, tail, rtol=0.05)
    placed.train()
    placed.grad_checkpointing = True
    placed(x, t, class_id=c).square().mean().backward()
    assert all(level.position.weight.grad.abs().sum() > 0 for level in placed.levels)


def test_clip_position_features_count_from_the_clip_start() -> None:
    """Frame centres in units of the clip length, whatever the input's length: a crop of the attack sees
    the attack's positions, and the slowest cosine falls steadily from the first frame to the last."""
    from drumdiff.nn.layers import clip_position_features

    cpu = torch.device("cpu")
    full = clip_position_features(64, 4, 256, 8, device=cpu, dtype=torch.float64)
    crop = clip_position_features(16, 4, 256, 8, device=cpu, dtype=torch.float64)
    assert full.shape == (1, 8, 64) and crop.shape == (1, 8, 16)
    torch.testing.assert_close(crop, full[..., :16])
    centres = (torch.arange(64, dtype=torch.float64) + 0.5) * 4 / 256
    close = {"atol": 1e-5, "rtol": 0}  # computed in float32
    torch.testing.assert_close(full[0, 4], torch.cos(torch.pi * centres), **close)  # the slowest cosine
    torch.testing.assert_close(full[0, 3], torch.sin(8 * torch.pi * centres), **close)  # the fastest sine
    assert (full[0, 4].diff() < 0).all()


@pytest.mark.parametrize("value", [-2, 3, 1.5, True, "16"])
def test_position_features_must_be_an_even_whole_number(value: object) -> None:
    with pytest.raises(
        ValueError, match=f"position_features must be an even whole number >= 0, got {value!r}"
    ):
        ModelConfig(position_features=value)
