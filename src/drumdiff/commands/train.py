"""`drumdiff train`, `export` and `average`: argparse only; Lightning is imported inside the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from drumdiff.config import preset_names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train`, `export` and `average` sub-commands."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a model on a folder made by `drumdiff data prepare`",
        description="Train a diffusion model on a prepared folder (PyTorch Lightning). More than one class "
        "gives a class-conditional model. Unset flags take the defaults, or on --resume the run's own settings.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="folder made by `drumdiff data prepare`")
    p.add_argument(
        "--run-dir",
        required=True,
        type=Path,
        help="folder for checkpoints, previews, logs, config.json (required)",
    )
    p.add_argument(
        "--preset",
        help=f"model layout: {', '.join(preset_names())} (default small), or a .json file",
    )
    p.add_argument("--max-steps", type=int, help="optimizer steps to train in total (default 20000)")
    p.add_argument("--batch-size", type=int, help="clips per device per micro-batch (default 8)")
    p.add_argument("--accumulate", type=int, help="micro-batches per optimizer step (default 1)")
    p.add_argument(
        "--precision", choices=("32", "16-mixed", "bf16-mixed"), help="numeric precision (default 32)"
    )
    p.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in backward: far less memory, up to twice the step time (default off)",
    )
    p.add_argument("--lr", type=float, help="peak AdamW learning rate after warm-up (default 1e-4)")
    p.add_argument(
        "--decay-steps",
        type=int,
        help="take the lr linearly down to 0 over the last N steps before --max-steps; with --resume and a "
        "new --max-steps it finishes a copy of a run (default 0: no decay)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random gain, polarity, stereo swap/width and onset shift per example (default off)",
    )
    p.add_argument(
        "--class-balance",
        type=float,
        help="draw clips with weight (clips of their class)^-A: 0 each clip once an epoch (default), "
        "1 every class equally often, 0.5 between",
    )
    p.add_argument(
        "--loss-weight",
        choices=("v", "min-snr"),
        help="weighting over noise levels: v (plain v-MSE, default) or min-snr (Min-SNR-gamma)",
    )
    p.add_argument("--min-snr-gamma", type=float, help="gamma of --loss-weight min-snr (default 5)")
    p.add_argument(
        "--log-snr-shift",
        type=float,
        help="shift of log(alpha/sigma) of the training noise levels; negative trains at more noise (default 0)",
    )
    p.add_argument(
        "--quiet-weight",
        type=float,
        help="weight of the error where the clean clip is quiet (up to 10 log10(W) dB under its peak), "
        "against hiss in the tails; 1: plain MSE (default 1)",
    )
    p.add_argument(
        "--crop-length",
        type=int,
        help="train the first --crop-steps steps on the first N samples of each clip (the attack; default 0: off)",
    )
    p.add_argument("--crop-steps", type=int, help="steps trained on --crop-length crops (default 0)")
    p.add_argument("--seed", type=int, help="seed of weights, data order and noise, 0 to 2^64-1 (default 0)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        help="steps between checkpoints to RUN/checkpoints/last.ckpt (default: ~5 min)",
    )
    p.add_argument(
        "--preview-every",
        type=int,
        help="steps between preview clips in RUN/previews (default: ~15 min; -1 never)",
    )
    p.add_argument(
        "--devices", type=int, help="devices (GPUs, or CPU processes with ddp) per node (default 1)"
    )
    p.add_argument("--strategy", choices=("auto", "ddp"), help="distribution strategy (default auto)")
    p.add_argument("--num-nodes", type=int, help="machines taking part (default 1); see docs/training.md")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from RUN/checkpoints/last.ckpt (default: a new run)",
    )
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune from a .safetensors model file (default: fresh weights)",
    )
    p.add_argument(
        "--logger",
        choices=("tensorboard", "wandb", "csv", "none"),
        help="where metrics and previews go (default tensorboard, offline, in RUN/logs)",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="e.g. 2GB: probe real steps and choose batch size, accumulation, precision and checkpointing "
        "(default: no probing, the flags as given)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete RUN's checkpoints, previews and logs first (default: refuse a run folder with checkpoints)",
    )
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "export",
        help="write a run's EMA weights as a .safetensors model file",
        description="Export the EMA weights of a run (or a .ckpt) with config, class names and provenance. "
        "An existing OUT is replaced only with --force; weights that hold NaN or Inf are refused.",
    )
    e.add_argument("source", metavar="RUN_OR_CKPT", type=Path, help="a run folder or a training checkpoint")
    e.add_argument("out", metavar="OUT.safetensors", type=Path, help="model file to write")
    add_model_file_flags(e)
    e.set_defaults(func=run_export)

    a = subparsers.add_parser(
        "average",
        help="average the weights of model files (runs fine-tuned from one model) into a new model file",
        description="Write the weighted mean of two or more model files of one layout and class list, for "
        "example the ends of runs fine-tuned from one model ('model soups'). Every input is checked before "
        "anything is written; an existing OUT is replaced only with --force.",
    )
    a.add_argument(
        "sources", metavar="MODEL", type=Path, nargs="+", help="model files to average (two or more)"
    )
    a.add_argument(
        "--out",
        "-o",
        metavar="OUT.safetensors",
        type=Path,
        required=True,
        help="model file to write (required)",
    )
    a.add_argument(
        "--weights",
        type=_weight_list,
        default=None,
        help="comma-separated weight of each MODEL, normalised to sum to 1 (default: equal)",
    )
    add_model_file_flags(a)
    a.set_defaults(func=run_average)


def add_model_file_flags(parser: argparse.ArgumentParser) -> None:
    """--fp16 and --force, for the commands that write a model file (export, average, convert)."""
    parser.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="store weights as fp16, half the size (default float32)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUT if it exists (default: refuse to overwrite)"
    )


def _weight_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


OVERRIDE_FLAGS = (
    "preset",
    "max_steps",
    "batch_size",
    "accumulate",
    "precision",
    "grad_checkpointing",
    "lr",
    "decay_steps",
    "augment",
    "class_balance",
    "loss_weight",
    "min_snr_gamma",
    "log_snr_shift",
    "quiet_weight",
    "crop_length",
    "crop_steps",
    "seed",
    "checkpoint_every",
    "preview_every",
    "devices",
    "strategy",
    "num_nodes",
    "logger",
)


def run_train(args: argparse.Namespace) -> int:
    """Handler of `drumdiff train`."""
    from drumdiff.training.memory import use_expandable_segments
    from drumdiff.training.run import TrainRequest, train

    if args.memory_budget:
        use_expandable_segments()  # before CUDA starts

    request = TrainRequest(
        data_dir=args.data_dir,
        run_dir=args.run_dir,
        overrides={name: getattr(args, name) for name in OVERRIDE_FLAGS},
        resume=args.resume,
        overwrite=args.overwrite,
        init_from=args.init_from,
        memory_budget=args.memory_budget,
    )
    train(request)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of `drumdiff export`."""
    from drumdiff.training.checkpoint import export_model

    out = export_model(args.source, args.out, fp16=args.fp16, force=args.force)
    print(out)
    return 0


def run_average(args: argparse.Namespace) -> int:
    """Handler of `drumdiff average`."""
    from drumdiff.training.checkpoint import average_models

    out = average_models(args.sources, args.out, weights=args.weights, fp16=args.fp16, force=args.force)
    print(out)
    return 0
