"""`drumdiff generate | vary | interpolate | inpaint | models`: write fresh one-shots to disk.

Heavy modules (torch, the pipeline) are imported inside the handlers so that `--help` is instant; nothing
here imports Lightning or Gradio, and `drumdiff models` does not import torch. What every handler does
around the sampling (checks, model, folder, batches written as they finish) is `commands.session.Session`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from drumdiff.commands.session import (
    MAX_CLIPS,
    MAX_FRAMES,
    MAX_RATE,
    MAX_STEPS,
    MIN_RATE,
    PLOT_CLIPS,
    Session,
)
from drumdiff.config import DEFAULT_EDIT_STEPS, DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_STEPS

SAMPLER_NAMES = ("ddim", "dpmpp-2m", "ddpm")  # kept in step with drumdiff.sampling.SAMPLERS (tested);
# listed here so that `--help` does not import torch
SCHEDULE_NAMES = ("log-snr", "linear")
FORMATS = ("wav24", "wav16", "float32", "flac")


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate",
        help="generate fresh one-shots from a model",
        description="Generate fresh one-shots from pure noise. Clip i uses seed SEED + i; every clip gets a "
        "sidecar JSON record and a line in OUT/generation.jsonl; files are never overwritten.",
    )
    gen.add_argument(
        "class_name",
        nargs="?",
        metavar="CLASS",
        help="class to generate, matched ignoring case and a plural s (conditional models; default: none, "
        "the unconditional null class)",
    )
    add_sampling_flags(gen, default_steps=DEFAULT_STEPS, default_n=4)
    add_originality_flags(gen)
    gen.set_defaults(func=run_generate)

    vary = subparsers.add_parser(
        "vary",
        help="variations of your own sample (SDEdit)",
        description="Noise INPUT to diffusion time --strength and denoise it again (SDEdit): variations that "
        "keep more of the input the lower the strength. Any rate, channel count or length is converted.",
    )
    vary.add_argument("input", type=Path, metavar="INPUT", help="audio file to vary")
    vary.add_argument(
        "--strength",
        type=float,
        default=0.5,
        help="how far to move away from the input, in (0, 1]; 1.0 ignores it (default 0.5)",
    )
    _add_class_flag(vary)
    add_sampling_flags(vary, default_steps=DEFAULT_EDIT_STEPS, default_n=1)
    vary.set_defaults(func=run_vary)

    inter = subparsers.add_parser(
        "interpolate",
        help="blend between two sounds (DDIM inversion + slerp)",
        description="Invert A and B to noise with deterministic DDIM, interpolate the noises on the sphere and "
        "decode --frames clips, A and B included. No noise is drawn, so there is no --seed.",
    )
    inter.add_argument("input_a", type=Path, metavar="A", help="first audio file")
    inter.add_argument("input_b", type=Path, metavar="B", help="second audio file")
    inter.add_argument(
        "--frames",
        type=int,
        default=5,
        help=f"clips to write, endpoints included, 2 to {MAX_FRAMES} (default 5)",
    )
    _add_class_flag(inter)
    add_sampling_flags(inter, default_steps=100, default_n=None)
    inter.set_defaults(func=run_interpolate)

    inpaint = subparsers.add_parser(
        "inpaint",
        help="keep the attack, regenerate the tail",
        description="Keep the first --keep-ms of INPUT bit-exact and regenerate everything after it.",
    )
    inpaint.add_argument("input", type=Path, metavar="INPUT", help="audio file whose start to keep")
    inpaint.add_argument(
        "--keep-ms",
        type=float,
        default=40.0,
        help="milliseconds kept from the start, at least one sample (default 40)",
    )
    _add_class_flag(inpaint)
    add_sampling_flags(inpaint, default_steps=DEFAULT_EDIT_STEPS, default_n=1)
    inpaint.set_defaults(func=run_inpaint)

    models = subparsers.add_parser(
        "models",
        help="list shipped and user models",
        description="List the shipped models and the models in the user folder ($DRUMDIFF_HOME/models), "
        "with a warning for each file that cannot be used.",
    )
    models.set_defaults(func=run_models)


def _add_class_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--class",
        dest="class_name",
        default=None,
        help="class, matched ignoring case and a plural s (conditional models; default: none)",
    )


def add_originality_flags(parser: argparse.ArgumentParser) -> None:
    """--index and --max-similarity (generate, kit): nearest training clips, and re-drawing near-copies."""
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        metavar="FILE",
        help="originality index of the model's training clips (default: <model stem>.index.safetensors beside "
        "the model file, if there is one); each clip's record then names its nearest training clip",
    )
    parser.add_argument(
        "--max-similarity",
        type=float,
        default=None,
        metavar="X",
        help="re-draw, with a new recorded seed, any clip whose nearest training clip is more similar than X, "
        "in (0, 1]; 0.99 catches near-copies (docs/evaluation.md, Originality); needs an index (default off)",
    )


def add_gate_flag(parser: argparse.ArgumentParser) -> None:
    """--gate/--no-gate: the tail gate of drumdiff.postprocess on what a command writes (generate, kit, ...)."""
    parser.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fade each clip out where its decay meets the noise floor (drumdiff.postprocess; can shorten "
        "a sound that rings to the end; default off: the raw model output)",
    )


def add_sampling_flags(
    parser: argparse.ArgumentParser, *, default_steps: int, default_n: int | None, clip_outputs: bool = True
) -> None:
    """Flags shared by the sampling commands (and `kit`). `default_n=None` (interpolate: --frames counts the
    clips, and deterministic DDIM draws no noise) leaves out -n, --sampler, --schedule and --seed;
    `clip_outputs=False` (kit: its own folder layout and seed) leaves out -n, --seed, --out, --format,
    --sample-rate and --plot."""
    parser.add_argument(
        "--model", default=None, help="model name or .safetensors path (default: the shipped model)"
    )
    seeded = default_n is not None
    if seeded and clip_outputs:
        parser.add_argument(
            "-n", type=int, default=default_n, help=f"number of clips, 1 to {MAX_CLIPS} (default {default_n})"
        )
    parser.add_argument(
        "--steps",
        type=int,
        default=default_steps,
        help=f"sampler steps: network evaluations per batch (a guided step costs two), 1 to {MAX_STEPS} "
        f"(default {default_steps})",
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
    if seeded and clip_outputs:
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed of the first clip, 0 to 2^64-1; clip i uses SEED + i (default: random, recorded)",
        )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help=f"classifier-free guidance scale, needs a class (conditional models; 1: plain conditional; "
        f"default {DEFAULT_GUIDANCE:g} with a class, applied at diffusion times {DEFAULT_GUIDANCE_INTERVAL[0]:g} < t "
        f"<= {DEFAULT_GUIDANCE_INTERVAL[1]:g}, 1 without)",
    )
    if clip_outputs:
        parser.add_argument(
            "--out", type=Path, default=Path("drumdiff-out"), help="output folder (default drumdiff-out)"
        )
        parser.add_argument(
            "--format", choices=FORMATS, default="wav24", help="audio file format (default wav24)"
        )
        parser.add_argument(
            "--sample-rate",
            type=int,
            default=None,
            help=f"resample the output, {MIN_RATE} to {MAX_RATE} Hz, e.g. 48000 (default: the model's)",
        )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="clips per network batch (default 8)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: best available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch, at most the CPU count (default: torch's choice)",
    )
    if clip_outputs:
        add_gate_flag(parser)
        parser.add_argument(
            "--plot",
            action=argparse.BooleanOptionalAction,
            default=False,
            help=f"also write one PNG of the waveforms and spectrograms of the first {PLOT_CLIPS} clips "
            "(default off)",
        )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress on stderr: a bar on a terminal, plain lines otherwise (default on)",
    )


# ---------------------------------------------------------------------------------------------- handlers


def _count(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError

    if not 1 <= args.n <= MAX_CLIPS:
        raise DrumdiffError(
            f"-n must be from 1 to {MAX_CLIPS} clips, got {args.n}"
            + ("; split a larger job into several requests" if args.n > MAX_CLIPS else "")
        )
    return args.n


def run_generate(args: argparse.Namespace) -> int:
    session = Session(args, "generate", n=_count(args))

    def redraw(seed: int):  # one clip from another seed, sampled like the rest (--max-similarity)
        clips = session.model.generate(n=1, seed=seed, class_name=session.class_name, options=session.options)
        return clips[0]  # (C, T)

    return session.run(
        lambda first, count, tick: session.model.generate(**session.sampling_kwargs(first, count, tick)),
        steps_per_batch=args.steps,
        redraw=redraw,
        **session.seeded(session.label()),
    )


def run_vary(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError
    from drumdiff.pipeline import vary_steps

    if not 0 < args.strength <= 1:
        raise DrumdiffError(f"--strength must be in (0, 1], got {args.strength}")
    session = Session(args, "vary", n=_count(args))
    clip = session.read_input(args.input)
    stem = f"{session.input_label(args.input)}_vary{args.strength:g}"
    return session.run(
        lambda first, count, tick: session.model.vary(
            clip, strength=args.strength, **session.sampling_kwargs(first, count, tick)
        ),
        steps_per_batch=vary_steps(args.steps, args.strength),
        **session.seeded(stem, input=str(args.input), strength=args.strength),
    )


def run_inpaint(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError

    if not (math.isfinite(args.keep_ms) and args.keep_ms > 0):
        raise DrumdiffError(f"--keep-ms must be a positive number of milliseconds, got {args.keep_ms}")
    session = Session(args, "inpaint", n=_count(args))
    clip = session.read_input(args.input)
    rate, length = session.model.sample_rate, session.model.length
    samples = args.keep_ms * rate / 1000
    keep = max(1, round(samples)) if samples < length else length  # at least the first sample
    if keep >= length:
        raise DrumdiffError(
            f"--keep-ms {args.keep_ms:g} keeps the whole clip ({length / rate * 1000:.1f} ms); "
            "nothing would be regenerated"
        )
    stem = f"{session.input_label(args.input)}_inpaint"
    return session.run(
        lambda first, count, tick: session.model.inpaint(
            clip, keep=(0, keep), **session.sampling_kwargs(first, count, tick)
        ),
        steps_per_batch=args.steps,
        **session.seeded(stem, input=str(args.input), keep_ms=args.keep_ms, keep_samples=keep),
    )


def run_interpolate(args: argparse.Namespace) -> int:
    from drumdiff.errors import DrumdiffError

    if not 2 <= args.frames <= MAX_FRAMES:
        raise DrumdiffError(f"--frames must be from 2 to {MAX_FRAMES}, got {args.frames}")
    session = Session(args, "interpolate", n=args.frames)
    a, b = session.read_input(args.input_a), session.read_input(args.input_b)
    decode_batches = -(-args.frames // args.batch_size)

    def make_batch(first: int, count: int, tick: Any):
        return session.model.interpolate(
            a, b, frames=count, class_name=session.class_name, options=session.options, progress=tick
        )

    pair = f"{session.input_label(args.input_a)}_to_{session.input_label(args.input_b)}"
    weights = [i / (args.frames - 1) for i in range(args.frames)]
    return session.run(
        make_batch,  # one call: the inversion is shared by every frame
        stems=[f"{pair}_{i:03d}" for i in range(args.frames)],
        extra=[
            {"index": i, "weight": w, "inputs": [str(args.input_a), str(args.input_b)]}
            for i, w in enumerate(weights)
        ],
        steps_per_batch=(args.steps - 1) + decode_batches * args.steps,
        batch_size=args.frames,
    )


def run_models(args: argparse.Namespace) -> int:
    from drumdiff.modelfile import list_models, user_model_dir  # torch-free: listing is instant

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
