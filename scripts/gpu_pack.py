"""Pack what a lent GPU's 9-minute training run needs into one folder of at most 64 MiB.

    python scripts/gpu_pack.py /work/data/corpus --init MODEL.safetensors --out .gpu

FOLDER gets the train and val clips as 16-bit FLAC with the trailing silence cut (`clips/`, with the
manifest as it is: unpacking pads every clip back to its length), the init model as fp16 (`init.safetensors`),
the wheels of soundfile, soxr and cffi for CPython 3.12 on manylinux x86-64 (`wheels/`, which the device
lacks) and `pack.json`. FOLDER must be inside this checkout and ignored by git (`.gpu/` is), so that the device
call can `carry` it. Refused, with nothing left behind, when FOLDER plus the checkout's travelling files
(tracked and untracked-not-ignored) exceed 64 MiB. The same inputs give the same bytes.
Then: `run(command="bash scripts/gpu_train.sh .gpu 8", carry=[".gpu"], timeout_s=590)` (docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bundle  # noqa: E402  (beside this script)

from drumdiff.errors import DrumdiffError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, metavar="DATA", help="a prepared dataset (manifest.json + FLAC)")
    parser.add_argument(
        "--out", type=Path, required=True, help="the pack folder, inside the checkout, ignored"
    )
    parser.add_argument(
        "--init",
        type=Path,
        metavar="MODEL",
        help="model file to start from (fp32 is converted to fp16); default: none, train fresh there",
    )
    wheels = parser.add_mutually_exclusive_group()
    wheels.add_argument(
        "--wheels", type=Path, metavar="DIR", help="take the wheels from DIR (default: pip download them)"
    )
    wheels.add_argument(
        "--no-wheels", action="store_true", help="pack no wheels (a device that has soundfile and soxr)"
    )
    parser.add_argument(
        "--limit-mib",
        type=float,
        default=gpu_bundle.TRAVEL_LIMIT / gpu_bundle.MIB,
        help="what one device call may send, MiB (default 64)",
    )
    parser.add_argument("--workers", type=int, help="threads encoding clips (default: CPUs, at most 8)")
    args = parser.parse_args(argv)
    try:
        summary = gpu_bundle.pack(
            args.data,
            args.out,
            init=args.init,
            wheels=args.wheels,
            download=not args.no_wheels,
            limit_bytes=int(args.limit_mib * gpu_bundle.MIB),
            workers=args.workers,
        )
    except DrumdiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
