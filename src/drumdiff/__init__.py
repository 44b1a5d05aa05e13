"""drumdiff: raw-waveform diffusion models of drum one-shots that train and sample on a laptop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from drumdiff.kits.make import Kit
    from drumdiff.pipeline import DrumPipeline


def load_model(name_or_path: str | None = None, *, device: Any = None) -> DrumPipeline:
    """Load a model file (a path, a shipped model name or a user model name) into a pipeline."""
    from drumdiff.pipeline import load_model as _load

    return _load(name_or_path, device=device)


def generate_kit(model: Any = None, /, **options: Any) -> Kit:
    """Generate a drum kit for samplers and write it to `out_dir=` (see `drumdiff.kits.make.generate_kit`)."""
    from drumdiff.kits.make import generate_kit as _generate_kit

    return _generate_kit(model, **options)


__all__ = ["__version__", "generate_kit", "load_model"]
