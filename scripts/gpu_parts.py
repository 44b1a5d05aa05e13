"""Files that come back from a lent GPU: at most 16 MiB each, so a model file travels in parts.

    split_files(FILES, OUT)      there: each file over the part size cut into NAME.part0, NAME.part1, ...;
                                 OUT/parts.json lists every file's and part's size and sha256
    join_file(FILES_AT, OUT)     here: the parts joined, every sha256 checked, the model file loaded

`scripts/gpu_train.sh` runs `python scripts/gpu_parts.py OUT FILE...` (split) on the device;
`scripts/gpu_join.py` is the command line of join.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path, file_digest, read_json, write_json

MIB = 1024**2
RETURN_LIMIT = 16 * MIB  # each file that comes back from $OUT
PART_BYTES = 15 * MIB  # parts stay a whole MiB under RETURN_LIMIT
PARTS_FORMAT, PARTS_VERSION = "drumdiff-parts", 1
PARTS_RECORD = "parts.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_files(files: Iterable[Path], out_dir: Path, *, part_bytes: int = PART_BYTES) -> Path:
    """Copy `files` into `out_dir`, each one over `part_bytes` as NAME.part0, NAME.part1, ...; writes
    `out_dir/parts.json` (every file's and part's size and sha256). Returns the parts.json path."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be at least 1, got {part_bytes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for file in files:
        file = Path(file)
        size = file.stat().st_size
        parts = []
        with open(file, "rb") as handle:
            if size <= part_bytes:
                data = handle.read()
                names = [(file.name, data)]
            else:
                names = []
                for k in range((size + part_bytes - 1) // part_bytes):
                    names.append((f"{file.name}.part{k}", handle.read(part_bytes)))
            for name, data in names:
                with atomic_path(out_dir / name) as tmp:
                    tmp.write_bytes(data)
                parts.append({"name": name, "bytes": len(data), "sha256": _sha256(data)})
        entries[file.name] = {"bytes": size, "sha256": file_digest(file), "parts": parts}
    return write_json(
        out_dir / PARTS_RECORD, {"format": PARTS_FORMAT, "version": PARTS_VERSION, "files": entries}
    )


def join_file(files_at: Path, out: Path, *, name: str | None = None, check_model: bool = True) -> Path:
    """Join the parts of `name` (default: the one .safetensors file in `files_at/parts.json`) into `out`,
    atomically, after checking every part's and the whole file's sha256 and, with `check_model`, that it
    loads as a drumdiff model file. DrumdiffError names what is missing or damaged; `out` is then untouched."""
    from drumdiff.modelfile import load_model_file

    files_at, out = Path(files_at), Path(out)
    files = read_parts(files_at)
    if name is None:
        models = sorted(n for n in files if n.endswith(".safetensors"))
        if len(models) != 1:
            raise DrumdiffError(
                f"{files_at / PARTS_RECORD} lists {len(models)} .safetensors files ({', '.join(models) or 'none'}); "
                "name one with --name"
            )
        name = models[0]
    if name not in files:
        raise DrumdiffError(f"{files_at / PARTS_RECORD} lists no file {name!r} ({', '.join(sorted(files))})")
    entry = files[name]
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=out.suffix) as tmp:
        with open(tmp, "wb") as handle:
            for part in entry["parts"]:
                path = files_at / part["name"]
                if not path.is_file():
                    raise DrumdiffError(f"part {path} is missing")
                data = path.read_bytes()
                if len(data) != part["bytes"] or _sha256(data) != part["sha256"]:
                    raise DrumdiffError(
                        f"part {path} is damaged: {len(data)} bytes, sha256 {_sha256(data)[:12]}..., "
                        f"expected {part['bytes']} bytes, {part['sha256'][:12]}..."
                    )
                handle.write(data)
                digest.update(data)
        if digest.hexdigest() != entry["sha256"]:
            raise DrumdiffError(
                f"{name} joined from its parts does not match its sha256; the parts are damaged"
            )
        if check_model:
            load_model_file(tmp)  # a ModelFileError naming what is wrong
    return out


def read_parts(folder: Path) -> dict[str, Any]:
    """The files listed in `folder/parts.json`, checked for format."""
    path = Path(folder) / PARTS_RECORD
    return read_json(path, kind="parts list", format=PARTS_FORMAT, version=PARTS_VERSION)["files"]


def main(argv: list[str] | None = None) -> int:
    """`python scripts/gpu_parts.py OUT FILE...`: split on the device (scripts/gpu_train.sh)."""
    parser = argparse.ArgumentParser(
        description="copy files into OUT, cutting those over --part-mib into parts"
    )
    parser.add_argument("out", type=Path, help="folder the files go to ($OUT)")
    parser.add_argument("files", type=Path, nargs="+", help="files to copy")
    parser.add_argument(
        "--part-mib", type=float, default=PART_BYTES / MIB, help="largest part in MiB (default 15)"
    )
    args = parser.parse_args(argv)
    split_files(args.files, args.out, part_bytes=int(args.part_mib * MIB))
    for name, entry in read_parts(args.out).items():
        print(f"{name}: {entry['bytes']} bytes in {len(entry['parts'])} part(s), sha256 {entry['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
