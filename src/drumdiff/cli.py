"""The `drumdiff` command: a thin argparse layer over the library.

Each sub-command lives in `drumdiff.commands.<module>` with `register(subparsers)`; those modules import
nothing heavy at module level, so `drumdiff --help` and `drumdiff generate` start fast (no Lightning).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from drumdiff import __version__
from drumdiff.errors import DrumdiffError

# Order is the order in `drumdiff --help`.
COMMAND_MODULES = ("generate", "kit", "info", "data", "train", "convert", "evaluate", "app")


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
    except BrokenPipeError:  # `drumdiff info ... | head`: the reader has gone, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as error:  # the machine's trouble (a full disk, a folder taken away), not a bug: one line
        print(f"drumdiff {args.command}: error: {_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # handlers raise it with what was kept and how to go on
        print(f"drumdiff {args.command}: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130


def _os_error(error: OSError) -> str:
    """An OSError in words: the file it concerns and the cause, "the disk is full" for ENOSPC."""
    reason = (
        "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else error.strerror or str(error)
    )
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{reason}"


if __name__ == "__main__":
    sys.exit(main())
