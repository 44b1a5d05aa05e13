"""SFZ kits: every `<region>` with a `sample=` as a clip, played at its key with its tuning and volume.

An `.sfz` file is text: headers (`<control>`, `<global>`, `<master>`, `<group>`, `<region>`) each followed by
`opcode=value` pairs; a region inherits the opcodes of the `<group>`, `<master>` and `<global>` above it, and
`<control>`'s `default_path` is put before its sample path. `#define $NAME value` and `#include "file"` are
expanded first (includes relative to the top file's folder, as sfizz does). Velocity layers (`lovel`/`hivel`)
and round robins (`seq_position`, `lorand`/`hirand`) are separate regions and so separate clips.

An `#include` loop or a missing include file raises `KitFileError` (one rejection for the file); a region whose
sample is missing or is a built-in generator (`*sine`) is one rejection, and the other regions go on.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from drumdiff.data.regions import KitFileError, KitRegion, Region, licence_notes

_MAX_INCLUDE_DEPTH = 32
_HEADERS = {"control", "global", "master", "group", "region"}  # others (<curve>, <effect>, ...) are skipped
# A header, or an opcode name at the start of a line or after white space or a header.
_TOKEN = re.compile(r"<(\w+)>|(?:(?<=\s)|(?<=>)|^)([A-Za-z0-9_]+)=")
_NOTE = re.compile(r"([a-gA-G])([#b]?)(-?\d+)")
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def read_sfz(path: str | os.PathLike, *, included: set[str] | None = None) -> list[KitRegion]:
    """Every region of an SFZ file as a clip (or a reason it gives none). Raises `KitFileError`.

    `included` collects the real paths of the files it `#include`s (they are parts, not kits of their own).
    """
    path = Path(path)
    text = _expand(
        path, root=path.parent, stack=(), defines={}, included=included if included is not None else set()
    )
    kit = path.stem
    stated = licence_notes(path.parent)
    regions: list[KitRegion] = []
    seen: dict[str, int] = {}
    for index, (opcodes, control) in enumerate(_regions(text)):
        region = _region(opcodes, control, sfz=path, kit=kit, index=index, stated=stated)
        count = seen[region.member] = seen.get(region.member, 0) + 1
        if count > 1:  # two regions alike in key, velocity and sample (a layer): keep both, apart
            region = replace(region, member=f"{region.member} ({count})")
        regions.append(region)
    return regions


def _expand(
    path: Path, *, root: Path, stack: tuple[str, ...], defines: dict[str, str], included: set[str]
) -> str:
    """The text of `path` without comments, `#define`s substituted and `#include`s expanded in place."""
    real = os.path.realpath(path)
    if real in stack:
        names = " -> ".join(Path(p).name for p in (*stack, real))
        raise KitFileError(f"#include loop: {names}")
    if len(stack) >= _MAX_INCLUDE_DEPTH:
        raise KitFileError(f"#include nested deeper than {_MAX_INCLUDE_DEPTH} files at {path.name}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KitFileError(f"#include file {path} not found" if stack else f"{path} not found") from None
    except OSError as error:
        raise KitFileError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    lines: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)//.*", "", line)
        stripped = line.strip()
        if stripped.startswith("#define"):
            parts = stripped.split(None, 2)
            if len(parts) == 3 and parts[1].startswith("$"):
                defines[parts[1]] = parts[2].strip()
            continue
        line = _substitute(line, defines)
        if line.strip().startswith("#include"):
            match = re.search(r'"([^"]+)"', line)
            if not match:
                raise KitFileError(f"{path.name}: #include without a quoted file name: {line.strip()!r}")
            target = root / match.group(1).replace("\\", "/")
            included.add(os.path.realpath(target))
            lines.append(_expand(target, root=root, stack=(*stack, real), defines=defines, included=included))
            continue
        lines.append(line)
    return "\n".join(lines)


def _substitute(line: str, defines: dict[str, str]) -> str:
    for name in sorted(defines, key=len, reverse=True):  # $KICK_2 before $KICK
        line = line.replace(name, defines[name])
    return line


def _regions(text: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(the region's opcodes with everything it inherits, the `<control>` opcodes) of each `<region>`."""
    levels: dict[str, dict[str, str]] = {h: {} for h in _HEADERS}
    order = ("global", "master", "group", "region")
    target: dict[str, str] | None = None
    found: list[tuple[dict[str, str], dict[str, str]]] = []
    current: str | None = None

    def close() -> None:
        if current == "region":
            merged: dict[str, str] = {}
            for level in order:
                merged.update(levels[level])
            found.append((merged, dict(levels["control"])))

    for line in text.splitlines():
        matches = list(_TOKEN.finditer(line))
        for k, match in enumerate(matches):
            end = matches[k + 1].start() if k + 1 < len(matches) else len(line)
            if match.group(1) is not None:
                close()
                current = match.group(1).lower()
                if current in _HEADERS:
                    for level in order[order.index(current) :] if current != "control" else ("control",):
                        levels[level] = {}  # a new header clears itself and the levels below it
                    target = levels[current]
                else:
                    target = None
            elif target is not None:
                target[match.group(2).lower()] = line[match.end() : end].strip()
    close()
    return found


def _note(value: str | None, default: int, control: dict[str, str]) -> int:
    """A key opcode: a MIDI number or a note name (c4 = 60, c#4, db4), shifted by `note_offset`/`octave_offset`."""
    if value is None or value == "":
        return default
    value = value.strip()
    if re.fullmatch(r"-?\d+", value):
        key = int(value)
    else:
        match = _NOTE.fullmatch(value)
        if not match:
            return default
        letter, accidental, octave = match.groups()
        key = (int(octave) + 1) * 12 + _SEMITONE[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental]
    key += _number(control.get("note_offset"), 0) + 12 * _number(control.get("octave_offset"), 0)
    return int(min(127, max(0, key)))


def _number(value: str | None, default: float) -> Any:
    try:
        number = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    return int(number) if float(number).is_integer() else number


def _region(
    op: dict[str, str], control: dict[str, str], *, sfz: Path, kit: str, index: int, stated: str
) -> KitRegion:
    sample = (op.get("sample") or "").replace("\\", "/")
    if "key" in op:
        key = _note(op["key"], 60, control)
        lokey = hikey = center = key
    else:
        lokey, hikey = _note(op.get("lokey"), 0, control), _note(op.get("hikey"), 127, control)
        center = _note(op.get("pitch_keycenter"), 60, control)
    if "key" in op and "pitch_keycenter" in op:
        center = _note(op["pitch_keycenter"], center, control)
    note = center if lokey <= center <= hikey else lokey
    lovel, hivel = int(_number(op.get("lovel"), 1)), int(_number(op.get("hivel"), 127))
    names = tuple(n for n in (op.get("region_label", ""), Path(sample).stem) if n)
    labels = tuple(op[k] for k in ("group_label", "master_label", "global_label") if op.get(k))
    provenance: dict[str, Any] = {
        "kit": kit,
        "sfz_region": index,
        "sample": sample,
        "note": note,
        "keys": [lokey, hikey],
        "velocity": [lovel, hivel],
        "stated_license": stated,
    }
    for name in ("seq_length", "seq_position", "lorand", "hirand", "trigger"):
        if name in op:
            provenance[name] = op[name]
    member = f"{note:03d} v{lovel:03d}-{hivel:03d} {sample or f'region {index}'}"
    common: dict[str, Any] = {"member": member, "kit": kit, "note": note, "names": names, "labels": labels,
                              "provenance": provenance}  # fmt: skip
    if not sample:
        return KitRegion(**common, reject="bad region", detail=f"region {index} has no sample= opcode")
    if sample.startswith("*"):
        return KitRegion(
            **common, reject="bad region", detail=f"{sample} is a built-in generator, not a sample"
        )
    file = sfz.parent / (control.get("default_path", "").replace("\\", "/") + sample)
    if not file.is_file():
        return KitRegion(**common, reject="missing", detail=f"region {index}: sample {file} not found")
    keytrack = _number(op.get("pitch_keytrack"), 100)
    pitch = (
        (note - center) * keytrack / 100 + _number(op.get("transpose"), 0) + _number(op.get("tune"), 0) / 100
    )
    gain_db = _number(op.get("volume"), 0)
    amplitude = _number(op.get("amplitude"), 100)
    if amplitude != 100:
        gain_db += 20 * math.log10(max(amplitude, 1e-3) / 100)
    end = op.get("end")
    region = Region(
        file=os.path.abspath(file),
        kind="file",
        first=max(0, int(_number(op.get("offset"), 0))),
        last=int(_number(end, 0)) + 1 if end not in (None, "") and _number(end, -1) >= 0 else -1,
        pitch_semitones=round(pitch, 4),
        gain_db=round(gain_db, 3),
    )
    return KitRegion(**common, region=region)
