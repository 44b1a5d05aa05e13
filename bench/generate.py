"""The shipped model's speed with its defaults, side by side with the original in one run.

    python -m bench.generate [--model NAME|PATH] [--threads 2] [--repeats 3] [--quick] [--out FILE.json]

Original: audio-diffusion-pytorch 0.1.3 `UNetV0` (seed layout, random weights: speed does not depend on them)
with its default `VSampler`, 50 steps, one clip at batch 1. Ours: `drumdiff.load_model(MODEL)` (default: the
shipped model) with its default `SamplingOptions`, one clip at batch 1 and the per-clip time of a batch of 8.
The whole command: `python -m drumdiff generate kick -n 1` as a fresh process, against `python -c "import
torch"` (the floor every torch program pays). Medians over `--repeats`, interleaved. Ratios: `clip_speedup`
is the original's seconds per clip over ours (target >= 40); `command_over_import_torch_s` is the command's
seconds minus importing torch's (target <= 1). Exits with status 1 when the original cannot be imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_name, emit  # noqa: E402
from bench.original_lib import SEED_LAYOUT, import_original  # noqa: E402
from drumdiff.config import load_preset  # noqa: E402
from drumdiff.pipeline import SamplingOptions, load_model  # noqa: E402

ORIGINAL_STEPS = 50


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _command_seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model name or path (default: the shipped model)")
    parser.add_argument("--class-name", default=None, help="class to generate (default: the model's first)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement")
    parser.add_argument(
        "--quick", action="store_true", help="time the original over 10 of its 50 steps and scale"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        adp = import_original()
    except ImportError as error:
        print(
            f"bench.generate: cannot import the original audio-diffusion-pytorch 0.1.3 ({error})",
            file=sys.stderr,
        )
        return 1

    model = load_model(args.model, device="cpu")
    options = SamplingOptions()
    class_name = args.class_name or (model.class_names[0] if model.config.conditional else None)
    torch.manual_seed(0)
    original = adp.UNetV0(**SEED_LAYOUT).eval()
    sampler = adp.VSampler(net=original)
    original_steps = 10 if args.quick else ORIGINAL_STEPS
    length = load_preset("seed").length  # the original's one clip length
    noise = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(1))

    def ours(n: int) -> None:
        model.generate(n=n, seed=0, class_name=class_name, options=SamplingOptions.of(options, batch_size=n))

    with torch.no_grad():
        ours(1)  # warm-up: allocator and oneDNN kernels
        sampler(noise, num_steps=2)
        times: dict[str, list[float]] = {"original": [], "ours_batch_1": [], "ours_batch_8": []}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every side alike
            scale = ORIGINAL_STEPS / original_steps
            times["original"].append(_seconds(lambda: sampler(noise, num_steps=original_steps)) * scale)
            times["ours_batch_1"].append(_seconds(lambda: ours(1)))
            times["ours_batch_8"].append(_seconds(lambda: ours(8)) / 8)
    per_clip = {name: statistics.median(values) for name, values in times.items()}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    commands: dict[str, list[float]] = {"import_torch": [], "generate": []}
    with tempfile.TemporaryDirectory() as out:
        generate = [sys.executable, "-m", "drumdiff", "generate", "-n", "1", "--no-progress", "--out", out]
        if class_name:
            generate.insert(4, class_name)
        if args.model:
            generate += ["--model", str(args.model)]
        if args.threads:
            generate += ["--threads", str(args.threads)]
        for _ in range(args.repeats):
            commands["import_torch"].append(_command_seconds([sys.executable, "-c", "import torch"], env))
            commands["generate"].append(_command_seconds(generate, env))
    command = {name: statistics.median(values) for name, values in commands.items()}

    result = {
        "device": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": str(model.path),
        "options": {
            **{f: getattr(options, f) for f in ("sampler", "steps", "schedule", "guidance_interval")},
            "guidance": model.guidance_for(class_name, options),  # the scale the default resolves to
        },
        "original_steps": ORIGINAL_STEPS,
        "original_steps_timed": original_steps,
        "seconds_per_clip": {k: round(v, 4) for k, v in per_clip.items()},
        "clip_speedup": {
            "batch_1": round(per_clip["original"] / per_clip["ours_batch_1"], 2),
            "batch_8": round(per_clip["original"] / per_clip["ours_batch_8"], 2),
        },
        "real_time_factor_batch_1": round(per_clip["ours_batch_1"] / (model.length / model.sample_rate), 3),
        "command_seconds": {k: round(v, 3) for k, v in command.items()},
        "command_over_import_torch_s": round(command["generate"] - command["import_torch"], 3),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
