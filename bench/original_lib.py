"""Import the original library (audio-diffusion-pytorch 0.1.3) beside a torch that has no torchaudio.

audio-diffusion-pytorch imports `torchaudio` only for its `MelSpectrogram` class, which neither the benchmarks
nor the tests use. Install it with
`pip install --no-deps audio-diffusion-pytorch==0.1.3 a-unet==0.0.16 einops`; this module puts a stand-in
`torchaudio` (with a `transforms` attribute) into `sys.modules` only while importing it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

SEED_LAYOUT: dict[str, Any] = dict(
    dim=1,
    in_channels=2,
    channels=[32, 32, 64, 64, 128, 128, 256, 256],
    factors=[1, 2, 2, 2, 2, 2, 2, 2],
    items=[2, 2, 2, 2, 2, 2, 4, 4],
    attentions=[0, 0, 0, 0, 0, 1, 1, 1],
    attention_heads=8,
    attention_features=64,
)


def import_original() -> types.ModuleType:
    """Return the `audio_diffusion_pytorch` module; raises ImportError when it is not installed."""
    if "audio_diffusion_pytorch" in sys.modules:
        return sys.modules["audio_diffusion_pytorch"]
    stand_in = None
    if "torchaudio" not in sys.modules:
        try:
            importlib.import_module("torchaudio")
        except ImportError:
            stand_in = types.ModuleType("torchaudio")
            stand_in.transforms = types.SimpleNamespace(MelSpectrogram=None)  # type: ignore[attr-defined]
            sys.modules["torchaudio"] = stand_in
    try:
        return importlib.import_module("audio_diffusion_pytorch")
    finally:
        if stand_in is not None:
            del sys.modules["torchaudio"]
