"""Memory-lean normalisations for training: each saves only its input and recomputes the rest in backward.

Under CUDA autocast, `GroupNorm -> SiLU -> conv` keeps three copies of every activation for backward: the
norm's input cast to fp32, the SiLU input (the norm's fp32 output) and the conv's fp16 input. At level 0 of
the `seed` U-Net (32 channels x 32768 samples) that is 12 MiB per clip and norm, and it is what kept batch 16
out of a 2 GB card. These functions keep only their input (which the next block or the skip holds anyway) and
return the autocast dtype. Backward runs the same native ops again with autograd, a few clips at a time, so
the fp32 intermediates exist for one chunk only, whatever the batch. Values and gradients are those of the
plain ops (computed in fp32, or in the input's dtype when wider):

    group_norm_silu(x, weight, bias, groups, eps)    SiLU(GroupNorm(x)), x (B, C, T)
    layer_norm_modulate(x, scale, shift, eps)        LayerNorm over C (no affine) * (1 + scale) + shift
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements per chunk (16 MiB of fp32 per intermediate): bounds the temporaries, keeps the kernels large.
CHUNK_ELEMENTS = 1 << 22


def _chunks(x: Tensor) -> list[slice]:
    """Slices of x's batch holding about CHUNK_ELEMENTS elements each (at least one clip)."""
    step = max(1, CHUNK_ELEMENTS // max(1, x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _output_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would give a conv's input here: its dtype when autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _Recomputed(torch.autograd.Function):
    """out = fn(x, *params) chunk by chunk over the batch; backward recomputes fn per chunk with autograd.

    `batched` marks the params that have a batch dimension (sliced with x) rather than being shared.
    """

    @staticmethod
    def forward(
        ctx, fn: Callable[..., Tensor], batched: tuple[bool, ...], x: Tensor, *params: Tensor
    ) -> Tensor:  # type: ignore[override]
        out = torch.empty_like(x, dtype=_output_dtype(x))  # keeps x's memory layout
        with torch.autocast(x.device.type, enabled=False):
            for part in _chunks(x):
                out[part] = fn(x[part], *(p[part] if b else p for p, b in zip(params, batched, strict=True)))
        ctx.fn, ctx.batched = fn, batched
        ctx.save_for_backward(x, *params)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, *params = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_params = [torch.zeros_like(p) for p in params]
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            for part in _chunks(x):
                inputs = [x[part].detach().requires_grad_()]
                inputs += [
                    (p[part] if b else p).detach().requires_grad_()
                    for p, b in zip(params, ctx.batched, strict=True)
                ]
                out = ctx.fn(*inputs)
                grads = torch.autograd.grad(out, inputs, grad[part].to(out.dtype))
                grad_x[part] = grads[0]
                for g, acc, b in zip(grads[1:], grad_params, ctx.batched, strict=True):
                    if b:
                        acc[part] = g
                    else:
                        acc += g
        return None, None, grad_x, *grad_params


def _wide(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _gn_silu(x: Tensor, weight: Tensor, bias: Tensor, *, groups: int, eps: float) -> Tensor:
    """(b, C, T) -> SiLU(GroupNorm(x)) in fp32 (or wider), x's layout kept (4D channels-last kernel)."""
    xw = _wide(x)
    y = F.group_norm(xw.unsqueeze(2), groups, weight.to(xw.dtype), bias.to(xw.dtype), eps).squeeze(2)
    return F.silu(y)


def group_norm_silu(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
    """SiLU(GroupNorm(x)) for x (B, C, T) in any layout; saves only x for backward. -> (B, C, T)."""

    def fn(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return _gn_silu(x, weight, bias, groups=groups, eps=eps)

    return _Recomputed.apply(fn, (False, False), x, weight, bias)


def layer_norm_modulate(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    """LayerNorm over channels at each time step (no affine), then * (1 + scale) + shift.

    x (B, C, T) in any layout, scale and shift (B, C); saves only x, scale and shift. -> (B, C, T).
    """

    def fn(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        xt = _wide(x).transpose(1, 2)  # (b, T, C): contiguous when x is channels-last
        y = F.layer_norm(xt, (xt.shape[-1],), eps=eps)
        return torch.addcmul(_wide(shift)[:, None], y, _wide(scale)[:, None] + 1).transpose(1, 2)  # (b, C, T)

    return _Recomputed.apply(fn, (True, True), x, scale, shift)
