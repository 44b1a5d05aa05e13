"""The inference model file: `.safetensors` with EMA weights only and the config as JSON metadata.

Metadata keys (all strings, as safetensors requires):
    format          "drumdiff-model"
    format_version  "1"
    config          ModelConfig as JSON
    class_names     JSON list: the class of each class id for a conditional model; for an unconditional
                    model at most one descriptive name (e.g. "kick" for a converted kick model)
    provenance      JSON object: where the weights came from (training run, data, conversion source, ...)
Nothing in the file is executable; loading checks the format version and every tensor's shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from drumdiff.config import ModelConfig
from drumdiff.errors import ModelFileError
from drumdiff.files import atomic_path, check_format

FORMAT = "drumdiff-model"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network ready for inference, with what the file says about it."""

    net: nn.Module
    config: ModelConfig
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def save_model_file(
    path: str | os.PathLike,
    *,
    state_dict: dict[str, Tensor],
    config: ModelConfig,
    class_names: list[str] | tuple[str, ...] = (),
    provenance: dict[str, Any] | None = None,
    fp16: bool = False,
) -> Path:
    """Write weights + config atomically (temp file, then rename). Returns the path written."""
    from safetensors.torch import save_file

    path = Path(path)
    class_names = list(class_names)
    if config.conditional and len(class_names) != config.num_classes:
        raise ValueError(f"a model of {config.num_classes} classes needs as many names, got {class_names}")
    if not config.conditional and len(class_names) > 1:
        raise ValueError(f"an unconditional model takes at most one class name, got {class_names}")
    dtype = torch.float16 if fp16 else torch.float32
    # safetensors wants contiguous tensors that share no memory: clone each one once.
    tensors = {
        name: t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous().clone()
        for name, t in state_dict.items()
    }
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict()),
        "class_names": json.dumps(class_names),
        "provenance": json.dumps(provenance or {}, default=str),
        "dtype": "float16" if fp16 else "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a model file (config, class names, provenance), checked for format."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable .safetensors model file ({error})") from error
    check_format(
        raw,
        source=path,
        kind="drumdiff model file",
        format=FORMAT,
        version=str(FORMAT_VERSION),  # safetensors metadata holds strings only
        version_key="format_version",
        error=ModelFileError,
    )
    version = raw["format_version"]
    try:
        return {
            "format": raw["format"],
            "format_version": int(version),
            "config": ModelConfig.from_dict(json.loads(raw["config"])),
            "class_names": list(json.loads(raw.get("class_names", "[]"))),
            "provenance": json.loads(raw.get("provenance", "{}")),
            "dtype": raw.get("dtype", "float32"),
        }
    except (KeyError, ValueError, TypeError) as error:
        raise ModelFileError(f"{path}: damaged model metadata ({error})") from error


def check_state_dict(expected: dict[str, Tensor], given: dict[str, Tensor], *, source: str) -> None:
    """Raise ModelFileError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(given)
        if given[k].shape != expected[k].shape
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes)):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ModelFileError(f"{source}: weights do not fit the model layout; " + "; ".join(problems))


def load_model_file(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network the file describes and load its weights (as float32) in eval mode."""
    from safetensors.torch import load_file

    from drumdiff.nn.unet1d import UNet1d

    path = Path(path)
    meta = read_metadata(path)
    config: ModelConfig = meta["config"]
    net = UNet1d(config)
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ModelFileError(f"{path}: cannot read weights ({error})") from error
    check_state_dict(net.state_dict(), tensors, source=str(path))
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    net.eval().requires_grad_(False).to(device)
    return LoadedModel(net=net, config=config, class_names=meta["class_names"], metadata=meta, path=path)
