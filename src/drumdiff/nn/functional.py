"""Memory-lean normalisations for training: each saves only its input and recomputes the rest in backward.

Under CUDA autocast, `GroupNorm -> SiLU -> conv` keeps three copies of every activation for backward: the
norm's input cast to fp32, the SiLU input (the norm's fp32 output) and the conv's fp16 input. At level 0 of
the `seed` U-Net (32 channels x 32768 samples) that is 12 MiB per clip and norm, and it is what kept batch 16
out of a 2 GB card. These functions keep only their input (which the next block or the skip holds anyway),
compute their statistics in fp32, return the autocast dtype, and recompute the normalised values in backward.
Both passes work on a few clips at a time, so the fp32 temporaries stay a few MiB whatever the batch.

    group_norm_silu(x, weight, bias, groups, eps)    SiLU(GroupNorm(x)), x (B, C, T)
    layer_norm_modulate(x, scale, shift, eps)        LayerNorm over C (no affine) * (1 + scale) + shift

The arithmetic matches `F.silu(F.group_norm(...))` and `F.layer_norm(...) * (1 + scale) + shift` to float32
rounding (tests/test_unet.py checks values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# fp32 elements per chunk in the loops below (4 MiB): bounds the temporaries, keeps the loop short.
CHUNK_ELEMENTS = 1 << 20


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would give a conv's input here: its dtype when autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _acc(x: Tensor) -> torch.dtype:
    """The dtype the statistics and the backward are computed in: fp32, or x's when wider."""
    return torch.promote_types(x.dtype, torch.float32)


def _chunks(batch: int, per_item: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    return [slice(i, min(batch, i + step)) for i in range(0, batch, step)]


class _GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:  # type: ignore[override]
        batch, channels, _ = x.shape
        out = torch.empty_like(x, dtype=_compute_dtype(x))  # keeps x's memory layout
        for part in _chunks(batch, x[0].numel()):
            y = _gn_affine(x[part], weight, bias, groups, eps)[0]
            out[part] = F.silu(y, inplace=True)
        ctx.save_for_backward(x, weight, bias)
        ctx.groups, ctx.eps = groups, eps
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight, dtype=_acc(x))
        grad_b = torch.zeros_like(bias, dtype=_acc(x))
        w = weight.to(_acc(x))[:, None]  # (C, 1)
        for part in _chunks(x.shape[0], x[0].numel()):
            y, xhat, rstd = _gn_affine(x[part], weight, bias, ctx.groups, ctx.eps)  # (b, C, T) fp32
            s = torch.sigmoid(y)
            # d SiLU(y) / dy = s (1 + y (1 - s)), applied to the incoming gradient in place on y
            gy = y.mul_(1 - s).add_(1).mul_(s).mul_(grad[part])  # (b, C, T)
            grad_b += gy.sum((0, 2))
            grad_w += (gy * xhat).sum((0, 2))
            grad_x[part] = _norm_backward(gy.mul_(w), xhat, rstd, ctx.groups)
        return grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None


def _gn_affine(
    x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """x (b, C, T) -> (GN(x) * weight + bias, the normalised x, 1/std per group (b, G, 1, 1)), all fp32."""
    b, c, t = x.shape
    xg = x.to(_acc(x)).unflatten(1, (groups, c // groups))  # (b, G, C/G, T)
    var, mean = torch.var_mean(xg, dim=(2, 3), keepdim=True, correction=0)  # (b, G, 1, 1)
    rstd = (var + eps).rsqrt()
    xhat = (xg - mean).mul_(rstd).flatten(1, 2)  # (b, C, T)
    y = torch.addcmul(bias.to(xhat.dtype)[:, None], xhat, weight.to(xhat.dtype)[:, None])
    return y, xhat, rstd


def _norm_backward(gxhat: Tensor, xhat: Tensor, rstd: Tensor, groups: int) -> Tensor:
    """Gradient through xhat = (x - mean) / std, with mean and std over each group: (b, C, T) fp32."""
    g = gxhat.unflatten(1, (groups, -1))  # (b, G, C/G, T)
    h = xhat.unflatten(1, (groups, -1))
    mean_g = g.mean((2, 3), keepdim=True)
    mean_gh = (g * h).mean((2, 3), keepdim=True)
    return ((g - mean_g - h * mean_gh) * rstd).flatten(1, 2)


def group_norm_silu(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
    """SiLU(GroupNorm(x)) for x (B, C, T) in any layout; saves only x for backward. -> (B, C, T)."""
    return _GroupNormSiLU.apply(x, weight, bias, groups, eps)


class _LayerNormModulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        out = torch.empty_like(x, dtype=_compute_dtype(x))
        gain = scale.to(_acc(x)) + 1  # (B, C)
        for part in _chunks(x.shape[0], x[0].numel()):
            xhat = _ln(x[part], eps)[0]  # (b, C, T)
            out[part] = torch.addcmul(shift[part].to(xhat.dtype)[:, :, None], xhat, gain[part][:, :, None])
        ctx.save_for_backward(x, scale)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, scale = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_scale = torch.empty_like(scale, dtype=_acc(x))
        grad_shift = torch.empty_like(grad_scale)
        gain = scale.to(_acc(x)) + 1  # (B, C)
        for part in _chunks(x.shape[0], x[0].numel()):
            xhat, rstd = _ln(x[part], ctx.eps)  # (b, C, T), (b, 1, T)
            g = grad[part].to(xhat.dtype)
            grad_shift[part] = g.sum(2)
            grad_scale[part] = (g * xhat).sum(2)
            g = g * gain[part][:, :, None]  # gradient at xhat (a new tensor: grad is not ours to change)
            mean_g = g.mean(1, keepdim=True)  # (b, 1, T)
            mean_gh = (g * xhat).mean(1, keepdim=True)
            grad_x[part] = (g - mean_g - xhat * mean_gh) * rstd
        return grad_x, grad_scale.to(scale.dtype), grad_shift.to(scale.dtype), None  # shift: scale's dtype


def _ln(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """x (b, C, T) -> (x normalised over C at each time step, 1/std (b, 1, T)), fp32."""
    xf = x.to(_acc(x))
    var, mean = torch.var_mean(xf, dim=1, keepdim=True, correction=0)  # (b, 1, T)
    rstd = (var + eps).rsqrt()
    return (xf - mean).mul_(rstd), rstd


def layer_norm_modulate(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    """LayerNorm over channels at each time step (no affine), then * (1 + scale) + shift.

    x (B, C, T) in any layout, scale and shift (B, C); saves only x and scale for backward. -> (B, C, T).
    """
    return _LayerNormModulate.apply(x, scale, shift, eps)
