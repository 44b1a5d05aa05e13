"""`--memory-budget`: choose batch size, accumulation, precision and checkpointing by running real steps.

The probe runs the training step itself (`TrainStep`), so what it measures is what a run uses.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from drumdiff.config import ModelConfig
from drumdiff.errors import DrumdiffError
from drumdiff.training.config import GIB, TrainConfig, format_size
from drumdiff.training.step import TrainStep, batch_loss, frozen_copy, make_adamw

# Memory that a CUDA process needs outside PyTorch's allocator (context, kernels, cuDNN/cuBLAS workspaces):
# with a 2 GiB card this leaves 1.6 GiB for `max_memory_reserved`.
CUDA_CONTEXT_BYTES = int(0.4 * GIB)
# A probe's peak must stay this far under the limit: a real run adds a little (validation, Lightning, loaders);
# on an H200 a batch probed at 1.564 GiB reserved peaked at 1.602 GiB over 50 steps.
PROBE_MARGIN = 0.95


@dataclass(frozen=True)
class MemoryChoice:
    """What `--memory-budget` chose and the probe measurements behind it."""

    batch_size: int
    accumulate: int
    precision: str
    grad_checkpointing: bool
    peak_bytes: int
    limit_bytes: int
    probes: tuple[tuple[int, bool, int | None], ...]  # (batch, checkpointing, peak bytes or None for OOM)
    reason: str
    ema_on_cpu: bool = False


def _peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found")


def use_expandable_segments() -> None:
    """Let the CUDA allocator grow segments in place, so reserved memory stays close to allocated memory.

    Through PYTORCH_CUDA_ALLOC_CONF for an allocator that has not started yet (a user's own setting wins),
    and through the allocator's settings for one that has.
    """
    if not torch.cuda.is_initialized():
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        return
    with contextlib.suppress(Exception):  # a private API: without it, memory is only less compact
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")


def probe_memory(
    model_config: ModelConfig,
    *,
    budget_bytes: int,
    device: torch.device,
    target_batch: int,
    precision: str | None = None,
    grad_checkpointing: bool | None = None,
    train_config: TrainConfig | None = None,
    log: Any = print,
) -> MemoryChoice:
    """Choose batch size, accumulation, precision and checkpointing by running real training steps.

    Each candidate runs 2 steps (forward, backward, clipping, AdamW, EMA) at the real clip length.
    CUDA: `max_memory_reserved` must stay under budget - CUDA_CONTEXT_BYTES; CPU: the process's peak RSS
    under the budget. Picks the largest batch that fits (no checkpointing when both fit), then accumulation
    so that batch x accumulate reaches `target_batch`.
    """
    cfg = train_config or TrainConfig()
    from drumdiff.nn.unet1d import UNet1d

    reasons = []
    if device.type == "cuda":
        use_expandable_segments()
        limit = budget_bytes - CUDA_CONTEXT_BYTES
        if limit <= 0:
            raise DrumdiffError(
                f"memory budget {format_size(budget_bytes)} leaves nothing after the CUDA context"
            )
        if precision is None:
            bf16 = torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device)[0] >= 8
            precision = "bf16-mixed" if bf16 else "16-mixed"
            reasons.append(
                f"{precision}: mixed precision halves activation memory"
                + ("" if bf16 else " (no fast bf16 on this GPU)")
            )
        measure = "max_memory_reserved"
    elif device.type == "cpu":
        limit = budget_bytes
        if precision is None:
            precision = "32"
            reasons.append("32-bit: mixed precision is slower than fp32 on most CPUs")
        if not _peak_rss_reset():
            raise DrumdiffError(
                "--memory-budget on CPU needs Linux's /proc/self/clear_refs; set --batch-size instead"
            )
        measure = "peak RSS"
    else:
        raise DrumdiffError(f"--memory-budget cannot probe device {device.type}; set --batch-size instead")

    torch.manual_seed(0)
    net = UNet1d(model_config).to(device)
    # On a GPU the EMA copy lives in host memory: it is needed only for validation, previews and export.
    state: dict[str, Any] = {"net": net, "shadow": frozen_copy(net).to("cpu")}
    state["opt"] = make_adamw(net, cfg)
    shape = (model_config.audio_channels, model_config.length)
    num_classes = model_config.num_classes if model_config.conditional else 0

    def run_steps(batch: int, checkpointing: bool) -> int | None:
        net, opt = state["net"], state["opt"]
        step = TrainStep(
            net,
            opt,
            shadow=state["shadow"],
            precision=precision,
            grad_clip=cfg.grad_clip,
            device_type=device.type,
        )
        net.grad_checkpointing = checkpointing
        try:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            else:
                _peak_rss_reset()
            for _ in range(2):
                x0 = torch.randn(batch, *shape, device=device)
                items = (
                    x0,
                    torch.zeros(batch, dtype=torch.long, device=device),  # class 0
                    torch.randn_like(x0),
                    torch.rand(batch, device=device),
                    torch.zeros(batch, dtype=torch.bool, device=device),  # no guidance dropout
                )
                step(lambda items=items: batch_loss(net, items, num_classes=num_classes), ema_decay=0.99)
                del x0, items
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                return int(torch.cuda.max_memory_reserved(device))
            return _peak_rss()
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            return None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= target_batch]
    if target_batch not in batches:
        batches.append(target_batch)
    options = [grad_checkpointing] if grad_checkpointing is not None else [False, True]
    probes: list[tuple[int, bool, int | None]] = []
    best: tuple[int, bool, int] | None = None
    for checkpointing in options:
        for batch in batches:
            peak = run_steps(batch, checkpointing)
            probes.append((batch, checkpointing, peak))
            shown = "out of memory" if peak is None else format_size(peak)
            log(
                f"memory probe: batch {batch}, checkpointing {'on' if checkpointing else 'off'}: {measure} {shown}"
            )
            if peak is None or peak > limit * PROBE_MARGIN:
                break
            if best is None or batch > best[0]:
                best = (batch, checkpointing, peak)
        if best is not None and best[0] >= target_batch:
            break  # no need to try checkpointing: the whole target batch fits without it
    state.clear()
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if best is None:
        raise DrumdiffError(
            f"memory budget {format_size(budget_bytes)} is too small: even batch 1 with gradient checkpointing "
            f"needs more than {format_size(limit)} ({measure}) for preset layout with length {model_config.length}"
        )
    batch, checkpointing, peak = best
    accumulate = max(1, math.ceil(target_batch / batch))
    if checkpointing and False in options:
        reasons.append("gradient checkpointing on: without it a larger batch does not fit")
    elif not checkpointing:
        reasons.append("gradient checkpointing off: not needed, and it costs up to twice the step time")
    reasons.append(
        f"batch {batch} is the largest that fits ({measure} {format_size(peak)} <= {PROBE_MARGIN:.0%} of "
        f"{format_size(limit)})"
    )
    if accumulate > 1:
        reasons.append(f"accumulate {accumulate} to reach an effective batch of {batch * accumulate}")
    return MemoryChoice(
        batch_size=batch,
        accumulate=accumulate,
        precision=precision,
        grad_checkpointing=checkpointing,
        peak_bytes=peak,
        limit_bytes=limit,
        probes=tuple(probes),
        reason="; ".join(reasons),
        ema_on_cpu=device.type == "cuda",
    )
