"""Typed configuration: one frozen dataclass per concern, one source of defaults, JSON presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# How `generate`, `vary`, `inpaint`, kits and the web page sample unless told otherwise: chosen on the shipped
# model's quality/steps curve (weights/MODEL_CARD.md, "Sampling defaults"). Here, not in drumdiff.pipeline,
# so that the CLI's --help shows them without importing torch. Guidance applies to a request with a class,
# only at the diffusion times low < t <= high of the interval (Kynkaanniemi et al. 2024, "Applying guidance
# in a limited interval improves sample and distribution quality").
DEFAULT_SAMPLER = "dpmpp-2m"
DEFAULT_STEPS = 6
# vary, inpaint and kits (whose round robins are variations) spend more: vary runs round(steps * strength)
# of them, and their speed was never the target that generate's is.
DEFAULT_EDIT_STEPS = 20
DEFAULT_SCHEDULE = "log-snr"
DEFAULT_GUIDANCE = 3.0
DEFAULT_GUIDANCE_INTERVAL = (0.1, 0.5)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and to know what audio it makes.

    The defaults are the original tiny-audio-diffusion layout (`seed` preset, 31,574,724 parameters).
    """

    channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 256, 256)
    factors: tuple[int, ...] = (1, 2, 2, 2, 2, 2, 2, 2)
    items: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 4, 4)
    attentions: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 1, 1)
    attention_heads: int = 8
    attention_features: int = 64
    resnet_groups: int = 8
    modulation_features: int = 1024
    audio_channels: int = 2
    sample_rate: int = 44100
    length: int = 32768
    num_classes: int = 0  # 0: unconditional; else class ids 0..num_classes-1, and id num_classes is "null"
    # The data's scale the network works in (`drumdiff.diffusion`; 1: the original's plain v-prediction).
    sigma_data: float = 1.0
    # Level 0's skip adds the network's input to its output (the original's); False: the output is only
    # the modulated last convolution, so a silent stretch needs no exact cancellation of the input noise.
    output_skip: bool = True
    # The clip scale, in units of sigma_data, that the preconditioning's skip assumes (`drumdiff.diffusion`):
    # 1 is Karras et al.'s; below 1 the network predicts more of the clip and less of the input noise, so a
    # silent stretch at low noise no longer asks for an exact copy of that noise.
    skip_scale: float = 1.0
    # Sinusoids of each sample's position in the clip (from its start), this many, added at every level
    # (0: none, the original's translation-equivariant network, which cannot tell a tail from an attack
    # in pure noise). Even: a sine and a cosine per frequency.
    position_features: int = 0

    def __post_init__(self) -> None:
        levels = len(self.channels)
        for name in ("factors", "items", "attentions"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"ModelConfig.{name} has {len(getattr(self, name))} entries, channels has {levels}"
                )
        if self.length % self.downsampling != 0:
            raise ValueError(
                f"length {self.length} is not a multiple of the total downsampling {self.downsampling}"
            )
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        number = isinstance(self.sigma_data, (int, float)) and not isinstance(self.sigma_data, bool)
        if not (number and math.isfinite(self.sigma_data) and self.sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive number, got {self.sigma_data!r}")
        number = isinstance(self.skip_scale, (int, float)) and not isinstance(self.skip_scale, bool)
        if not (number and 0 < self.skip_scale <= 1):
            raise ValueError(f"skip_scale must be a number in (0, 1], got {self.skip_scale!r}")
        if not isinstance(self.output_skip, bool):
            raise ValueError(f"output_skip must be true or false, got {self.output_skip!r}")
        count = self.position_features
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0 and count % 2 == 0):
            raise ValueError(f"position_features must be an even whole number >= 0, got {count!r}")

    @property
    def downsampling(self) -> int:
        """Product of all level factors: the length must be a multiple of it."""
        total = 1
        for factor in self.factors:
            total *= factor
        return total

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def preset_names() -> list[str]:
    """Names of the presets shipped inside the package."""
    folder = resources.files("drumdiff") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str) -> ModelConfig:
    """A shipped preset by name (`preset_names()`) or a JSON file of ModelConfig fields.

    A preset may name another as its `"base"` (a shipped preset's name, or a `.json` path, relative to the file
    that names it): it takes the base's fields and replaces those it sets itself. A `"description"` is for
    people and is not read.
    """
    fields = _preset_fields(name_or_path, chain=(name_or_path,))
    try:
        return ModelConfig.from_dict(fields)
    except ValueError as error:
        raise ValueError(f"preset {name_or_path}: {error}") from error


def _preset_fields(name_or_path: str, *, chain: tuple[str, ...]) -> dict[str, Any]:
    """The ModelConfig fields of one preset, its base's first; `chain` is the presets read so far."""
    path = Path(name_or_path)
    is_file = path.suffix == ".json" and path.is_file()
    if is_file:
        text = path.read_text()
    else:
        resource = resources.files("drumdiff") / "presets" / f"{name_or_path}.json"
        if not resource.is_file():
            raise ValueError(
                f"unknown preset {name_or_path!r}; choose one of {', '.join(preset_names())} or a .json file"
            )
        text = resource.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"preset {name_or_path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"preset {name_or_path}: expected a JSON object of model config fields")
    data.pop("description", None)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ValueError(f"preset {name_or_path}: base must be a preset name or a .json path, got {base!r}")
    if is_file and base.endswith(".json") and not Path(base).is_absolute():
        base = str(path.parent / base)  # a file's base path is relative to the file
    if base in chain:
        raise ValueError(f"preset {name_or_path}: its bases form a loop: {' -> '.join((*chain, base))}")
    return {**_preset_fields(base, chain=(*chain, base)), **data}
