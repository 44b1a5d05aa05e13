"""Training speed and memory, side by side: the original library against drumdiff, `seed` layout.

    python -m bench.train [--cpu] [--cuda] [--quick] [--out FILE.json]

Original: audio-diffusion-pytorch 0.1.3 `DiffusionModel(net_t=UNetV0, ...)` whose forward is its v-diffusion
loss. Ours: `UNet1d(load_preset("seed"))` with `drumdiff.diffusion.v_loss`, t ~ U(0, 1). Both sides get the
same AdamW (lr 1e-4, betas (0.95, 0.999), eps 1e-6, weight decay 1e-3), gradient clipping at 1.0 and an EMA
copy updated after every step. One training step = forward, backward, clip, AdamW, EMA.

CPU (`--cpu`): each configuration runs in a fresh subprocess; memory is its peak RSS minus its RSS after
imports and model/optimizer/EMA creation (Linux VmHWM after resetting it through /proc/self/clear_refs).
Batch 1 and 4; ours with and without gradient checkpointing (the original has none).
CUDA (`--cuda`): one process; batch 1, 4, 8, 16 x checkpointing off/on x fp32 / 16-mixed / bf16-mixed;
`max_memory_allocated` and `max_memory_reserved` per configuration.
Seconds per training sample: median over the timed steps of step time / batch (CPU: then the median over
`--rounds` interleaved runs of each subprocess). Ratios: `speed` is
original s/sample over ours (> 1: ours faster), `memory` is ours over the original's (< 1: ours smaller).
Exits with status 1 when the original library cannot be imported.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_name, emit  # noqa: E402
from bench.original_lib import SEED_LAYOUT, import_original  # noqa: E402
from drumdiff.config import load_preset  # noqa: E402
from drumdiff.diffusion import v_loss  # noqa: E402
from drumdiff.nn.unet1d import UNet1d  # noqa: E402
from drumdiff.training.step import TrainStep  # noqa: E402

PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def build(impl: str, *, device: torch.device, checkpointing: bool, preset: str = "seed", length: int = 32768):
    """(model, loss_fn(x) -> scalar, EMA copy, AdamW) for 'original' or 'ours'."""
    torch.manual_seed(0)
    if impl == "original":
        adp = import_original()
        model = adp.DiffusionModel(net_t=adp.UNetV0, **SEED_LAYOUT).to(device)

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            return model(x)

    else:
        config = load_preset(preset).replace(length=length)
        model = UNet1d(config).to(device)
        model.grad_checkpointing = checkpointing

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            noise = torch.randn_like(x)
            t = torch.rand(x.shape[0], device=x.device)
            return v_loss(model, x, noise, t).mean()

    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3)
    return model, loss_fn, ema, opt


def make_step(model, loss_fn, ema, opt, *, device: torch.device, precision: str):
    """One full training step at a given batch of audio [B, C, T]: drumdiff's own `TrainStep`, both sides."""
    train_step = TrainStep(
        model, opt, shadow=ema, precision=precision, grad_clip=1.0, device_type=device.type
    )

    def step(x: torch.Tensor) -> None:
        train_step(lambda: loss_fn(x), ema_decay=0.995)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, x: torch.Tensor, *, device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per sample over `steps` timed steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step(x)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / x.shape[0]


# ---------------------------------------------------------------------------------------------- CPU


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def cpu_child(impl: str, batch: int, checkpointing: bool, *, steps: int, preset: str, length: int) -> dict:
    """Runs inside the fresh subprocess: one configuration, RSS measured around it."""
    device = torch.device("cpu")
    model, loss_fn, ema, opt = build(
        impl, device=device, checkpointing=checkpointing, preset=preset, length=length
    )
    step = make_step(model, loss_fn, ema, opt, device=device, precision="32")
    x = 0.5 * torch.randn(batch, 2, length, generator=torch.Generator().manual_seed(1))
    baseline = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    seconds = timed_steps(step, x, device=device, warmup=1, steps=steps)
    peak = _rss("VmHWM")
    return {
        "impl": impl,
        "batch": batch,
        "checkpointing": checkpointing,
        "s_per_sample": seconds,
        "rss_after_setup_mb": baseline / 2**20,
        "peak_rss_mb": peak / 2**20,
        "peak_above_setup_mb": (peak - baseline) / 2**20,
        "params": sum(p.numel() for p in model.parameters()),
    }


def cpu_part(
    *, batches: list[int], steps: int, preset: str, length: int, threads: int | None, rounds: int = 1
) -> dict:
    """Each configuration in a fresh subprocess, `rounds` times over, the configurations interleaved.

    A machine's speed drifts (other jobs, page-fault cost); running original, ours, original, ours... and
    taking each configuration's median over the rounds keeps that drift out of the ratios.
    """
    # Interleaved by batch so that the two sides of each ratio run close together in time.
    configs = [
        (impl, b, c) for b in batches for impl, c in (("original", False), ("ours", False), ("ours", True))
    ]
    runs: dict[tuple[str, int, bool], list[dict]] = {config: [] for config in configs}
    for round_ in range(rounds):
        for impl, batch, checkpointing in configs:
            cmd = [sys.executable, "-m", "bench.train", "--child", impl, str(batch), str(int(checkpointing))]
            cmd += ["--steps", str(steps), "--preset", preset, "--length", str(length)]
            env = dict(os.environ)
            if threads:
                env["OMP_NUM_THREADS"] = str(threads)
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"cpu round {round_ + 1}/{rounds} {impl:8s} batch {batch:2d} ckpt {checkpointing!s:5s}: "
                f"{row['s_per_sample']:.3f} s/sample, peak above setup {row['peak_above_setup_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
            runs[(impl, batch, checkpointing)].append(row)
    rows = []
    for found in runs.values():
        row = dict(found[0])
        for key in ("s_per_sample", "peak_above_setup_mb", "rss_after_setup_mb", "peak_rss_mb"):
            row[key] = statistics.median(r[key] for r in found)
        row["s_per_sample_rounds"] = [r["s_per_sample"] for r in found]
        rows.append(row)
    ratios = {}
    for batch in batches:
        orig = next(r for r in rows if r["impl"] == "original" and r["batch"] == batch)
        for checkpointing in (False, True):
            ours = next(
                r
                for r in rows
                if r["impl"] == "ours" and r["batch"] == batch and r["checkpointing"] == checkpointing
            )
            key = f"batch{batch}_{'ckpt' if checkpointing else 'nockpt'}"
            ratios[key] = {
                "speed": orig["s_per_sample"] / ours["s_per_sample"],
                "memory": ours["peak_above_setup_mb"] / orig["peak_above_setup_mb"],
            }
    return {"threads": threads or torch.get_num_threads(), "rounds": rounds, "rows": rows, "ratios": ratios}


# --------------------------------------------------------------------------------------------- CUDA


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> tuple[float, float]:
    """(max allocated, max reserved) in MiB; zeros on CPU (the smoke test of this code path)."""
    if device.type != "cuda":
        return 0.0, 0.0
    return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20


def cuda_part(
    *,
    batches: list[int],
    steps: int,
    warmup: int,
    preset: str = "seed",
    length: int = 32768,
    log: Any = None,
    device: torch.device | None = None,
) -> dict:
    """Every (impl, batch, checkpointing, precision) in one process; OOM recorded, not fatal."""
    device = device or torch.device("cuda")
    cuda = device.type == "cuda"
    rows = []
    for precision in PRECISIONS:
        if precision == "bf16-mixed" and cuda and not torch.cuda.is_bf16_supported():
            continue
        if precision == "16-mixed" and not cuda:
            continue  # fp16 autocast on CPU: not a configuration anyone trains with
        for impl, checkpointing in (("original", False), ("ours", False), ("ours", True)):
            for batch in batches:
                _reset_memory(device)
                row: dict[str, Any] = {
                    "impl": impl,
                    "batch": batch,
                    "checkpointing": checkpointing,
                    "precision": precision,
                }
                try:
                    model, loss_fn, ema, opt = build(
                        impl, device=device, checkpointing=checkpointing, preset=preset, length=length
                    )
                    step = make_step(model, loss_fn, ema, opt, device=device, precision=precision)
                    x = 0.5 * torch.randn(batch, 2, length, device=device)
                    row["s_per_sample"] = timed_steps(step, x, device=device, warmup=warmup, steps=steps)
                    row["max_memory_allocated_mb"], row["max_memory_reserved_mb"] = _memory(device)
                except torch.OutOfMemoryError:
                    row["oom"] = True
                finally:
                    model = loss_fn = ema = opt = step = x = None  # noqa: F841 - free before the next one
                    _reset_memory(device)
                rows.append(row)
                if log:
                    log(f"cuda {precision:10s} {impl:8s} ckpt {checkpointing!s:5s} batch {batch:2d}: {row}")
    ratios = {}
    for r in rows:
        if r["impl"] != "ours" or "s_per_sample" not in r:
            continue
        orig = next(
            o
            for o in rows
            if o["impl"] == "original" and o["batch"] == r["batch"] and o["precision"] == r["precision"]
        )
        if "s_per_sample" not in orig:
            continue
        key = f"{r['precision']}_batch{r['batch']}_{'ckpt' if r['checkpointing'] else 'nockpt'}"
        ratios[key] = {
            "speed": orig["s_per_sample"] / r["s_per_sample"],
            "memory_reserved": r["max_memory_reserved_mb"] / max(1e-9, orig["max_memory_reserved_mb"]),
            "memory_allocated": r["max_memory_allocated_mb"] / max(1e-9, orig["max_memory_allocated_mb"]),
        }
    name = torch.cuda.get_device_name(device) if cuda else "cpu (smoke test)"
    return {"device": name, "rows": rows, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=None, help="run the CPU part")
    parser.add_argument(
        "--cuda", action=argparse.BooleanOptionalAction, default=None, help="run the CUDA part"
    )
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument(
        "--preset", default="seed", help="our preset (default seed; the original is always seed)"
    )
    parser.add_argument("--length", type=int, default=32768, help="clip length in samples")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="CPU: runs of every configuration, interleaved (median taken)"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "BATCH", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import_original()
    except ImportError as error:
        print(f"the original library cannot be imported: {error}", file=sys.stderr)
        return 1
    if args.child:
        impl, batch, ckpt = args.child
        row = cpu_child(
            impl, int(batch), bool(int(ckpt)), steps=args.steps or 3, preset=args.preset, length=args.length
        )
        print(json.dumps(row))
        return 0
    run_cpu = args.cpu if args.cpu is not None else True
    run_cuda = args.cuda if args.cuda is not None else torch.cuda.is_available()
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "preset": args.preset,
        "length": args.length,
    }
    if run_cpu:
        result["cpu_part"] = cpu_part(
            batches=[1, 4],
            steps=args.steps or (1 if args.quick else 3),
            preset=args.preset,
            length=args.length,
            threads=args.threads,
            rounds=1 if args.quick else args.rounds,
        )
    if run_cuda:
        result["cuda_part"] = cuda_part(
            batches=[1, 4] if args.quick else [1, 4, 8, 16],
            steps=args.steps or (2 if args.quick else 5),
            warmup=1 if args.quick else 2,
            preset=args.preset,
            length=args.length,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
