"""`drumdiff info FILE...`: what an audio file is, the provenance drumdiff embedded in it, and its sidecar JSON.

Torch-free: only `drumdiff.tags` (standard library) and soundfile are imported, inside the handler.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `info` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="show an audio file's format and the provenance drumdiff embedded in it",
        description=(
            "Print each file's format, sample rate, channels and duration, the provenance embedded in it "
            "(RIFF INFO, BWF bext and iXML in a WAV; Vorbis comments in a FLAC: model sha256, class, seed, "
            "sampler, steps, guidance, ...) and its sidecar JSON (same name, .json) when there is one."
        ),
    )
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE", help="audio file(s) to describe")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file, one per line (default: text for people)",
    )
    parser.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Handler of `drumdiff info`: every file is read before anything is printed."""
    described = [describe(path) for path in args.files]
    for i, item in enumerate(described):
        if args.json:
            print(json.dumps(item, ensure_ascii=False))
        else:
            print(("\n" if i else "") + format_text(item))
    return 0


def describe(path: Path) -> dict[str, Any]:
    """Everything `info` shows about one file, JSON-ready; `AudioError` naming it when it is no audio file."""
    import soundfile as sf

    from drumdiff.errors import AudioError
    from drumdiff.tags import read_tags

    tags = read_tags(path)
    try:
        info = sf.info(os.fsencode(path) if os.name == "posix" else str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({str(error).strip()})") from error
    item: dict[str, Any] = {
        "file": str(path),
        "format": str(info.format),
        "subtype": str(info.subtype),
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": info.frames / info.samplerate if info.samplerate else 0.0,
        "tags": tags.pop("tags"),
        "provenance": tags.pop("provenance"),
        "embedded": tags,  # every chunk or comment as read (INFO, bext, iXML; Vorbis comments)
        "sidecar": None,
    }
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and sidecar != path:
        item["sidecar_file"] = str(sidecar)
        try:
            item["sidecar"] = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            item["sidecar_error"] = f"cannot read {sidecar}: {error}"
    return item


def format_text(item: dict[str, Any]) -> str:
    """The text form of `describe`'s result: audio facts, embedded tags and provenance, the sidecar."""
    lines = [
        item["file"],
        f"  audio: {item['format']} {item['subtype']}, {item['sample_rate']} Hz, {item['channels']} "
        f"channel{'s' if item['channels'] != 1 else ''}, {item['duration']:.3f} s ({item['frames']} frames)",
    ]
    tags = {key: value for key, value in item["tags"].items() if key != "provenance"}
    lines += [f"  {key}: {value}" for key, value in tags.items()]
    if item["provenance"]:
        lines.append("  embedded provenance:")
        lines += [f"    {key}: {value}" for key, value in _flat(item["provenance"])]
    else:
        lines.append("  embedded provenance: none")
    if item.get("sidecar_error"):
        lines.append(f"  sidecar: {item['sidecar_error']}")
    elif item["sidecar"] is not None:
        lines.append(f"  sidecar {item['sidecar_file']}:")
        lines += [f"    {key}: {value}" for key, value in _flat(item["sidecar"])]
    return "\n".join(lines)


def _flat(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """`{"model": {"sha256": x}}` -> `[("model.sha256", "x")]`; lists and other values as JSON."""
    if not isinstance(data, dict):
        return [(prefix or "value", json.dumps(data, ensure_ascii=False))]
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out += _flat(value, name)
        else:
            out.append((name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
    return out
