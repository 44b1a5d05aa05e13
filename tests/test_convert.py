"""`drumdiff convert`: original tiny-audio-diffusion checkpoints -> drumdiff model files.

The fixtures are made the way the original made them: an audio-diffusion-pytorch `DiffusionModel(net_t=UNetV0)`
beside an ema-pytorch `EMA`, inside a Lightning-style checkpoint dict with optimizer state, random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bench.original_lib import SEED_LAYOUT
from drumdiff.cli import main
from drumdiff.config import load_preset
from drumdiff.diffusion import make_denoiser
from drumdiff.modelfile import load_model_file
from drumdiff.sampling import linear_schedule, sample_ddim
from tests.conftest import require, require_original

# The seed layout as tiny-audio-diffusion passed it to DiffusionModel (which adds dim=1 itself).
SEED = {key: value for key, value in SEED_LAYOUT.items() if key != "dim"}
# A small layout of the same kind, for the cheap tests (64 features per head and 8 groups, like the seed).
SMALL = dict(
    in_channels=2,
    channels=[8, 16, 32, 64],
    factors=[4, 4, 4, 4],
    items=[1, 1, 1, 1],
    attentions=[0, 0, 0, 1],
    attention_heads=2,
    attention_features=64,
    modulation_features=64,
)
EMA_STEP = 1234


def rebuilt(layout: dict, module: torch.nn.Module) -> torch.nn.Module:
    """A fresh DiffusionModel holding `module`'s weights.

    Needed to run EMA weights in the original: a-unet builds its blocks as closures over the modules they
    were built with, so the deep copy that ema-pytorch makes still computes with the *online* weights.
    """
    adp = require_original()
    fresh = adp.DiffusionModel(net_t=adp.UNetV0, **layout)
    fresh.load_state_dict(module.state_dict())
    return fresh.eval()


def build_original(layout: dict, *, seed: int = 0):
    """(DiffusionModel, EMA) with every weight moved off its initial value and EMA weights != online ones."""
    adp = require_original()
    ema_pytorch = require("ema_pytorch")
    torch.manual_seed(seed)
    model = adp.DiffusionModel(net_t=adp.UNetV0, **layout)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    ema = ema_pytorch.EMA(model, beta=0.995, power=0.7)
    with torch.no_grad():
        for param in ema.ema_model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    # The 2023 checkpoints hold ema-pytorch's counters with shape [1].
    ema.initted = torch.tensor([True])
    ema.step = torch.tensor([EMA_STEP])
    ema.ema_model.eval()  # (EMA.eval() itself returns the averaged model, not the EMA)
    return model.eval(), ema


class LightningModel(torch.nn.Module):
    """The parameter layout of tiny-audio-diffusion's `Model(pl.LightningModule)`: model + model_ema."""

    def __init__(self, model: torch.nn.Module, ema: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.model_ema = ema


def save_lightning_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module) -> Path:
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3
    )
    for param in model.parameters():
        param.grad = torch.full_like(param, 1e-3)
    optimizer.step()  # creates the Adam moments that a real checkpoint holds
    model.zero_grad(set_to_none=True)
    model.load_state_dict(weights)  # and keeps the weights the tests compare against
    checkpoint = {
        "epoch": 7,
        "global_step": EMA_STEP,
        "pytorch-lightning_version": "1.9.4",
        "state_dict": LightningModel(model, ema).state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'valid_loss', 'mode': 'min'}": {
                "best_model_score": torch.tensor(0.02),
                "best_model_path": "logs/ckpts/last.ckpt",
                "best_k_models": {},
                "kth_value": torch.tensor(float("inf")),
            }
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
    }
    torch.save(checkpoint, path)
    return path


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def convert(*args: object) -> int:
    return main(["convert", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def seed_checkpoint(tmp_path_factory):
    model, ema = build_original(SEED)
    path = save_lightning_checkpoint(tmp_path_factory.mktemp("ckpt") / "kicks-epoch=7.ckpt", model, ema)
    return path, model, ema


@pytest.fixture(scope="module")
def small_original():
    return build_original(SMALL, seed=1)


def test_converts_the_original_lightning_checkpoint(seed_checkpoint, tmp_path) -> None:
    path, _, ema = seed_checkpoint
    out = tmp_path / "kick.safetensors"
    assert convert(path, out) == 0
    loaded = load_model_file(out)
    assert loaded.config == load_preset("seed")
    assert loaded.class_names == ["kicks-epoch=7"]
    provenance = loaded.metadata["provenance"]
    assert provenance["weights"] == "ema" and provenance["ema_step"] == EMA_STEP
    assert provenance["converted_from"] == path.name and provenance["global_step"] == EMA_STEP
    assert sum(p.numel() for p in loaded.net.parameters()) == 31_574_724

    original = rebuilt(SEED, ema.ema_model)  # the EMA weights are the default
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 2, 4096, generator=generator), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        theirs, ours = original.net(x, time=t), loaded.net(x, t)
    assert relative_error(ours, theirs) < 1e-4
    assert relative_error(ours - x, theirs - x) < 1e-4

    noise = torch.randn(1, 2, 4096, generator=generator)
    theirs = original.sample(noise, num_steps=10)  # the original's VSampler
    ours = sample_ddim(make_denoiser(loaded.net), noise, linear_schedule(10))
    assert torch.isfinite(ours).all()
    assert relative_error(ours, theirs) < 1e-3


def test_no_ema_fp16_and_name(small_original, tmp_path) -> None:
    model, ema = small_original
    path = save_lightning_checkpoint(tmp_path / "mine.ckpt", model, ema)
    out = tmp_path / "mine.safetensors"
    assert convert(path, out, "--no-ema", "--fp16", "--name", "snare") == 0
    loaded = load_model_file(out)
    assert loaded.class_names == ["snare"] and loaded.metadata["provenance"]["weights"] == "online"
    with safe_open(str(out), framework="pt") as handle:
        assert handle.get_tensor("time_embedding.mlp.weight").dtype == torch.float16
    online = model.net.state_dict()["blocks.1.blocks.0.0.weight"]
    torch.testing.assert_close(loaded.net.time_embedding.mlp.weight, online.half().float())


@pytest.mark.parametrize("what", ["DiffusionModel", "UNetV0", "EMA"])
def test_plain_state_dicts(small_original, tmp_path, what: str) -> None:
    model, ema = small_original
    state = {"DiffusionModel": model, "UNetV0": model.net, "EMA": ema}[what].state_dict()
    torch.save(state, tmp_path / "weights.pt")
    assert convert(tmp_path / "weights.pt", tmp_path / "out.safetensors") == 0
    loaded = load_model_file(tmp_path / "out.safetensors")
    source = rebuilt(SMALL, ema.ema_model).net if what == "EMA" else model.net
    x, t = torch.randn(1, 2, loaded.config.downsampling * 2), torch.rand(1)
    with torch.no_grad():
        assert relative_error(loaded.net(x, t) - x, source(x, time=t) - x) < 1e-4


def test_the_originals_ema_copy_computes_with_the_online_weights(small_original) -> None:
    """Why the tests rebuild EMA models: a quirk of the original that users converting with --ema should know."""
    model, ema = small_original
    x, t = torch.randn(1, 2, 1024), torch.rand(1)
    with torch.no_grad():
        assert torch.equal(ema.ema_model.net(x, time=t), model.net(x, time=t))
        assert not torch.equal(rebuilt(SMALL, ema.ema_model).net(x, time=t), model.net(x, time=t))


@pytest.mark.parametrize("module", ["torch", "audio_diffusion_pytorch"])
def test_whole_pickled_model_is_refused_with_advice(tmp_path, capsys, module: str) -> None:
    # (a-unet networks themselves cannot be pickled whole: their classes are local to functions)
    whole = (
        torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3))
        if module == "torch"
        else require_original().LinearSchedule()
    )
    torch.save(whole, tmp_path / "model.pt")
    assert convert(tmp_path / "model.pt", tmp_path / "out.safetensors") == 2
    err = capsys.readouterr().err
    assert "whole pickled model" in err and module in err and "state_dict()" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


class RunsCode:
    """Unpickling this would create a folder: the marker that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, capsys, zip_format: bool) -> None:
    marker = tmp_path / "code-ran"
    payload = {"state_dict": {"model.net.x": torch.zeros(2)}, "hook": RunsCode(marker)}
    torch.save(payload, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=zip_format)
    assert convert(tmp_path / "evil.ckpt", tmp_path / "out.safetensors") == 2
    err = capsys.readouterr().err
    assert "refused" in err and "mkdir" in err
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_truncated_file_is_refused(small_original, tmp_path, capsys) -> None:
    model, ema = small_original
    data = save_lightning_checkpoint(tmp_path / "full.ckpt", model, ema).read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    assert convert(tmp_path / "cut.ckpt", tmp_path / "out.safetensors") == 2
    assert "truncated or damaged" in capsys.readouterr().err
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert convert(tmp_path / "empty.ckpt", tmp_path / "out.safetensors") == 2


def test_other_architecture_names_missing_and_unexpected_tensors(tmp_path, capsys) -> None:
    other = torch.nn.Sequential(torch.nn.Conv1d(2, 8, 3), torch.nn.Conv1d(8, 2, 3))
    state = {
        f"model.{alias}{k}": v for alias in ("net.", "diffusion.net.") for k, v in other.state_dict().items()
    }
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "other.ckpt")
    assert convert(tmp_path / "other.ckpt", tmp_path / "out.safetensors") == 2
    err = capsys.readouterr().err
    assert "missing: blocks.0.to_out.bias" in err
    assert "unexpected: 0.bias, 0.weight, 1.bias, 1.weight" in err


def test_damaged_weights_name_each_tensor(small_original, tmp_path, capsys) -> None:
    model, _ = small_original
    state = dict(model.net.state_dict())
    del state["blocks.0.weights"]
    conv = "blocks.2.net.block.blocks.1.block.blocks.0.blocks.0.2.weight"
    state[conv] = torch.zeros(8, 8, 5)
    state["blocks.2.net.surprise"] = torch.zeros(3)
    torch.save(state, tmp_path / "damaged.pt")
    assert convert(tmp_path / "damaged.pt", tmp_path / "out.safetensors") == 2
    err = capsys.readouterr().err
    assert "missing: blocks.0.weights" in err
    assert "unexpected: blocks.2.net.surprise" in err
    assert f"mis-shaped: {conv} (8, 8, 5) (expected (8, 8, 3))" in err


def test_ema_that_never_updated_is_refused(small_original, tmp_path, capsys) -> None:
    model, ema = small_original
    state = LightningModel(model, ema).state_dict()
    state["model_ema.initted"] = torch.tensor([False])
    torch.save({"state_dict": state}, tmp_path / "early.ckpt")
    assert convert(tmp_path / "early.ckpt", tmp_path / "out.safetensors") == 2
    assert "--no-ema" in capsys.readouterr().err
    assert convert(tmp_path / "early.ckpt", tmp_path / "out.safetensors", "--no-ema") == 0


def test_checkpoint_without_ema_gives_training_weights_with_a_note(small_original, tmp_path, capsys) -> None:
    model, _ = small_original
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 5}, tmp_path / "plain.ckpt")
    assert convert(tmp_path / "plain.ckpt", tmp_path / "out.safetensors") == 0
    assert "no EMA weights" in capsys.readouterr().err
    assert load_model_file(tmp_path / "out.safetensors").metadata["provenance"]["weights"] == "online"
