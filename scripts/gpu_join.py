"""Join a model file that came back from a lent GPU in parts, check it, and write it atomically.

    python scripts/gpu_join.py FILES_AT --out runs/gpu/drums.safetensors

FILES_AT is the folder the device tool put $OUT's files in (`files_at` of its answer): `parts.json` lists
each file's parts with their sizes and sha256. Every part and the joined file are checked, and the result
must load as a drumdiff model file; otherwise nothing is written. Then training goes on here:
`drumdiff train DATA --run-dir NEWRUN --init-from runs/gpu/drums.safetensors ...` (docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_parts  # noqa: E402  (beside this script)

from drumdiff.errors import DrumdiffError  # noqa: E402
from drumdiff.modelfile import check_new_file, read_metadata  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files_at", type=Path, metavar="FILES_AT", help="folder holding parts.json and parts")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    parser.add_argument("--name", help="which file of parts.json to join (default: its one .safetensors)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    args = parser.parse_args(argv)
    try:
        check_new_file(args.out, force=args.force)
        out = gpu_parts.join_file(args.files_at, args.out, name=args.name)
        meta = read_metadata(out)
    except DrumdiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    provenance = meta["provenance"]
    print(
        f"{out}: {out.stat().st_size} bytes, {meta['dtype']}, classes {', '.join(meta['class_names']) or '-'}, "
        f"step {provenance.get('step', '?')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
