"""Original tiny-audio-diffusion weights -> drumdiff: the name mapping, safe checkpoint reading, conversion.

The original network is audio-diffusion-pytorch 0.1.3 `UNetV0`, a nest of a-unet modules whose parameter
names follow the nesting: level i+1 sits inside level i, so a deep weight is called
`blocks.2.net.block.blocks.5.block.blocks.5.[...].blocks.3.blocks.0.block.to_q.weight`.
`original_key_map(config)` spells out, for every drumdiff parameter, the original name it comes from;
`map_original_unet_state_dict` applies it and names every missing, extra or mis-shaped tensor.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from drumdiff.config import ModelConfig
from drumdiff.errors import ModelFileError
from drumdiff.modelfile import check_state_dict, file_kind

# The original wraps its U-Net as TimeConditioningPlugin's Module([embedder, mlp, net]).
_EMBEDDER = "blocks.0."
_MLP = "blocks.1.blocks."  # one Linear stored under two names (a-unet's Repeat shares the module)
_NET = "blocks.2.net."


def _resnet_keys(ours: str, theirs: str) -> dict[str, str]:
    # a-unet ResnetBlock: Module(blocks=[Sequential(ConvBlock, ConvBlock), Identity]); ConvBlock = GN, SiLU, Conv
    keys = {}
    for n, block in ((1, 0), (2, 1)):
        for param in ("weight", "bias"):
            keys[f"{ours}norm{n}.{param}"] = f"{theirs}block.blocks.0.blocks.{block}.0.{param}"
            keys[f"{ours}conv{n}.{param}"] = f"{theirs}block.blocks.0.blocks.{block}.2.{param}"
    return keys


def _attention_keys(ours: str, theirs: str) -> dict[str, str]:
    # Packed(Select(Attention)): norm, norm_context, to_q, to_kv, and to_out inside its AttentionBase
    theirs = f"{theirs}blocks.0.block."
    return {
        f"{ours}norm.weight": f"{theirs}norm.weight",
        f"{ours}norm.bias": f"{theirs}norm.bias",
        f"{ours}norm_context.weight": f"{theirs}norm_context.weight",
        f"{ours}norm_context.bias": f"{theirs}norm_context.bias",
        f"{ours}to_q.weight": f"{theirs}to_q.weight",
        f"{ours}to_kv.weight": f"{theirs}to_kv.weight",
        f"{ours}to_out.weight": f"{theirs}attention.blocks.0.weight",
    }


def _items_keys(
    ours: str, theirs: str, *, first: int, items: int, attentions: int
) -> tuple[dict[str, str], int]:
    """Keys of `items` UNetBlocks stored as the original's flat item list from index `first` on."""
    keys: dict[str, str] = {}
    index = first
    for item in range(items):
        block = f"{ours}{item}."
        keys |= _resnet_keys(f"{block}resnet.", f"{theirs}{index}.")
        modulation = (
            f"{theirs}{index + 1}.blocks.0.block.blocks.0.1."  # Packed(Select(Modulation)): SiLU, Linear
        )
        keys[f"{block}modulation.to_scale_shift.weight"] = f"{modulation}weight"
        keys[f"{block}modulation.to_scale_shift.bias"] = f"{modulation}bias"
        for a in range(attentions):
            keys |= _attention_keys(f"{block}attention.{a}.", f"{theirs}{index + 2 + a}.")
        index += 2 + attentions
    return keys, index


def original_key_map(config: ModelConfig) -> dict[str, str]:
    """For every parameter of `UNet1d(config)`, the name of the same tensor in the original `UNetV0`."""
    keys = {
        "time_embedding.freqs": f"{_EMBEDDER}weights",
        "time_embedding.to_features.weight": f"{_EMBEDDER}to_out.weight",
        "time_embedding.to_features.bias": f"{_EMBEDDER}to_out.bias",
        "time_embedding.mlp.weight": f"{_MLP}0.0.weight",
        "time_embedding.mlp.bias": f"{_MLP}0.0.bias",
    }
    theirs = _NET
    levels = len(config.channels)
    for i in range(levels):
        ours = f"levels.{i}."
        # a-unet Block: block = Sequential(downsample, *items, inner level, *items_up, upsample); skip merge
        keys[f"{ours}downsample.weight"] = f"{theirs}block.blocks.0.block.weight"
        keys[f"{ours}downsample.bias"] = f"{theirs}block.blocks.0.block.bias"
        item_kwargs = dict(items=config.items[i], attentions=config.attentions[i])
        down, after_down = _items_keys(f"{ours}down.", f"{theirs}block.blocks.", first=1, **item_kwargs)
        first_up = after_down + 1 if i + 1 < levels else after_down  # the inner level takes one index
        up, after_up = _items_keys(f"{ours}up.", f"{theirs}block.blocks.", first=first_up, **item_kwargs)
        keys |= down | up
        # UpsampleInterpolate: nn.Sequential(nn.Upsample, Conv)
        keys[f"{ours}upsample.conv.weight"] = f"{theirs}block.blocks.{after_up}.block.1.weight"
        keys[f"{ours}upsample.conv.bias"] = f"{theirs}block.blocks.{after_up}.block.1.bias"
        # MergeModulate: Module([Sequential(SiLU, Linear)])
        keys[f"{ours}skip_scale.weight"] = f"{theirs}skip.blocks.0.1.weight"
        keys[f"{ours}skip_scale.bias"] = f"{theirs}skip.blocks.0.1.bias"
        theirs = f"{theirs}block.blocks.{after_down}."
    return keys


# The second name of the shared time-MLP layer: present in the original's state_dict, equal to the first.
ORIGINAL_ALIASES = {f"{_MLP}1.0.weight": f"{_MLP}0.0.weight", f"{_MLP}1.0.bias": f"{_MLP}0.0.bias"}


def _expected_tensors(config: ModelConfig) -> dict[str, Tensor]:
    """Original name -> a shape-only (meta) tensor, from a drumdiff network of this layout."""
    import torch

    from drumdiff.nn.unet1d import UNet1d

    with torch.device("meta"):
        ours = UNet1d(config).state_dict()
    expected = {theirs: ours[name] for name, theirs in original_key_map(config).items()}
    for alias, name in ORIGINAL_ALIASES.items():
        expected[alias] = expected[name]
    return expected


def map_original_unet_state_dict(
    state_dict: dict[str, Tensor], *, config: ModelConfig | None = None, source: str = "UNetV0 weights"
) -> dict[str, Tensor]:
    """An original `UNetV0` state_dict (keys relative to the UNetV0) -> a `UNet1d` state_dict.

    `config` is the layout to expect (default: the `seed` preset, the original tiny-audio-diffusion layout).
    Raises ModelFileError (its message starting with `source`) naming the missing, extra and mis-shaped
    tensors when the weights do not fit that layout.
    """
    config = config if config is not None else ModelConfig()
    if config.num_classes:
        raise ValueError("the original network is unconditional: use a config with num_classes=0")
    check_state_dict(_expected_tensors(config), state_dict, source=source)
    for alias, name in ORIGINAL_ALIASES.items():
        if not state_dict[alias].equal(state_dict[name]):
            raise ModelFileError(f"{source}: {alias} differs from {name}, which the original shares with it")
    return {ours: state_dict[theirs] for ours, theirs in original_key_map(config).items()}


def infer_original_config(state_dict: dict[str, Tensor]) -> ModelConfig | None:
    """The layout of an original `UNetV0` state_dict, read from its names and shapes; None if it is not one.

    Shapes fix channels, factors, items, attentions and the modulation width. Two things they cannot show
    are taken at the values tiny-audio-diffusion used: 64 features per attention head, 8 GroupNorm groups.
    The caller still checks every tensor against the inferred layout.
    """
    try:
        modulation_features = state_dict[f"{_EMBEDDER}to_out.weight"].shape[0]
        channels, factors, items, attentions = [], [], [], []
        audio_channels, inner_features = None, None
        level = _NET
        while True:
            down = state_dict[f"{level}block.blocks.0.block.weight"]  # (C_i, C_in, factor)
            audio_channels = audio_channels or down.shape[1]
            channels.append(down.shape[0])
            factors.append(down.shape[2])
            index, counts = 1, []
            while f"{level}block.blocks.{index}.block.blocks.0.blocks.0.2.weight" in state_dict:  # a resnet
                index += 2  # the resnet and its modulation
                count = 0
                while (to_q := f"{level}block.blocks.{index}.blocks.0.block.to_q.weight") in state_dict:
                    inner_features = state_dict[to_q].shape[0]  # (heads * head_features, C_i)
                    index, count = index + 1, count + 1
                counts.append(count)
            inner = f"{level}block.blocks.{index}."
            deepest = f"{inner}block.blocks.0.block.weight" not in state_dict
            if deepest:  # no inner level between the items down and the items up: both were counted
                half = len(counts) // 2
                counts = counts[:half] if counts[:half] == counts[half:] else []
            if not counts or len(set(counts)) != 1:  # items that differ: not a UNetV0 level
                return None
            items.append(len(counts))
            attentions.append(counts[0])
            if deepest:
                break
            level = inner
        heads, head_features = 8, 64
        if inner_features is not None:
            heads, head_features = (
                (inner_features // 64, 64) if inner_features % 64 == 0 else (1, inner_features)
            )
        length = ModelConfig().length
        downsampling = math.prod(factors)
        return ModelConfig(
            channels=tuple(channels),
            factors=tuple(factors),
            items=tuple(items),
            attentions=tuple(attentions),
            attention_heads=heads,
            attention_features=head_features,
            modulation_features=modulation_features,
            audio_channels=audio_channels,
            length=length if length % downsampling == 0 else downsampling * (length // downsampling + 1),
        )
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------- reading checkpoints

# Where the original keeps its networks. A Lightning checkpoint of tiny-audio-diffusion's `Model` holds the
# DiffusionModel under `model.` and ema-pytorch's EMA under `model_ema.` (`ema_model.` = the averaged copy,
# `online_model.` = the training weights again, plus counters); a DiffusionModel holds its UNetV0 under
# `net.` and again under `diffusion.net.` and `sampler.net.` (one tensor, three names).
# A saved `EMA` itself (no Lightning around it) has the same names without `model_ema.`.
EMA_PREFIXES = ("model_ema.ema_model.", "ema_model.")
ONLINE_PREFIXES = ("model.", "model_ema.online_model.", "online_model.")
NET_ALIASES = ("net.", "diffusion.net.", "sampler.net.")

# Module paths whose classes show up when someone saved a whole model object instead of its weights.
_MODEL_MODULES = ("audio_diffusion_pytorch", "a_unet", "torch.nn", "pytorch_lightning", "lightning", "main.")

_RESAVE_ADVICE = (
    "Re-save just its weights where the original is installed, for a file you trust: "
    "`torch.save(torch.load(PATH, weights_only=False).state_dict(), 'weights.pt')`, then convert weights.pt"
)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint without running pickled code: tensors, containers and plain values only.

    Uses `torch.load(weights_only=True)`: its unpickler builds nothing but tensors, dicts, lists, tuples,
    strings and numbers, and refuses every other global before anything is called. A refusal becomes a
    ModelFileError naming the global (with advice for a whole pickled model); a truncated or damaged file
    becomes one too. A `.safetensors` file of original weights is read as a state_dict; a file that is
    already a drumdiff model or training checkpoint, or not a checkpoint at all (empty, text, JSON), is
    refused with what it is and what to do instead.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: {'is a folder, not a checkpoint file' if path.is_dir() else 'no such file'}"
        )
    kind = file_kind(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind != "torch":
        unknown = (
            "it is a damaged or truncated .safetensors file"
            if path.suffix == ".safetensors"
            else "its first bytes are neither a zip nor a pickle (truncated, or another format?)"
        )
        what = {"empty": "it is empty (0 bytes)", "text": "it is a text file (JSON?)"}.get(kind, unknown)
        raise ModelFileError(f"{path}: not a PyTorch checkpoint: {what}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
        if any(name.startswith(_MODEL_MODULES) for name in names):
            raise ModelFileError(
                f"{path}: refused: this is a whole pickled model object ({', '.join(names)}), which cannot be "
                f"read without running code from the file. {_RESAVE_ADVICE}"
            ) from None
        if names:
            raise ModelFileError(
                f"{path}: refused: loading it would call {', '.join(names)}, which is not a plain tensor or "
                "container; drumdiff never runs code from a checkpoint"
            ) from None
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint (damaged, or not made by torch.save): "
            f"{_first_useful_line(error)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint (truncated or damaged?): {_first_useful_line(error)}"
        ) from error
    if not isinstance(loaded, dict):
        raise ModelFileError(
            f"{path}: expected a checkpoint or a state_dict (a dict), found {type(loaded).__name__}"
        )
    if loaded.get("format") == "drumdiff-train-checkpoint":
        raise ModelFileError(
            f"{path}: this is a drumdiff training checkpoint, not an original one; make a model file with "
            f"`drumdiff export {path} OUT.safetensors`"
        )
    return loaded


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Original weights saved as `.safetensors`; a drumdiff file is refused with what to do instead."""
    from safetensors.torch import load_file

    from drumdiff.modelfile import FORMAT, read_header

    kind = (read_header(path).get("__metadata__") or {}).get("format")
    if kind == FORMAT:
        raise ModelFileError(
            f"{path}: this is already a drumdiff model file; use it directly: drumdiff generate --model {path}"
        )
    if kind is not None and str(kind).startswith("drumdiff"):
        raise ModelFileError(f"{path}: this is a drumdiff {kind} file, not a tiny-audio-diffusion checkpoint")
    try:
        return dict(load_file(str(path)))
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ModelFileError(f"{path}: damaged .safetensors file ({error})") from error


def _first_useful_line(error: BaseException) -> str:
    """torch's load errors wrap one useful line in lines of advice: that line (or the error's type)."""
    advice = (
        "Weights only load failed",
        "Please file",
        "Check the documentation",
        "(1)",
        "(2)",
        "In PyTorch",
    )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(advice)]
    text = (useful or [type(error).__name__])[0].replace("WeightsUnpickler error:", "").strip()
    return text[:200] or type(error).__name__


def describe_layout(config: ModelConfig) -> str:
    """A layout in words for messages: levels, channels, attention and parameter count."""
    import torch

    from drumdiff.nn.unet1d import UNet1d

    with torch.device("meta"):
        parameters = sum(p.numel() for p in UNet1d(config).parameters())
    attention = [str(i) for i, a in enumerate(config.attentions) if a]
    return (
        f"{len(config.channels)} levels of {'/'.join(map(str, config.channels))} channels, attention at "
        f"level {', '.join(attention) or 'none'}, {parameters / 1e6:.1f}M parameters, "
        f"{config.audio_channels} channels x {config.length} samples"
    )


def _tensors_under(state_dict: dict[str, Any], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _first_prefix(state_dict: dict[str, Any], prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if any(key.startswith(p) for key in state_dict)), None)


def _unet_weights(module_state: dict[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """The UNetV0 weights of a DiffusionModel state_dict (keys under `net.` and its aliases) or of a UNetV0."""
    if not any(key.startswith(NET_ALIASES) for key in module_state):
        return module_state  # a UNetV0 state_dict itself
    unexpected = [key for key in module_state if not key.startswith(NET_ALIASES)]
    if unexpected:
        shown = ", ".join(sorted(unexpected)[:8]) + (
            f", ... ({len(unexpected)} in all)" if len(unexpected) > 8 else ""
        )
        raise ModelFileError(f"{source}: not a DiffusionModel of UNetV0: unexpected tensors {shown}")
    return _tensors_under(module_state, "net.")


@dataclass
class Converted:
    """What `convert_checkpoint` wrote."""

    path: Path
    config: ModelConfig
    class_name: str
    weights: str  # "ema", "online" or "state_dict"
    provenance: dict[str, Any]


def convert_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    ema: bool = True,
    fp16: bool = False,
    force: bool = False,
) -> Converted:
    """Convert an original tiny-audio-diffusion checkpoint (or UNetV0 / DiffusionModel state_dict) to a model file.

    Takes the EMA weights of a Lightning checkpoint unless `ema` is False (a file without EMA weights gives its
    training weights: see `Converted.weights`). The layout is read from the tensors
    and every tensor is checked against it; the file is unconditional, with `name` (default: the source
    file's name) as its one class name, and provenance in its metadata. An existing `out` is replaced only
    with `force`.
    """
    from drumdiff import __version__
    from drumdiff.files import file_digest
    from drumdiff.modelfile import check_new_file, save_model_file

    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise ModelFileError(f"output {out} must end in .safetensors")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ModelFileError(f"{out} is the file being converted; name another output")
    check_new_file(out, force=force)
    loaded = read_checkpoint(source)
    lightning = isinstance(loaded.get("state_dict"), dict)
    state = loaded["state_dict"] if lightning else loaded
    bad = sorted(key for key, value in state.items() if not hasattr(value, "shape"))
    if bad:
        raise ModelFileError(f"{source}: expected tensors, found other values under {', '.join(bad[:8])}")

    provenance: dict[str, Any] = {
        "converted_from": source.name,
        "source_sha256": file_digest(source),
        "original": "tiny-audio-diffusion (audio-diffusion-pytorch 0.1.3 UNetV0)",
        "converter": f"drumdiff {__version__}",
    }
    ema_prefix = _first_prefix(state, EMA_PREFIXES)
    online_prefix = _first_prefix(state, ONLINE_PREFIXES)
    if ema and ema_prefix is not None:
        weights, module_state = "ema", _tensors_under(state, ema_prefix)
        # ema-pytorch counters: shape [1] in the 2023 files, [] in newer ones
        counters = ema_prefix[: -len("ema_model.")]
        initted, step = state.get(f"{counters}initted"), state.get(f"{counters}step")
        if initted is not None and not bool(initted.reshape(-1)[0]):
            raise ModelFileError(
                f"{source}: its EMA weights were never updated (ema-pytorch `initted` is false); "
                "convert the training weights with --no-ema"
            )
        if step is not None:
            provenance["ema_step"] = int(step.reshape(-1)[0])
    elif online_prefix is not None:
        weights, module_state = "online", _tensors_under(state, online_prefix)
    else:
        weights, module_state = "state_dict", state
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if lightning and isinstance(loaded.get(key), (int, str)):
            provenance[key] = loaded[key]
    provenance["weights"] = weights

    unet = _unet_weights(module_state, source=str(source))
    # A layout that cannot be read is checked against the seed's, so that the error names what differs.
    config = infer_original_config(unet) or ModelConfig()
    ours = map_original_unet_state_dict(unet, config=config, source=str(source))
    name = name if name is not None else source.stem
    path = save_model_file(
        out, state_dict=ours, config=config, class_names=[name], provenance=provenance, fp16=fp16
    )
    return Converted(path=path, config=config, class_name=name, weights=weights, provenance=provenance)
