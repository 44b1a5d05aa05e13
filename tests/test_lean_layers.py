"""The memory-lean norms (`drumdiff.nn.functional`) and the polyphase `Upsample` against the plain ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drumdiff.nn import functional as lean
from drumdiff.nn.layers import Upsample, to_channels_last


def channels_last(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return to_channels_last(torch.randn(*shape, dtype=dtype)).requires_grad_()


@pytest.fixture(params=[1 << 20, 100], ids=["one-chunk", "many-chunks"])
def chunk(request, monkeypatch) -> int:
    """Run each test with the batch in one piece and split into chunks of one or two clips."""
    monkeypatch.setattr(lean, "CHUNK_ELEMENTS", request.param)
    return request.param


def test_group_norm_silu_matches_plain_ops_values_and_gradients(chunk: int) -> None:
    torch.manual_seed(0)
    x = channels_last(3, 8, 20)
    w, b = (torch.randn(8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    grad = torch.randn(3, 8, 20, dtype=torch.float64)
    kept = grad.clone()
    ours = lean.group_norm_silu(x, w, b, 4, 1e-5)
    theirs = F.silu(F.group_norm(x, 4, w, b, 1e-5))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.stride() == x.stride()  # stays channels-last
    for a, c in zip(
        torch.autograd.grad(ours, (x, w, b), grad), torch.autograd.grad(theirs, (x, w, b), grad), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    assert torch.equal(grad, kept)  # the incoming gradient is not changed in place


def test_layer_norm_modulate_matches_plain_ops_values_and_gradients(chunk: int) -> None:
    torch.manual_seed(1)
    x = channels_last(3, 8, 20)
    scale, shift = (torch.randn(3, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    grad = torch.randn(3, 8, 20, dtype=torch.float64)
    kept = grad.clone()
    ours = lean.layer_norm_modulate(x, scale, shift, 1e-6)
    normed = F.layer_norm(x.transpose(1, 2), (8,), eps=1e-6).transpose(1, 2)
    theirs = normed * (1 + scale[:, :, None]) + shift[:, :, None]
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    inputs = (x, scale, shift)
    for a, c in zip(
        torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(theirs, inputs, grad), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    assert torch.equal(grad, kept)


def test_lean_norms_return_the_autocast_dtype_and_gradients_in_the_inputs_dtypes() -> None:
    x = channels_last(2, 8, 16, dtype=torch.float32)
    w, b = torch.ones(8, requires_grad=True), torch.zeros(8, requires_grad=True)
    scale = torch.zeros(2, 8, dtype=torch.bfloat16, requires_grad=True)
    shift = torch.zeros(2, 8, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lean.group_norm_silu(x, w, b, 2, 1e-5)
        z = lean.layer_norm_modulate(x, scale, shift, 1e-6)
    assert y.dtype == z.dtype == torch.bfloat16
    grads = torch.autograd.grad((y.float().sum() + z.float().sum()), (x, w, b, scale, shift))
    assert [g.dtype for g in grads] == [torch.float32] * 3 + [torch.bfloat16] * 2
    assert lean.group_norm_silu(x, w, b, 2, 1e-5).dtype == torch.float32  # no autocast: x's dtype


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_polyphase_upsample_equals_interpolate_then_conv(factor: int) -> None:
    torch.manual_seed(factor)
    up = Upsample(6, 5, factor=factor).double()
    x = channels_last(2, 6, 11)
    ours = up(x)
    wide = F.interpolate(x, scale_factor=factor, mode="nearest")  # (B, C, f T)
    theirs = F.conv1d(wide, up.conv.weight, up.conv.bias, padding=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(theirs)
    params = (x, up.conv.weight, up.conv.bias)
    for a, c in zip(
        torch.autograd.grad(ours, params, grad), torch.autograd.grad(theirs, params, grad), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)
    assert "phases" not in up.state_dict()  # a derived constant, not a weight
