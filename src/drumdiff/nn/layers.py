"""Building blocks of the 1D U-Net (`drumdiff.nn.unet1d`).

Each block matches one piece of audio-diffusion-pytorch 0.1.3 `UNetV0` (built with a-unet 0.0.16) in its
parameters and its arithmetic, so that the original's weights load onto ours (`drumdiff.convert`).
What differs is how the arithmetic is laid out for speed; the numbers agree to float32 rounding:

* Activations are `[B, C, T]` tensors stored *channels-last* (memory order `[B, T, C]`). oneDNN runs a
  channels-last convolution several times faster than a `[B, C, T]` one at 32768 samples, and the
  per-time-step LayerNorms of the modulation and attention blocks then read contiguous memory instead of
  copying through the transposes and `einops.pack` that the original does around every one of them.
* Attention is `scaled_dot_product_attention` (a fused kernel: no `[T, T]` matrix in memory).
* Values that the original recomputes per block (SiLU of the conditioning features) are computed once.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drumdiff.nn.functional import group_norm_silu, layer_norm_modulate

# The original's NumberEmbedder: 128 learned frequencies -> [t, sin(2 pi f t), cos(2 pi f t)] (257 features).
TIME_FREQUENCIES = 128


def _channels_last_4d(x: Tensor) -> Tensor:
    """(B, C, T) -> (B, C, 1, T) stored channels-last: a view when x is already stored channels-last.

    Also turns a conv weight (C_out, C_in, K) into the (C_out, C_in, 1, K) channels-last weight oneDNN wants.
    """
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def to_channels_last(x: Tensor) -> Tensor:
    """(B, C, T) in any memory layout -> the same values stored channels-last (no copy if already so)."""
    return _channels_last_4d(x).squeeze(2)


class Conv1d(nn.Conv1d):
    """`nn.Conv1d` (same parameters) run as a channels-last 2D convolution, which oneDNN does much faster.

    Only what the U-Net uses: zero padding given as a number, no dilation, no groups.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if (
            self.groups != 1
            or self.dilation != (1,)
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            raise ValueError("drumdiff Conv1d supports only numeric zero padding, dilation 1 and groups 1")

    def forward(self, x: Tensor) -> Tensor:
        return _conv1d(x, self.weight, self.bias, stride=self.stride[0], padding=self.padding[0])


def _conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, *, stride: int = 1, padding: int = 0) -> Tensor:
    """conv1d of x (B, C_in, T) with weight (C_out, C_in, K), run as a channels-last 2D conv. -> (B, C_out, T')."""
    w4 = _channels_last_4d(weight)  # (C_out, C_in, 1, K)
    y = F.conv2d(_channels_last_4d(x), w4, bias, stride=(1, stride), padding=(0, padding))
    return y.squeeze(2)  # (B, C_out, T'), channels-last


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that keeps a channels-last (B, C, T) input channels-last (4D kernel, no copy)."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.group_norm(x.unsqueeze(2), self.num_groups, self.weight, self.bias, self.eps)  # (B, C, 1, T)
        return y.squeeze(2)  # (B, C, T)


class TimeEmbedding(nn.Module):
    """t [B] -> features [B, F]: learned Fourier features, a linear layer, then a GELU MLP.

    As in the original (a-unet `NumberEmbedder` + `TimeConditioningPlugin`), the MLP applies one
    `Linear(F, F) + GELU` twice: a-unet's `Repeat` put the same module in its list two times.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        freqs = torch.empty(TIME_FREQUENCIES)
        if not freqs.is_meta:  # the standard normal draw of torch.randn; nothing to draw when built on "meta"
            freqs.normal_()
        self.freqs = nn.Parameter(freqs)
        self.to_features = nn.Linear(2 * TIME_FREQUENCIES + 1, features)
        self.mlp = nn.Linear(features, features)

    def forward(self, t: Tensor) -> Tensor:
        t = t[:, None]  # (B, 1)
        angles = t * self.freqs[None] * 2 * math.pi  # (B, 128), in the original's order of operations
        fourier = torch.cat([t, angles.sin(), angles.cos()], dim=-1)  # (B, 257)
        h = F.gelu(self.to_features(fourier))  # (B, F)
        for _ in range(2):
            h = F.gelu(self.mlp(h))  # the same layer twice
        return h


def clip_position_features(
    frames: int, hop: int, clip_length: int, count: int, *, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Where each of `frames` frames of `hop` samples sits in a clip: (1, count, frames) sines and cosines.

    Positions are counted from the clip's start in units of `clip_length` (the frame's centre). Frequency k
    makes 2**k half periods over the clip: the slowest cosine falls steadily from attack to tail, the fastest
    resolves clip_length / 2**(count / 2 - 1) samples.
    """
    centres = (torch.arange(frames, device=device, dtype=torch.float32) + 0.5) * (hop / clip_length)  # (T,)
    frequencies = math.pi * 2.0 ** torch.arange(count // 2, device=device, dtype=torch.float32)  # (count/2,)
    angles = frequencies[:, None] * centres[None]  # (count/2, T)
    return torch.cat([angles.sin(), angles.cos()])[None].to(dtype)  # (1, count, T)


class ResnetBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), kernel 3, same channels in and out."""

    def __init__(self, channels: int, *, groups: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.norm1 = GroupNorm(groups, channels)
        self.conv1 = Conv1d(channels, channels, kernel_size, padding=padding)
        self.norm2 = GroupNorm(groups, channels)
        self.conv2 = Conv1d(channels, channels, kernel_size, padding=padding)

    def forward(self, x: Tensor, *, lean: bool = False) -> Tensor:
        """lean: the memory-lean GroupNorm + SiLU (saves only its input; slower on a CPU)."""
        if lean:
            n1, n2 = self.norm1, self.norm2
            h = self.conv1(group_norm_silu(x, n1.weight, n1.bias, n1.num_groups, n1.eps))  # (B, C, T)
            h = self.conv2(group_norm_silu(h, n2.weight, n2.bias, n2.num_groups, n2.eps))  # (B, C, T)
        else:
            h = self.conv1(F.silu(self.norm1(x)))  # (B, C, T)
            h = self.conv2(F.silu(self.norm2(h)))  # (B, C, T)
        return h.add_(x)  # in place on a fresh tensor: autograd-safe (conv backward does not need it)


class Modulation(nn.Module):
    """Feature-wise modulation: LayerNorm over channels (no affine) per time step, then x (1 + scale) + shift.

    scale and shift come from a linear map of SiLU(features); the caller passes SiLU(features) once.
    """

    def __init__(self, channels: int, *, features: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Linear(features, 2 * channels)
        self.eps = 1e-6

    def forward(self, x: Tensor, silu_features: Tensor, *, lean: bool = False) -> Tensor:
        """lean: the memory-lean LayerNorm (saves only its input, returns autocast's dtype; slower on a CPU)."""
        channels = x.shape[1]
        if lean:
            scale, shift = self.to_scale_shift(silu_features).chunk(2, dim=-1)  # 2 x (B, C)
            return layer_norm_modulate(x, scale, shift, self.eps)
        scale, shift = self.to_scale_shift(silu_features)[:, None, :].chunk(2, dim=-1)  # 2 x (B, 1, C)
        xt = x.transpose(1, 2)  # (B, T, C): contiguous when x is channels-last
        y = F.layer_norm(xt, (channels,), eps=self.eps)  # (B, T, C)
        y = torch.addcmul(shift, y, scale + 1)  # (B, T, C)
        return y.transpose(1, 2)  # (B, C, T), channels-last


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over time steps with a residual connection.

    The original normalizes the input twice with separate LayerNorms: one for the queries, one for the
    keys and values (its "context" norm, applied to the input itself when there is no context).
    """

    def __init__(self, channels: int, *, heads: int, head_features: int) -> None:
        super().__init__()
        inner = heads * head_features
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.norm_context = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_kv = nn.Linear(channels, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        xt = x.transpose(1, 2)  # (B, T, C): contiguous when x is channels-last
        q = self.to_q(self.norm(xt))  # (B, T, H*D)
        k, v = self.to_kv(self.norm_context(xt)).chunk(2, dim=-1)  # 2 x (B, T, H*D)
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D), scale D^-0.5 as in the original
        out = self.to_out(out.transpose(1, 2).flatten(2))  # (B, T, C)
        return (xt + out).transpose(1, 2)  # (B, C, T), channels-last


class UNetBlock(nn.Module):
    """One item of a level: resnet block, modulation by the conditioning features, then 0+ attentions."""

    def __init__(
        self,
        channels: int,
        *,
        groups: int,
        modulation_features: int,
        attentions: int,
        heads: int,
        head_features: int,
    ) -> None:
        super().__init__()
        self.resnet = ResnetBlock(channels, groups=groups)
        self.modulation = Modulation(channels, features=modulation_features)
        self.attention = nn.ModuleList(
            Attention(channels, heads=heads, head_features=head_features) for _ in range(attentions)
        )

    def forward(self, x: Tensor, silu_features: Tensor, lean: bool = False) -> Tensor:
        """lean: memory-lean norms for training with little memory (see `drumdiff.nn.functional`)."""
        x = self.modulation(self.resnet(x, lean=lean), silu_features, lean=lean)  # (B, C, T)
        for attention in self.attention:
            x = attention(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by `factor`, then a kernel-3 convolution (the original's default).

    Computed without the upsampled signal: output sample f n + p of conv(upsample(x)) is a kernel-3 conv of
    x around n whose taps are sums of the original taps (its "phase" p). One conv with f x C_out channels
    gives all phases; interleaving them is a free reshape of the channels-last result. Same numbers, 1/f of
    the multiply-adds, and backward keeps x instead of a copy f times its size.
    """

    def __init__(self, in_channels: int, out_channels: int, *, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = Conv1d(in_channels, out_channels, 3, padding=1)
        # phases[p, d + 1, j + 1] = 1 where upsampled tap j of output phase p reads x[n + d]
        # made on the CPU even where the model is built on "meta" (it is not in the file); forward moves it to the
        # weights' device and dtype
        phases = torch.zeros(factor, 3, 3, device="cpu")
        for p in range(factor):
            for j in (-1, 0, 1):
                phases[p, (p + j) // factor + 1, j + 1] = 1
        self.register_buffer("phases", phases, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        f = self.factor
        if f == 1:  # the original also "upsamples" by 1, which is a plain copy
            return self.conv(x)
        weight, bias = self.conv.weight, self.conv.bias  # (C_out, C_in, 3), (C_out,)
        taps = torch.einsum("pdj,ocj->pocd", self.phases.to(weight), weight)  # (f, C_out, C_in, 3)
        y = _conv1d(x, taps.flatten(0, 1), bias.repeat(f), padding=1)  # (B, f C_out, T), phase-major
        b, _, t = y.shape
        return y.transpose(1, 2).reshape(b, t * f, -1).transpose(1, 2)  # (B, C_out, f T), channels-last
