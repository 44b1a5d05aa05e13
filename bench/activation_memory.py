"""Peak tensor memory of one training step, counted op by op on the CPU. Prints JSON.

    python bench/activation_memory.py [--preset seed] [--batch 16] [--checkpointing/--no-checkpointing]

What a GPU's `max_memory_allocated` would show, without a GPU: every tensor an operation creates is counted
from its creation until its storage is freed (a `TorchDispatchMode`), through weight setup, AdamW state,
forward, backward and the optimizer step, at the real clip length. Mixed precision is bf16 autocast on the
CPU, which stores what fp16 autocast stores on a GPU (2 bytes per activation). One difference: CUDA autocast
runs plain `F.layer_norm` and `F.group_norm` in fp32, CPU autocast does not; with checkpointing drumdiff uses
its own norms (`drumdiff.nn.functional`, explicit dtypes), so only the attention norms of the deep levels
(a few MiB) count differently. The EMA copy is left out: under a memory budget it lives in host memory.
`state` is weights + AdamW state; `per_clip` is (peak - state) / batch, an upper bound of what one more clip
costs (it also holds the gradients and the autocast weight copies alive at the peak).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

MIB = 1024**2


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of every live tensor storage created under it, and the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size == 0 or key in self.live:
                    continue  # a view or an in-place result: already counted
                self.live[key] = size
                self.current += size
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out


def measure(*, preset: str, batch: int, length: int, checkpointing: bool, precision: str) -> dict[str, Any]:
    from drumdiff.config import load_preset
    from drumdiff.diffusion import v_loss
    from drumdiff.nn.unet1d import UNet1d
    from drumdiff.training.config import TrainConfig
    from drumdiff.training.step import TrainStep, make_adamw

    config = load_preset(preset).replace(length=length)
    torch.manual_seed(0)
    with TensorMemory() as memory:
        net = UNet1d(config)
        net.grad_checkpointing = checkpointing
        # no EMA: on a GPU its copy lives in host memory (what this counts is the GPU's share)
        step = TrainStep(net, make_adamw(net, TrainConfig()), shadow=None, precision=precision)
        for clips in (1, batch):  # the first step creates AdamW's state; the second is measured
            state = memory.current  # weights + AdamW state
            memory.peak = memory.current
            start = time.perf_counter()
            x0 = torch.randn(clips, config.audio_channels, length)
            noise, t = torch.randn_like(x0), torch.rand(clips)
            step(lambda x0=x0, noise=noise, t=t: v_loss(net, x0, noise, t).mean(), ema_decay=0.0)
            del x0, noise, t
        seconds = time.perf_counter() - start
        peak = memory.peak
    return {
        "preset": preset,
        "batch": batch,
        "length": length,
        "precision": precision,
        "checkpointing": checkpointing,
        "peak_mib": round(peak / MIB, 1),
        "state_mib": round(state / MIB, 1),
        "per_clip_mib": round((peak - state) / batch / MIB, 2),
        "step_seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32768)
    parser.add_argument("--precision", choices=["bf16-mixed", "32"], default="bf16-mixed")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    result = measure(
        preset=args.preset,
        batch=args.batch,
        length=args.length,
        checkpointing=args.checkpointing,
        precision=args.precision,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
