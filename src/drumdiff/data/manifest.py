"""The prepared folder's contract: its file names, the manifest format, the rejection reasons, the split rule.

`prepare` writes these files and everything else in the package reads them; this module imports nothing of
the package, so writer and readers share one definition.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from drumdiff.errors import DrumdiffError
from drumdiff.files import read_json

MANIFEST_FORMAT = "drumdiff-dataset"
MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
REJECTED = "rejected.json"
VAL_FRACTION = 0.1

Split = Literal["train", "val", "test"]
# "test": every input of a `--test-source` (a whole source held out, for a cross-source test); training reads
# only "train", validation only "val".
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Every reason that can appear in rejected.json, with what it means (docs/data.md repeats this list).
REJECT_REASONS: dict[str, str] = {
    "missing": "the file vanished or is a broken link, or a kit (Hydrogen, SFZ) lists a file that is not there",
    "not a file": "not a regular file (a device, a socket, ...)",
    "unreadable": "the file cannot be opened, or the folder cannot be listed (permissions, I/O error)",
    "empty": "0 bytes, or a header with no audio frames",
    "not audio": "libsndfile cannot decode it (text, image, random bytes, corrupt header)",
    "non-finite samples": "NaN or Inf samples (float files)",
    "silent": "peak below -60 dBFS after DC removal",
    "too short": "fewer than 256 samples from the first to the last sample above -60 dBFS",
    "duplicate": "the same decoded, fitted audio as an accepted file (`duplicate_of` names it)",
    "near duplicate": "nearly the same audio as an accepted file of another split (`duplicate_of` names it)",
    "not in a class folder": "--classes folders: the file sits directly in SRC, not in a class folder",
    "not in a Hydrogen kit": "--classes hydrogen/kits: no drumkit.xml lists the file (in a kit's folder)",
    "no class": "--classes hydrogen/kits: the instrument, note or file name matches no class of the mapping",
    "bad kit file": "a SoundFont or SFZ file that cannot be read (truncated or lying RIFF, #include loop, ...)",
    "bad region": "a SoundFont zone or SFZ region that points outside its sample data, or at no sample",
    "not a drum preset": "a SoundFont preset outside bank 128 (or outside --soundfont-presets)",
    "failed": "an unexpected error while decoding or conditioning (the detail says which); retried next run",
}


def split_for_group(group: str) -> Split:
    """The one train/val rule: "val" when the SHA-1 of the group name falls in the last 10% of its range."""
    digest = hashlib.sha1(group.encode("utf-8", "surrogateescape")).digest()  # any file name hashes
    position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "val" if position >= 1.0 - VAL_FRACTION else "train"


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check `root/manifest.json`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DrumdiffError(
            f"{root} is not a prepared dataset: {path} not found (run `drumdiff data prepare`)"
        )
    return read_json(path, kind="drumdiff dataset manifest", format=MANIFEST_FORMAT, version=MANIFEST_VERSION)


def read_previous(path: Path) -> dict[str, Any]:
    """A JSON object an earlier run wrote to `path`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
