"""Micro-benchmark: reading a batch of 16 clips from the prepared-dataset cache (target: under 5 ms).

    python bench/data_cache.py [DIR]          # DIR: a prepared dataset; default: a synthetic one in a temp folder

Prints JSON: median and p90 milliseconds per batch of 16 random clips, for `PreparedDataset.batch` (each
clip converted from the float16 memory map straight into one float32 `[B, C, T]` array) and for 16
`__getitem__` calls + `torch.stack` (what a DataLoader does), without and with augmentation. The page cache is warm (one untimed pass first), as it
is after the first epoch of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from drumdiff.data import Augment, PreparedDataset, prepare


def _synthetic(folder: Path, clips: int = 256) -> Path:
    """A prepared dataset of `clips` decaying noise bursts in 4 folder classes, under `folder`."""
    rng = np.random.default_rng(0)
    for i in range(clips):
        burst = rng.uniform(-1, 1, (20000, 2)) * np.exp(-np.arange(20000) / 3000)[:, None]
        path = folder / "src" / f"class{i % 4}" / f"hit{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, burst.astype(np.float32), 44100, subtype="PCM_16")
    out = folder / "prepared"
    prepare([folder / "src"], out, classes="folders", progress=False, workers=1)
    return out


def _time(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and 90th percentile milliseconds of `repeats` calls, after one untimed warm-up call."""
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "median_ms": round(float(np.median(times)), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="a prepared dataset (default: a synthetic one)")
    parser.add_argument("--batch", type=int, default=16, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=200, help="timed batches per measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker's view
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else _synthetic(Path(tmp))
        plain = PreparedDataset(root, split="all", progress=False)
        augmented = PreparedDataset(root, split="all", augment=Augment(), progress=False)
        rng = np.random.default_rng(0)

        def pick() -> list[int]:
            return rng.choice(len(plain), size=min(args.batch, len(plain)), replace=False).tolist()

        results = {
            "dataset": str(root) if args.dir else "synthetic (256 clips)",
            "clips": len(plain),
            "clip_shape": [plain.channels, plain.length],
            "batch": args.batch,
            "cache_bytes": plain.cache_path.stat().st_size,
            "batch_method": _time(lambda: plain.batch(pick()), args.repeats),
            "getitem_stack": _time(lambda: torch.stack([plain[i][0] for i in pick()]), args.repeats),
            "getitem_stack_augmented": _time(
                lambda: torch.stack([augmented[i][0] for i in pick()]), args.repeats
            ),
            "target_ms": 5.0,
        }
        results["meets_target"] = results["batch_method"]["median_ms"] < 5.0
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
