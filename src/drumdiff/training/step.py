"""The one training step, the EMA and the validation loss.

`TrainStep` is the step that the Lightning module, the `--memory-budget` probe and `bench/train.py` all run:

    autocast -> loss -> (GradScaler) backward -> unscale, clip -> AdamW -> EMA

The Lightning module splits it at the accumulation boundary (`backward` per micro-batch, `update` once per
optimizer step); the probe and the benchmark call it whole.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from drumdiff.diffusion import alpha_sigma, log_snr, quiet_weights, t_from_log_snr, v_error_gain, v_loss
from drumdiff.files import stable_seed
from drumdiff.training.config import VAL_SEED, VAL_T, TrainConfig

AUTOCAST_DTYPES = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def ema_beta(step: int, *, beta: float, power: float) -> float:
    """EMA decay after `step` updates: 1 - (1 + step)^-power, capped at `beta` (0 at the first update)."""
    return min(beta, 1.0 - (1.0 + step) ** -power)


@torch.no_grad()
def ema_update(shadow: nn.Module, net: nn.Module, *, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * net for the parameters; buffers are copied from `net`."""
    shadow_params = list(shadow.parameters())
    net_params = [
        p.detach().to(s.device, non_blocking=False)
        for s, p in zip(shadow_params, net.parameters(), strict=True)
    ]
    torch._foreach_lerp_(shadow_params, net_params, 1.0 - decay)
    for s_buf, n_buf in zip(shadow.buffers(), net.buffers(), strict=True):
        s_buf.copy_(n_buf)


def frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of `net` without gradients, in eval mode: the EMA shadow."""
    shadow = copy.deepcopy(net)
    shadow.requires_grad_(False)
    shadow.eval()
    return shadow


def make_adamw(net: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The training optimizer (also what --memory-budget probes with); one fused kernel on a CPU or GPU."""
    # Fused: one pass over each tensor instead of ~10 (3x faster on a CPU), no per-step temporaries on a GPU.
    fused = True if next(net.parameters()).device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(
        net.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
    )


def batch_loss(
    net: nn.Module,
    batch: Sequence[Tensor],
    *,
    num_classes: int,
    loss_weight: str = "v",
    min_snr_gamma: float = 5.0,
    log_snr_shift: float = 0.0,
    quiet_weight: float = 1.0,
    sigma_data: float = 1.0,
    skip_scale: float = 1.0,
) -> Tensor:
    """Mean (weighted) v-loss of a training batch (audio, class, noise, t, drop) from `TrainItems`.

    On a conditional model (`num_classes` > 0) the dropped examples get the null class `num_classes`.
    `log_snr_shift` moves each drawn t to log(alpha/sigma) + shift (negative: noisier; the shifted schedules
    of Hoogeboom et al. 2023, "simple diffusion"). `loss_weight="min-snr"` weights each example's v-MSE by
    min(SNR, gamma) / (SNR + 1) = min(alpha^2, gamma sigma^2), SNR = alpha^2 / sigma^2 (Min-SNR-gamma,
    Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", for v-prediction).
    `quiet_weight` > 1 weights, within each clip, the squared error of samples where the clean clip is
    quiet, up to that factor (`drumdiff.diffusion.quiet_weights`): the tails of one-shots, where leftover
    noise is heard as hiss (normalised to mean 1 over the batch). `sigma_data` and `skip_scale` are the
    model's (`ModelConfig`): the loss is on its v, in its units.
    """
    audio, class_index, noise, t, drop = batch  # (B, C, T), (B,), (B, C, T), (B,), (B,)
    class_id = None
    if num_classes > 0:
        class_id = torch.where(drop, torch.full_like(class_index, num_classes), class_index)
    if log_snr_shift:
        t = t_from_log_snr(log_snr(t.double()) + log_snr_shift).to(t.dtype)
    weight = None
    if quiet_weight != 1.0:  # mean 1 over the batch: the loss keeps the scale gradient clipping is set for
        weight = quiet_weights(audio, quiet_weight)
        weight = weight / weight.mean()
    loss = v_loss(
        net, audio, noise, t, class_id=class_id, weight=weight, sigma_data=sigma_data, skip_scale=skip_scale
    )  # (B,)
    if loss_weight == "min-snr":
        alpha, sigma = alpha_sigma(t.float())
        loss = loss * torch.minimum(alpha.pow(2), min_snr_gamma * sigma.pow(2))
    elif loss_weight != "v":
        raise ValueError(f"loss_weight {loss_weight!r}: choose v or min-snr")
    return loss.mean()


def crop_batch(batch: Sequence[Tensor], length: int) -> tuple[Tensor, ...]:
    """The batch with audio and noise cut to their first `length` samples (the attack of a one-shot)."""
    audio, class_index, noise, t, drop = batch
    return audio[..., :length], class_index, noise[..., :length], t, drop


class Update(enum.Enum):
    """What `TrainStep.update` did."""

    APPLIED = "applied"
    OVERFLOW = "overflow"  # 16-mixed: the GradScaler found inf/NaN gradients, lowered its scale, skipped
    NON_FINITE = "non-finite"  # fp32/bf16: the gradient norm is not finite; nothing changed


class TrainStep:
    """autocast -> loss -> scaler/backward -> clip -> AdamW -> EMA.

    `precision` is one of "32", "16-mixed" (with a GradScaler), "bf16-mixed". `shadow` is the EMA copy (None:
    no EMA, as in the activation-memory benchmark). `backward(tensor)` runs the backward pass (Lightning's
    `manual_backward` under DDP; `Tensor.backward` otherwise).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        shadow: nn.Module | None,
        precision: str = "32",
        grad_clip: float = 1.0,
        device_type: str = "cpu",
        backward: Callable[[Tensor], Any] | None = None,
    ) -> None:
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision {precision!r}: choose {', '.join(AUTOCAST_DTYPES)}")
        self.net, self.optimizer, self.shadow = net, optimizer, shadow
        self.precision, self.grad_clip, self.device_type = precision, grad_clip, device_type
        self.scaler = torch.amp.GradScaler(device_type) if precision == "16-mixed" else None
        self._backward = backward or Tensor.backward

    def loss(self, compute: Callable[[], Tensor]) -> Tensor:
        """`compute()` (a scalar loss) under the step's autocast."""
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return compute()

    def backward(self, loss: Tensor, *, scale: float = 1.0) -> None:
        """Accumulate the gradients of `loss * scale` (scaled for fp16 by the GradScaler)."""
        loss = loss * scale if scale != 1.0 else loss
        self._backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def update(self, *, ema_decay: float, lr: float | None = None) -> Update:
        """Unscale, clip, AdamW step at `lr` (None: keep the optimizer's), EMA; gradients are cleared."""
        opt = self.optimizer
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        finite = bool(torch.isfinite(norm))
        if self.scaler is not None:
            self.scaler.step(opt)  # skips the step itself when the gradients overflowed
            self.scaler.update()
        elif finite:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if not finite:
            return Update.OVERFLOW if self.scaler is not None else Update.NON_FINITE
        if self.shadow is not None:
            ema_update(self.shadow, self.net, decay=ema_decay)
        return Update.APPLIED

    def __call__(self, compute: Callable[[], Tensor], *, ema_decay: float, lr: float | None = None) -> Update:
        """One whole step over one batch: `compute()` is its scalar loss."""
        self.backward(self.loss(compute))
        return self.update(ema_decay=ema_decay, lr=lr)

    def state_dict(self) -> dict[str, Any]:
        """The GradScaler's state (empty without one), for checkpoints."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


@torch.no_grad()
def validation_loss(
    net: nn.Module,
    dataset: Any,
    *,
    items: int,
    batch_size: int,
    conditional: bool,
    device: torch.device,
    sigma_data: float = 1.0,
    skip_scale: float = 1.0,
) -> float:
    """Mean v-loss over the first `items` clips x the fixed t grid VAL_T, noise fixed per clip (fp32).

    Always the plain v's error (the x0 estimate's error / sigma), whatever the model's units, so that
    models of different units compare on one scale.
    """
    was_training = net.training
    net.eval()
    count = min(len(dataset), items)
    total, n = 0.0, 0
    chunk = max(1, batch_size)
    for start in range(0, count, chunk):
        rows = []
        for i in range(start, min(count, start + chunk)):
            audio, class_index = dataset[i]
            g = torch.Generator().manual_seed(stable_seed("val", VAL_SEED, i))
            rows.append((audio, class_index, torch.randn(audio.shape, generator=g)))
        audio = torch.stack([r[0] for r in rows]).to(device)  # (b, C, T)
        noise = torch.stack([r[2] for r in rows]).to(device)
        classes = torch.tensor([int(r[1]) for r in rows], device=device)
        for t_value in VAL_T:
            t = torch.full((len(rows),), t_value, device=device)
            with torch.autocast(device.type, enabled=False):
                loss = v_loss(
                    net,
                    audio,
                    noise,
                    t,
                    class_id=classes if conditional else None,
                    sigma_data=sigma_data,
                    skip_scale=skip_scale,
                )
            total += float((loss * v_error_gain(t, sigma_data).square()).sum())
            n += len(rows)
    net.train(was_training)
    return total / max(1, n)
