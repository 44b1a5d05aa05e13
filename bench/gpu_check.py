"""The one GPU check: the 2 GB laptop target, then the CUDA part of bench/train.py. Prints JSON.

    python bench/gpu_check.py [--smoke] [--out DIR] [--skip-bench]

1. Proof of the 2 GB target, as a laptop with a 2 GB card would see it: the process is capped with
   `torch.cuda.set_per_process_memory_fraction(2 GiB / total)`, attention is restricted to the math and
   memory-efficient SDPA kernels (no flash / cuDNN attention on a Pascal card), and `drumdiff train` runs
   (the same `drumdiff.training.run.train` the CLI calls) with `--preset seed --precision 16-mixed --batch-size 16
   --memory-budget 2GB --max-steps 50` on synthetic clips. It must choose batch 16 without accumulation,
   finish 50 steps without an out-of-memory error, and keep `max_memory_reserved` at most 1.6 GiB.
2. `bench.train.cuda_part`: original vs ours, batch 1/4/8/16, checkpointing off/on, fp32/16-mixed/bf16-mixed.

Without CUDA (or with --smoke) the same code runs on the CPU with the tiny preset and short clips, so the
script can be tested before a GPU is at hand. The JSON goes to stdout and to DIR/gpu_check.json
(DIR: --out, else $OUT, else ./gpu_check_out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import lightning.pytorch as pl  # noqa: E402

GIB = 1024**3
TARGET_RESERVED = 1.6 * GIB


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthetic_source(folder: Path, *, clips: int, length: int) -> Path:
    """Decaying noise bursts and low sine 'kicks' as WAV files in two class folders."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = np.arange(length)
    for name in ("kick", "snare"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(clips // 2):
            env = np.exp(-n / rng.uniform(800, 6000))
            if name == "kick":
                tone = np.sin(2 * np.pi * rng.uniform(40, 90) * n / 44100 * (1 + 2 * np.exp(-n / 2000)))
                clip = np.stack([tone, tone], 1)
            else:
                clip = rng.standard_normal((length, 2))
            sf.write(
                folder / name / f"{name}{i:03d}.wav", (0.5 * env[:, None] * clip).astype(np.float32), 44100
            )
    return folder


class MemoryWatch(pl.Callback):
    """Reset the CUDA peaks when training starts (after the budget probe) and read them at the end."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.result["train_seconds"] = time.perf_counter() - self._start
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.result["max_memory_reserved"] = torch.cuda.max_memory_reserved()
            self.result["max_memory_allocated"] = torch.cuda.max_memory_allocated()


def proof(work: Path, *, smoke: bool) -> dict[str, Any]:
    """Train under --memory-budget 2GB with a 2 GiB process cap; see the module docstring."""
    from drumdiff.cli import main as cli
    from drumdiff.training.run import TrainRequest, train

    cuda = torch.cuda.is_available() and not smoke
    length = 32768 if cuda else 4096
    steps = 50 if cuda else 3
    src = synthetic_source(work / "src", clips=48, length=length)
    data = work / "data"
    code = cli(["data", "prepare", str(src), "--out", str(data), "--classes", "folders", "--length", str(length),
                "--workers", "1", "--no-progress"])  # fmt: skip
    assert code == 0, "data prepare failed"
    out: dict[str, Any] = {"steps_asked": steps, "length": length}
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(2 * GIB / total)
        torch.backends.cuda.enable_flash_sdp(False)
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
            torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(True)
        torch.backends.cuda.enable_math_sdp(True)
        out.update(cap_fraction=2 * GIB / total, gpu_total_gib=total / GIB)
    watch = MemoryWatch()
    overrides = {
        "preset": "seed" if cuda else "tiny",
        "precision": "16-mixed" if cuda else None,
        "batch_size": 16,
        "max_steps": steps,
        "checkpoint_every": steps,
        "preview_every": -1,
        "logger": "none",
    }
    request = TrainRequest(data_dir=data, run_dir=work / "run", overrides=overrides, memory_budget="2GB")
    try:
        module = train(request, callbacks=[watch])
        out["oom"] = False
        out["steps_done"] = module.step
    except torch.OutOfMemoryError as error:
        out["oom"] = True
        out["error"] = str(error).splitlines()[0]
        return out
    record = json.loads((work / "run" / "config.json").read_text())
    choice = record["memory_choice"]
    out["chosen"] = {
        k: choice[k] for k in ("batch_size", "accumulate", "precision", "grad_checkpointing", "ema_on_cpu")
    }
    out["reason"] = choice["reason"]
    out["probes"] = [
        {"batch": b, "checkpointing": c, "peak_gib": None if p is None else round(p / GIB, 3)}
        for b, c, p in choice["probes"]
    ]
    out.update(watch.result)
    if "max_memory_reserved" in out:
        out["max_memory_reserved_gib"] = round(out["max_memory_reserved"] / GIB, 3)
        out["max_memory_allocated_gib"] = round(out["max_memory_allocated"] / GIB, 3)
    out["pass"] = bool(
        not out["oom"]
        and out["steps_done"] == steps
        and choice["batch_size"] == 16
        and choice["accumulate"] == 1
        and (
            not cuda or (choice["precision"] == "16-mixed" and out["max_memory_reserved"] <= TARGET_RESERVED)
        )
    )
    if cuda:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="CPU run with the tiny preset (tests this script)"
    )
    parser.add_argument("--skip-bench", action="store_true", help="only the 2 GB proof")
    parser.add_argument("--skip-proof", action="store_true", help="only the benchmark")
    parser.add_argument("--bench-steps", type=int, default=3, help="timed steps per benchmark configuration")
    parser.add_argument(
        "--out", type=Path, help="folder for gpu_check.json (default $OUT or ./gpu_check_out)"
    )
    args = parser.parse_args(argv)
    from drumdiff.training.memory import use_expandable_segments

    use_expandable_segments()  # before CUDA starts, as `drumdiff train --memory-budget` does
    smoke = args.smoke or not torch.cuda.is_available()
    out_dir = args.out or Path(os.environ.get("OUT") or "gpu_check_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": sys.version.split()[0],
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "smoke": smoke,
    }
    start = time.perf_counter()

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - start, 1)
        text = json.dumps(result, indent=2, default=str)
        (out_dir / "gpu_check.json").write_text(text + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        if args.skip_proof:
            result["proof_2gb"] = {"pass": None, "skipped": True}
        else:
            try:
                result["proof_2gb"] = proof(Path(tmp), smoke=smoke)
            except Exception:  # noqa: BLE001 - report and go on to the benchmark
                result["proof_2gb"] = {"pass": False, "exception": traceback.format_exc()[-3000:]}
        log(json.dumps(result["proof_2gb"], indent=2, default=str))
        save()
    if not args.skip_bench:
        from bench.train import cuda_part

        try:
            if smoke:
                result["bench"] = cuda_part(
                    batches=[1],
                    steps=1,
                    warmup=0,
                    preset="tiny",
                    length=4096,
                    device=torch.device("cpu"),
                    log=log,
                )
            else:
                result["bench"] = cuda_part(batches=[1, 4, 8, 16], steps=args.bench_steps, warmup=1, log=log)
        except Exception:  # noqa: BLE001
            result["bench"] = {"exception": traceback.format_exc()[-3000:]}
    save()
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["proof_2gb"].get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
