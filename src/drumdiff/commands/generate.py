"""`drumdiff generate | vary | interpolate | inpaint | models`: write fresh one-shots to disk.

Heavy modules (torch, the pipeline) are imported inside the handlers so that `--help` is instant; nothing
here imports Lightning or Gradio.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

SAMPLER_NAMES = ("ddim", "dpmpp-2m", "ddpm")  # kept in step with drumdiff.sampling.SAMPLERS (tested);
# listed here so that `--help` does not import torch
SCHEDULE_NAMES = ("log-snr", "linear")
FORMATS = ("wav24", "wav16", "float32", "flac")


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="generate fresh one-shots from a model", description="Generate fresh one-shots."
    )
    gen.add_argument("class_name", nargs="?", metavar="CLASS", help="class to generate (conditional models)")
    _add_sampling_flags(gen, default_steps=20)
    gen.set_defaults(func=run_generate)

    vary = subparsers.add_parser("vary", help="variations of your own sample (SDEdit)")
    vary.add_argument("input", type=Path, metavar="INPUT", help="audio file to vary")
    vary.add_argument(
        "--strength",
        type=float,
        default=0.5,
        help="how far to move away from the input, in (0, 1]; 1.0 ignores it (default 0.5)",
    )
    vary.add_argument("--class", dest="class_name", default=None, help="class (conditional models)")
    _add_sampling_flags(vary, default_steps=20)
    vary.set_defaults(func=run_vary)

    inter = subparsers.add_parser("interpolate", help="blend between two sounds (DDIM inversion + slerp)")
    inter.add_argument("input_a", type=Path, metavar="A", help="first audio file")
    inter.add_argument("input_b", type=Path, metavar="B", help="second audio file")
    inter.add_argument("--frames", type=int, default=5, help="clips to write, endpoints included (default 5)")
    inter.add_argument("--class", dest="class_name", default=None, help="class (conditional models)")
    _add_sampling_flags(inter, default_steps=100, seeded=False)
    inter.set_defaults(func=run_interpolate)

    inpaint = subparsers.add_parser("inpaint", help="keep the attack, regenerate the tail")
    inpaint.add_argument("input", type=Path, metavar="INPUT", help="audio file whose start to keep")
    inpaint.add_argument(
        "--keep-ms", type=float, default=40.0, help="milliseconds kept from the start (default 40)"
    )
    inpaint.add_argument("--class", dest="class_name", default=None, help="class (conditional models)")
    _add_sampling_flags(inpaint, default_steps=20)
    inpaint.set_defaults(func=run_inpaint)

    models = subparsers.add_parser("models", help="list shipped and user models")
    models.set_defaults(func=run_models)


def _add_sampling_flags(parser: argparse.ArgumentParser, *, default_steps: int, seeded: bool = True) -> None:
    """Flags shared by the sampling commands. `seeded=False` (interpolate: deterministic DDIM, no noise is
    drawn) leaves out --sampler, --schedule and --seed."""
    parser.add_argument(
        "--model", default=None, help="model name or .safetensors path (default: shipped model)"
    )
    parser.add_argument("-n", type=int, default=None, help="number of clips (default 4 for generate, 1 else)")
    parser.add_argument(
        "--steps", type=int, default=default_steps, help=f"sampler steps (default {default_steps})"
    )
    if seeded:
        parser.add_argument(
            "--sampler", default="dpmpp-2m", help=f"one of {', '.join(SAMPLER_NAMES)} (default dpmpp-2m)"
        )
        parser.add_argument(
            "--schedule",
            default="log-snr",
            help=f"time schedule: {', '.join(SCHEDULE_NAMES)} (linear = the original's; default log-snr)",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed of the first clip; clip i uses SEED + i (default: random)",
        )
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="classifier-free guidance scale (conditional models)"
    )
    parser.add_argument("--out", type=Path, default=Path("drumdiff-out"), help="output folder")
    parser.add_argument(
        "--format", choices=FORMATS, default="wav24", help="audio file format (default wav24)"
    )
    parser.add_argument(
        "--sample-rate", type=int, default=None, help="resample the output, e.g. 48000 (default: the model's)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per network batch (default 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument(
        "--plot",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also write one PNG of waveforms and spectrograms",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar"
    )


# ---------------------------------------------------------------------------------------------- handlers


class _Session:
    """What every handler does around the sampling itself: checks, model, progress, writing, summary."""

    def __init__(self, args: argparse.Namespace, operation: str) -> None:
        import torch

        from drumdiff.errors import DrumdiffError
        from drumdiff.outputs import prepare_folder
        from drumdiff.pipeline import SamplingOptions

        self.args = args
        self.operation = operation
        # checked here, before anything is written or loaded; interpolate has no --sampler/--schedule
        self.options = SamplingOptions.of(
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
            **{name: getattr(args, name) for name in ("sampler", "schedule") if hasattr(args, name)},
        )
        if args.n is not None and args.n < 1:
            raise DrumdiffError(f"-n must be at least 1, got {args.n}")
        if args.sample_rate is not None and args.sample_rate < 1000:
            raise DrumdiffError(f"--sample-rate must be a rate in Hz, got {args.sample_rate}")
        if args.threads is not None:
            if args.threads < 1:
                raise DrumdiffError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        self.seed: int | None = None  # interpolate draws no noise
        if hasattr(args, "seed"):
            self.seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        self.folder = prepare_folder(args.out)
        from drumdiff.files import file_digest
        from drumdiff.pipeline import load_model

        self.model = load_model(args.model, device=args.device)
        self.model_sha256 = file_digest(self.model.path)
        self.started = time.perf_counter()
        self.bar: Any = None

    def read_input(self, path: Path):
        """Read an input file and convert it to the model's format, warning once about what was done."""
        from drumdiff import audio as audio_io
        from drumdiff.pipeline import conform_audio

        audio, rate = audio_io.read(path)
        clip, done = conform_audio(audio, rate, self.model.config)
        if done:
            print(f"warning: {path}: {', '.join(done)} to fit the model", file=sys.stderr)
        return clip

    def progress(self, total: int):
        if not self.args.progress:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=self.operation, unit="step", file=sys.stderr, leave=False)
        return self.bar.update

    def finish(self, clips, *, stems: list[str], extra: list[dict[str, Any]]) -> int:
        import torch

        from drumdiff import __version__
        from drumdiff import audio as audio_io
        from drumdiff.outputs import write_clips

        if self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.started
        rate = self.model.sample_rate
        if self.args.sample_rate and self.args.sample_rate != rate:
            clips = torch.stack([audio_io.resample(c, rate, self.args.sample_rate) for c in clips])
            rate = self.args.sample_rate
        base = {
            "operation": self.operation,
            "model": {"path": str(self.model.path), "sha256": self.model_sha256},
            "class_name": self.args.class_name,
            "sampler": getattr(self.args, "sampler", "ddim"),  # interpolate inverts and decodes with DDIM
            "schedule": self.options.schedule,
            "steps": self.options.steps,
            "guidance": self.options.guidance,
            "n": len(clips),
            "batch_size": self.options.batch_size,
            "sample_rate": rate,
            "format": self.args.format,
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "drumdiff_version": __version__,
            "torch_version": torch.__version__,
        }
        timing = {
            "timing": {"seconds_per_clip": round(seconds / len(clips), 4), "unix_time": round(time.time(), 3)}
        }
        if self.seed is not None:
            base["request_seed"] = self.seed
        records = [{**base, **e, **timing} for e in extra]
        paths = write_clips(
            self.folder, clips, stems=stems, records=records, sample_rate=rate, format=self.args.format
        )
        if self.args.plot:
            from drumdiff.plots import save_clips_png

            png = self.folder / f"{paths[0].stem}.png"
            save_clips_png(png, clips, sample_rate=rate, titles=[p.stem for p in paths])
            print(png)
        for path in paths:
            print(path)
        seed = "" if self.seed is None else f", seed {self.seed}"
        print(
            f"{self.operation}: {len(clips)} clip(s) in {seconds:.1f} s "
            f"({seconds / len(clips):.2f} s per clip{seed}) -> {self.folder}",
            file=sys.stderr,
        )
        return 0

    def sampling_kwargs(self, n: int) -> dict[str, Any]:
        """The keyword arguments every seeded sampling call of the pipeline shares."""
        return dict(n=n, seed=self.seed, class_name=self.args.class_name, options=self.options)

    def seeded(self, stem: str, n: int, **fields: Any) -> dict[str, list]:
        """File stems `STEM_seedS_III` and per-clip record fields for n clips seeded SEED + i."""
        seeds = [self.seed + i for i in range(n)]
        return {
            "stems": [f"{stem}_seed{s}_{i:03d}" for i, s in enumerate(seeds)],
            "extra": [{"index": i, "seed": s, **fields} for i, s in enumerate(seeds)],
        }

    def input_label(self, path: Path) -> str:
        from drumdiff.outputs import safe_label

        return safe_label(path.stem)

    def label(self) -> str:
        from drumdiff.outputs import safe_label

        if self.args.class_name:
            return safe_label(self.args.class_name)
        names = self.model.class_names
        return safe_label(names[0]) if len(names) == 1 else "drum"


def _batches(n: int, size: int) -> int:
    return -(-n // size)


def run_generate(args: argparse.Namespace) -> int:
    session = _Session(args, "generate")
    n = args.n or 4
    tick = session.progress(_batches(n, args.batch_size) * args.steps)
    clips = session.model.generate(**session.sampling_kwargs(n), progress=tick)
    return session.finish(clips, **session.seeded(session.label(), n))


def run_vary(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError
    from drumdiff.pipeline import vary_steps

    if not 0 < args.strength <= 1:
        raise DrumdiffError(f"--strength must be in (0, 1], got {args.strength}")
    session = _Session(args, "vary")
    clip = session.read_input(args.input)
    n = args.n or 1
    tick = session.progress(_batches(n, args.batch_size) * vary_steps(args.steps, args.strength))
    clips = session.model.vary(clip, strength=args.strength, **session.sampling_kwargs(n), progress=tick)
    stem = f"{session.input_label(args.input)}_vary{args.strength:g}"
    return session.finish(clips, **session.seeded(stem, n, input=str(args.input), strength=args.strength))


def run_inpaint(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError

    if not (math.isfinite(args.keep_ms) and args.keep_ms > 0):
        raise DrumdiffError(f"--keep-ms must be a positive number of milliseconds, got {args.keep_ms}")
    session = _Session(args, "inpaint")
    clip = session.read_input(args.input)
    keep = round(args.keep_ms * session.model.sample_rate / 1000)
    if keep >= session.model.length:
        raise DrumdiffError(f"--keep-ms {args.keep_ms} keeps the whole clip; nothing would be regenerated")
    n = args.n or 1
    tick = session.progress(_batches(n, args.batch_size) * args.steps)
    clips = session.model.inpaint(clip, keep=(0, keep), **session.sampling_kwargs(n), progress=tick)
    stem = f"{session.input_label(args.input)}_inpaint"
    return session.finish(clips, **session.seeded(stem, n, input=str(args.input), keep_ms=args.keep_ms))


def run_interpolate(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError

    if args.frames < 2:
        raise DrumdiffError(f"--frames must be at least 2, got {args.frames}")
    session = _Session(args, "interpolate")
    a, b = session.read_input(args.input_a), session.read_input(args.input_b)
    tick = session.progress((args.steps - 1) + _batches(args.frames, args.batch_size) * args.steps)
    clips = session.model.interpolate(
        a, b, frames=args.frames, class_name=args.class_name, options=session.options, progress=tick
    )
    pair = f"{session.input_label(args.input_a)}_to_{session.input_label(args.input_b)}"
    stems = [f"{pair}_{i:03d}" for i in range(args.frames)]
    extra = [
        {"index": i, "weight": i / (args.frames - 1), "inputs": [str(args.input_a), str(args.input_b)]}
        for i in range(args.frames)
    ]
    return session.finish(clips, stems=stems, extra=extra)


def run_models(args: argparse.Namespace) -> int:
    from drumdiff.pipeline import list_models, user_model_dir

    entries = list_models()
    print("Models are looked up as: 1. a path, 2. a shipped model name, 3. a user model name")
    print(f"user models folder: {user_model_dir()}")
    if not entries:
        print("no shipped or user models installed")
    for entry in entries:
        print(f"{entry.origin:8s} {entry.name:24s} {entry.path}")
        if entry.problem:
            print(f"warning: {entry.path}: {entry.problem}", file=sys.stderr)
    return 0
