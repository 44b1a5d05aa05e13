"""The `drumdiff` command: a thin argparse layer over the library.

Each sub-command lives in `drumdiff.commands.<module>` with `register(subparsers)`; those modules import
nothing heavy at module level, so `drumdiff --help` and `drumdiff generate` start fast (no Lightning).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from drumdiff import __version__
from drumdiff.errors import DrumdiffError

# Order is the order in `drumdiff --help`.
COMMAND_MODULES = ("generate", "data", "train", "convert", "evaluate", "app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drumdiff",
        description="Generate, vary and train raw-waveform diffusion models of drum one-shots.",
    )
    parser.add_argument("--version", action="version", version=f"drumdiff {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"drumdiff.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DrumdiffError as error:
        print(f"drumdiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drumdiff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
