"""Sampling speed, side by side on one device: the original library against drumdiff.

    python -m bench.sampling [--quick] [--threads N] [--device cpu|cuda] [--out FILE.json]

The original is audio-diffusion-pytorch 0.1.3 `UNetV0` (seed layout) with its `VSampler`; ours is `UNet1d`
with each preset and `sample_ddim` on `linear_schedule` (the same 50-step sampler). The seed network gets the
original's weights through `drumdiff.convert`, so the JSON also reports how far its numbers are from the
original's (they should agree to float32 rounding). Timings: median seconds per network evaluation (fp32
eager, no grad), and seconds per 50-step clip, at batch 1 and 4; ratios are original / ours.
Exits with status 1 when the original library cannot be imported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_name, emit  # noqa: E402
from bench.original_lib import SEED_LAYOUT, import_original  # noqa: E402
from drumdiff.config import load_preset  # noqa: E402
from drumdiff.convert import map_original_unet_state_dict  # noqa: E402
from drumdiff.diffusion import make_denoiser  # noqa: E402
from drumdiff.nn.unet1d import UNet1d  # noqa: E402
from drumdiff.sampling import linear_schedule, sample_ddim  # noqa: E402

PRESETS = ("seed", "small", "tiny")
CLIP_STEPS = 50


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 repeats, clips timed over 10 steps and scaled"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed network evaluations per model and batch"
    )
    parser.add_argument("--clip-steps", type=int, default=CLIP_STEPS, help="steps actually timed per clip")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="batch sizes to time")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="our presets to time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--profile", action="store_true", help="only profile one seed evaluation (original, ours) at batch 1"
    )
    args = parser.parse_args(argv)
    if args.profile and "seed" not in args.presets:
        parser.error("--profile compares the original with the seed preset: keep seed in --presets")
    if args.quick:
        args.repeats, args.clip_steps = 3, 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    try:
        adp = import_original()
    except ImportError as error:
        print(
            f"bench.sampling: cannot import the original audio-diffusion-pytorch 0.1.3 ({error}); install it "
            "with `pip install --no-deps audio-diffusion-pytorch==0.1.3 a-unet==0.0.16 einops`",
            file=sys.stderr,
        )
        return 1

    torch.manual_seed(0)
    original = adp.UNetV0(**SEED_LAYOUT).eval().to(device)
    sampler = adp.VSampler(net=original)
    models: dict[str, torch.nn.Module] = {}
    for name in args.presets:
        models[name] = UNet1d(load_preset(name)).eval()
    if "seed" in models:
        models["seed"].load_state_dict(map_original_unet_state_dict(original.state_dict()))
    for net in models.values():
        net.to(device)
    length = load_preset("seed").length

    def run_original(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return original(x, time=t)

    evaluators = {"original": run_original} | {
        name: (lambda x, t, net=net: net(x, t)) for name, net in models.items()
    }

    def clip(name: str, noise: torch.Tensor, steps: int) -> torch.Tensor:
        if name == "original":
            return sampler(noise, num_steps=steps)
        return sample_ddim(make_denoiser(models[name]), noise, linear_schedule(steps))

    result: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "length": length,
        "repeats": args.repeats,
        "clip_steps_timed": args.clip_steps,
        "seconds_per_eval": {},
        "seconds_per_clip_50_steps": {},
    }
    generator = torch.Generator().manual_seed(1)
    if args.profile:
        return _profile(evaluators, length=length, device=device)
    with torch.no_grad():
        # Same numbers: the converted seed network against the original, one evaluation and one 10-step clip.
        if "seed" in models:
            x = torch.randn(1, 2, length, generator=generator).to(device)
            t = torch.tensor([0.7], device=device)
            theirs, ours = run_original(x, t), models["seed"](x, t)
            result["seed_eval_max_rel_diff"] = float((ours - theirs).abs().max() / theirs.abs().max())
            theirs, ours = clip("original", x, 10), clip("seed", x, 10)
            result["seed_clip10_max_abs_diff"] = float((ours - theirs).abs().max())

        for batch in args.batch_sizes:
            x = torch.randn(batch, 2, length, generator=generator).to(device)
            t = torch.rand(batch, generator=generator).to(device)
            times: dict[str, list[float]] = {name: [] for name in evaluators}
            for fn in evaluators.values():
                fn(x, t)  # warm-up
            for _ in range(args.repeats):  # interleaved, so that load changes hit every model alike
                for name, fn in evaluators.items():
                    times[name].append(_seconds(lambda fn=fn, x=x, t=t: fn(x, t), device))
            per_eval = {name: statistics.median(values) for name, values in times.items()}
            per_clip = {
                name: _seconds(lambda name=name, x=x: clip(name, x, args.clip_steps), device)
                * CLIP_STEPS
                / args.clip_steps
                for name in evaluators
            }
            result["seconds_per_eval"][f"batch_{batch}"] = per_eval
            result["seconds_per_clip_50_steps"][f"batch_{batch}"] = per_clip
            print(f"batch {batch}: per eval {per_eval}, per clip {per_clip}", file=sys.stderr, flush=True)

    result["speedup_vs_original"] = {
        kind: {
            batch: {name: round(values["original"] / values[name], 2) for name in models}
            for batch, values in result[kind].items()
        }
        for kind in ("seconds_per_eval", "seconds_per_clip_50_steps")
    }
    clip_seconds = length / load_preset("seed").sample_rate
    result["clip_seconds_of_audio"] = round(clip_seconds, 3)
    emit(result, args.out)
    return 0


@torch.no_grad()
def _profile(evaluators: dict, *, length: int, device: torch.device) -> int:
    """Print the operator breakdown (self time) of one batch-1 evaluation of the original and of `seed`."""
    from torch.profiler import ProfilerActivity, profile

    x, t = torch.randn(1, 2, length, device=device), torch.rand(1, device=device)
    for name in ("original", "seed"):
        fn = evaluators[name]
        for _ in range(2):
            fn(x, t)  # warm-up: allocator and oneDNN kernels
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(x, t)
        print(f"== {name}: one evaluation, batch 1, {length} samples")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    return 0


if __name__ == "__main__":
    sys.exit(main())
