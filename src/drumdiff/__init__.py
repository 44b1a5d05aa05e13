"""drumdiff: raw-waveform diffusion models of drum one-shots that train and sample on a laptop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from drumdiff.pipeline import DrumPipeline


def load_model(name_or_path: str | None = None, *, device: Any = None) -> DrumPipeline:
    """Load a model file (a path, a shipped model name or a user model name) into a pipeline."""
    from drumdiff.pipeline import load_model as _load

    return _load(name_or_path, device=device)


__all__ = ["__version__", "load_model"]
