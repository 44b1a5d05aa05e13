"""Original tiny-audio-diffusion weights -> drumdiff: the name mapping, safe checkpoint reading, conversion.

The original network is audio-diffusion-pytorch 0.1.3 `UNetV0`, a nest of a-unet modules whose parameter
names follow the nesting: level i+1 sits inside level i, so a deep weight is called
`blocks.2.net.block.blocks.5.block.blocks.5.[...].blocks.3.blocks.0.block.to_q.weight`.
`original_key_map(config)` spells out, for every drumdiff parameter, the original name it comes from;
`map_original_unet_state_dict` applies it and names every missing, extra or mis-shaped tensor.
"""

from __future__ import annotations

from torch import Tensor

from drumdiff.config import ModelConfig
from drumdiff.errors import ModelFileError
from drumdiff.modelfile import check_state_dict

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
