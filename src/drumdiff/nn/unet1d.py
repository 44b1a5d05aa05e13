"""The 1D U-Net that predicts v from a noisy waveform: `UNet1d(config)(x, t, *, class_id=None) -> v`.

Architecture (the original tiny-audio-diffusion network, audio-diffusion-pytorch 0.1.3 `UNetV0`):

    t -> TimeEmbedding -> features [B, F]   (+ a learned class embedding on a conditional model)
    level i (of len(channels)), going down:
        remember x as this level's skip
        downsample: conv with kernel = stride = factors[i], to channels[i]
        items[i] x UNetBlock: resnet block, modulation by features, attentions[i] self-attentions
    ... the deeper levels ...
    level i, coming back up:
        items[i] x UNetBlock (their own weights)
        upsample: nearest x factors[i], kernel-3 conv back to the level's input channels
        x = skip + scale(features) * x     (a per-channel scale: the original's "SkipModulate")

Level 0 takes the audio channels in and gives them back, so its last upsample conv is the output layer and
the whole network computes v = x_t + scale_0(t) * f(x_t, t); with `ModelConfig.output_skip` False (not the
original's), level 0 has no skip and v = scale_0(t) * f(x_t, t). With `ModelConfig.position_features`
(not the original's), every level adds a projection of sinusoids of each frame's position in the clip to
its downsample's output, so the network knows where in the clip it is even from pure noise. Blocks live in
`drumdiff.nn.layers`; the name mapping from the original's weights is
`drumdiff.convert.map_original_unet_state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from drumdiff.config import ModelConfig
from drumdiff.nn.layers import (
    Conv1d,
    TimeEmbedding,
    UNetBlock,
    Upsample,
    clip_position_features,
    to_channels_last,
)


class Level(nn.Module):
    """One resolution of the U-Net: the way down, the way up and the modulated skip around the inside."""

    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        in_channels = config.audio_channels if index == 0 else config.channels[index - 1]
        channels, factor = config.channels[index], config.factors[index]

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                UNetBlock(
                    channels,
                    groups=config.resnet_groups,
                    modulation_features=config.modulation_features,
                    attentions=config.attentions[index],
                    heads=config.attention_heads,
                    head_features=config.attention_features,
                )
                for _ in range(config.items[index])
            )

        self.downsample = Conv1d(in_channels, channels, factor, stride=factor)
        # The clip position's sinusoids, projected and added after the downsample; zeros at the start, so a
        # model warm-started from one without positions begins as that model.
        self.position: Conv1d | None = None
        if config.position_features:
            self.position = Conv1d(config.position_features, channels, 1)
            nn.init.zeros_(self.position.weight)
            nn.init.zeros_(self.position.bias)
        self.down = blocks()
        self.up = blocks()
        self.upsample = Upsample(channels, in_channels, factor=factor)
        self.skip_scale = nn.Linear(config.modulation_features, in_channels)


class UNet1d(nn.Module):
    """v-predicting 1D U-Net over raw audio; see the module docstring for the layout."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.time_embedding = TimeEmbedding(config.modulation_features)
        self.class_embedding: nn.Embedding | None = None
        if config.num_classes > 0:
            # ids 0..num_classes-1 are classes, id num_classes is the "null" class for guidance.
            # Zeros at the start: a conditional model begins as the unconditional one (e.g. a converted seed).
            rows = config.num_classes + 1
            self.class_embedding = nn.Embedding(
                rows, config.modulation_features, _weight=torch.zeros(rows, config.modulation_features)
            )
        self.levels = nn.ModuleList(Level(config, i) for i in range(len(config.channels)))
        self.grad_checkpointing = False

    @property
    def _checkpointing_now(self) -> bool:
        """Checkpointing is on and a backward will follow (also true inside a checkpoint's recomputation)."""
        return self.grad_checkpointing and torch.is_grad_enabled()

    def _down(self, level: Level, h: Tensor, silu_features: Tensor, hop: int) -> Tensor:
        """A level's way down: downsample (+ position), then its blocks. (B, C_in, T) -> (B, C_i, T / f_i).

        `hop`: samples of the clip per frame of this level's output.
        """
        lean = self._checkpointing_now
        h = level.downsample(h)
        if level.position is not None:
            config = self.config
            positions = clip_position_features(
                h.shape[2], hop, config.length, config.position_features, device=h.device, dtype=h.dtype
            )
            h = h + level.position(positions)  # (B, C_i, T_i) + (1, C_i, T_i)
        for block in level.down:
            h = block(h, silu_features, lean)
        return h

    def _up(self, level: Level, h: Tensor, skip: Tensor | None, silu_features: Tensor) -> Tensor:
        """A level's way up: its blocks, upsample, then skip + scale * h (no skip: scale * h). -> (B, C_in, T)."""
        lean = self._checkpointing_now
        for block in level.up:
            h = block(h, silu_features, lean)
        h = level.upsample(h)  # (B, C_in, T_i * f_i)
        scale = level.skip_scale(silu_features)[:, :, None]  # (B, C_in, 1)
        if skip is None:
            return scale * h
        return torch.addcmul(skip, scale, h)

    def _run(self, half: Callable[..., Tensor], *args: Any) -> Tensor:
        # Checkpointing keeps only each half-level's inputs (the skips, and the inputs of the ways up) and
        # recomputes the inside in backward, with norms that keep only their own inputs even then.
        # Half-levels, not blocks: a block's output is its level's next input, so checkpointing blocks
        # would keep every block's output; this keeps 2 tensors per level for the same recompute.
        if self._checkpointing_now:
            return checkpoint(half, *args, use_reentrant=False)
        return half(*args)

    def forward(self, x: Tensor, t: Tensor, *, class_id: Tensor | None = None) -> Tensor:
        """x [B, C, T] noisy audio, t [B] in [0, 1], class_id [B] (long) or None -> v [B, C, T]."""
        config = self.config
        if x.dim() != 3 or x.shape[1] != config.audio_channels:
            raise ValueError(f"expected x of shape [B, {config.audio_channels}, T], got {list(x.shape)}")
        if x.shape[2] % config.downsampling != 0:
            raise ValueError(
                f"length {x.shape[2]} is not a multiple of the total downsampling {config.downsampling}"
            )
        batch = x.shape[0]
        t = t.to(x.dtype).expand(batch) if t.dim() == 0 else t.to(x.dtype)
        if t.shape != (batch,):
            raise ValueError(f"expected t of shape [{batch}], got {list(t.shape)}")

        features = self.time_embedding(t)  # (B, F)
        if self.class_embedding is not None:
            if class_id is None:
                class_id = torch.full((batch,), config.num_classes, dtype=torch.long, device=x.device)
            if class_id.shape != (batch,):
                raise ValueError(f"expected class_id of shape [{batch}], got {list(class_id.shape)}")
            features = features + self.class_embedding(class_id)  # (B, F)
        elif class_id is not None:
            raise ValueError("class_id given to an unconditional model (config.num_classes is 0)")
        silu_features = F.silu(features)  # every modulation, and every skip scale, starts with SiLU

        h = to_channels_last(x)  # (B, C, T)
        skips: list[Tensor | None] = []
        hop = 1
        for level, factor in zip(self.levels, config.factors, strict=True):
            skips.append(h if skips or config.output_skip else None)  # level 0's skip is the output skip
            hop *= factor
            h = self._run(self._down, level, h, silu_features, hop)  # (B, C_i, T_i)
        for level in reversed(self.levels):
            h = self._run(self._up, level, h, skips.pop(), silu_features)  # (B, C_in, T_i * f_i)
        return h.contiguous()  # (B, C, T) in the usual layout
