"""Small models and audio made inside the tests."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from drumdiff.config import ModelConfig, load_preset
from drumdiff.diffusion import alpha_sigma
from drumdiff.modelfile import save_model_file

TEST_LENGTH = 4096


def tiny_config(*, num_classes: int = 0, length: int = TEST_LENGTH) -> ModelConfig:
    return load_preset("tiny").replace(length=length, num_classes=num_classes)


def tiny_model_file(
    path: Path, *, num_classes: int = 0, seed: int = 0, class_names=None, **config_changes
) -> Path:
    """A random-weight tiny model saved as a drumdiff model file (`config_changes`: other ModelConfig fields)."""
    from drumdiff.nn.unet1d import UNet1d

    torch.manual_seed(seed)
    config = tiny_config(num_classes=num_classes).replace(**config_changes)
    net = UNet1d(config)
    with torch.no_grad():  # zero-initialised layers (class embedding, output) would hide bugs
        for param in net.parameters():
            param.add_(0.02 * torch.randn_like(param))
    if class_names is None:
        class_names = [f"class{i}" for i in range(num_classes)] if num_classes else []
    return save_model_file(
        path,
        state_dict=net.state_dict(),
        config=config,
        class_names=class_names,
        provenance={"made_by": "tests"},
    )


class AnalyticGaussianNet(nn.Module):
    """The exact v-prediction for data ~ N(0, s^2) per channel: an ideal 'trained' model for tests."""

    def __init__(self, scales: Tensor) -> None:
        super().__init__()
        self.register_buffer("scales", scales.reshape(1, -1, 1))
        self.anchor = nn.Parameter(torch.zeros(()))  # so that next(parameters()) finds the device

    def forward(self, x: Tensor, t: Tensor, *, class_id: Tensor | None = None) -> Tensor:
        alpha, sigma = alpha_sigma(t.reshape(-1, 1, 1).to(x.dtype))
        s2 = self.scales.to(x.dtype) ** 2
        x0 = alpha * s2 * x / (alpha**2 * s2 + sigma**2)
        eps = (x - alpha * x0) / sigma
        return alpha * eps - sigma * x0


def drum(
    length: int = TEST_LENGTH, *, sample_rate: int = 44100, pitch: float = 60.0, seed: int = 0
) -> Tensor:
    """A decaying pitched sine plus a click: [2, length]."""
    t = torch.arange(length) / sample_rate
    gen = torch.Generator().manual_seed(seed)
    body = torch.sin(2 * math.pi * pitch * t * (1 + 2 * torch.exp(-t * 40))) * torch.exp(-t * 12)
    click = torch.randn(length, generator=gen) * torch.exp(-t * 400) * 0.3
    mono = 0.8 * body + click
    return torch.stack([mono, 0.9 * mono])


def training_checkpoint(path: Path, *, poison: float | None = None, step: int = 7) -> Path:
    """A minimal drumdiff training checkpoint of a random tiny model (what `drumdiff export` reads).

    `poison` fills the first EMA tensor with that value (NaN or inf: a diverged run)."""
    from drumdiff.nn.unet1d import UNet1d

    config = tiny_config()
    weights = UNet1d(config).state_dict()
    ema = {k: v.clone() for k, v in weights.items()}
    if poison is not None:
        ema[sorted(ema)[0]].fill_(poison)
    state = {
        "format": "drumdiff-train-checkpoint",
        "version": 1,
        "step": step,
        "model": weights,
        "ema": ema,
        "model_config": config.to_dict(),
        "train_config": {},
        "class_names": [],
        "provenance": {},
    }
    torch.save(state, path)
    return path


@contextlib.contextmanager
def locked_folder(path: Path, monkeypatch) -> Iterator[Path]:
    """A new folder at `path` that nothing can be written into (mode 0555), made writable again on exit.

    Root ignores permissions, so there the write probe (`tempfile.mkstemp`) fails the way a locked folder would.
    """
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0:

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        yield path
    finally:
        path.chmod(0o755)
