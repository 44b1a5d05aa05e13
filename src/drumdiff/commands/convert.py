"""`drumdiff convert ORIGINAL.ckpt OUT.safetensors`: import a tiny-audio-diffusion checkpoint.

torch and the converter are imported inside the handler so that `drumdiff --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drumdiff.commands.train import add_model_file_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `convert` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert an original tiny-audio-diffusion checkpoint into a drumdiff model file",
        description=(
            "Convert a tiny-audio-diffusion checkpoint (a Lightning .ckpt, or a state_dict of "
            "audio-diffusion-pytorch's DiffusionModel or UNetV0) into a drumdiff .safetensors model file. "
            "The file is read without running any code from it; anything but tensors and plain containers "
            "is refused. An existing OUT is replaced only with --force."
        ),
    )
    parser.add_argument(
        "source", type=Path, metavar="ORIGINAL.ckpt", help="checkpoint or state_dict to convert"
    )
    parser.add_argument("out", type=Path, metavar="OUT.safetensors", help="model file to write")
    parser.add_argument(
        "--name",
        default=None,
        help="class name stored in the model file (default: the checkpoint's file name without its suffix)",
    )
    parser.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take the EMA weights of a Lightning checkpoint (default); --no-ema takes the training weights",
    )
    add_model_file_flags(parser)
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Handler of `drumdiff convert`."""
    from drumdiff.config import load_preset
    from drumdiff.convert import convert_checkpoint, describe_layout

    result = convert_checkpoint(
        args.source, args.out, name=args.name, ema=args.ema, fp16=args.fp16, force=args.force
    )
    if args.ema and result.weights == "online":
        print(
            f"note: {args.source.name} holds no EMA weights; converted its training weights", file=sys.stderr
        )
    seed = result.config == load_preset("seed")
    layout = "the seed layout" if seed else f"layout: {describe_layout(result.config)}"
    size_mb = result.path.stat().st_size / 1e6
    print(
        f"wrote {result.path} ({size_mb:.1f} MB, {layout}, {result.weights} weights, "
        f"class name {result.class_name!r})"
    )
    print(f"try it: drumdiff generate --model {result.path}")
    return 0
