"""Finding the inputs: every audio file under the SRC folders, with its class, group and provenance.

A file's class comes from the class mode: one class (`none`), the first folder level under SRC (`folders`), or
the instrument that a Hydrogen kit lists it under, matched against a name table (`hydrogen`). A file that
cannot get a class carries the reason (`Source.reject`) instead, before anything is decoded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from drumdiff import audio as audio_io
from drumdiff.data.hydrogen import KitSample, read_hydrogen_kit
from drumdiff.errors import DrumdiffError

ClassMode = Literal["none", "folders", "hydrogen"]
SINGLE_CLASS = "drums"  # the one class of --classes none

# --classes hydrogen: instrument name (lower case) containing any of these -> class; first match wins; "*" = any.
# No catch-all: a name that says nothing about the sound ("Sample: beats_01-10.flac", "f#4 -", "17", "FX") is
# rejected as "no class" rather than guessed. Snare = snare-head hits (rimshots too) and claps; strokes on the
# rim alone (rim click, side stick, "Stick") are percussion, like clave and woodblock; all cymbals are percussion.
DEFAULT_HYDROGEN_MAPPING: dict[str, list[str]] = {
    "kick": ["kick", "bd", "bass drum", "bassdrum", "kik"],
    "snare": ["snare", "sd", "rimshot", "clap"],
    "hihat": ["hat", "hh", "hi-hat"],
    "percussion": [
        "tom", "drum", "conga", "bongo", "djembe", "dununba", "kenkeni", "sangban", "cajon", "timbale",
        "cymbal", "crash", "ride", "splash", "china", "bell", "triangle",
        "stick", "rim", "click", "clave", "block", "snap", "shaker", "maraca", "cabasa", "tambourine",
        "agogo", "guiro", "whistle", "glass", "perc",
    ],
}  # fmt: skip


def load_mapping(path: str | os.PathLike | None) -> dict[str, list[str]]:
    """Read a `--mapping` JSON file: {"class": ["name part", ...], ...}, first match wins, "*" matches all."""
    if path is None:
        return dict(DEFAULT_HYDROGEN_MAPPING)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DrumdiffError(f"cannot read mapping file {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise DrumdiffError(f"mapping file {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or not data:
        raise DrumdiffError(f'mapping file {path}: expected an object like {{"kick": ["kick", "bd"]}}')
    mapping: dict[str, list[str]] = {}
    for name, patterns in data.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise DrumdiffError(f"mapping file {path}: class name {name!r} must be letters, digits, - or _")
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise DrumdiffError(f"mapping file {path}: class {name!r} needs a list of strings")
        mapping[name] = [p.lower() for p in patterns]
    return mapping


def class_for_instrument(name: str, mapping: dict[str, list[str]]) -> str | None:
    """The first class whose patterns occur in `name` (case-insensitive); None when nothing matches."""
    lowered = name.lower()
    for class_name, patterns in mapping.items():
        if any(p == "*" or p in lowered for p in patterns):
            return class_name
    return None


@dataclass(frozen=True)
class Source:
    """One input file, its class and group, or the reason it was left out before decoding."""

    path: str  # absolute path (the key for incremental runs)
    display: str  # path relative to the parent of its SRC, with "/" (stable across machines)
    group: str
    class_name: str | None = None
    reject: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # more about `reject`, when there is more to say


def find_sources(
    sources: Sequence[str | os.PathLike],
    *,
    classes: ClassMode = "none",
    mapping: dict[str, list[str]] | None = None,
    skip: str | os.PathLike | None = None,
) -> list[Source]:
    """Every audio file under `sources` with its class, group and provenance (or a reason to leave it out)."""
    if classes not in ("none", "folders", "hydrogen"):
        raise DrumdiffError(f"--classes must be none, folders or hydrogen, got {classes!r}")
    mapping = mapping or DEFAULT_HYDROGEN_MAPPING
    skip_real = Path(os.path.realpath(skip)) if skip is not None else None
    for src in sources:
        if not Path(src).exists():
            raise DrumdiffError(f"source {src} does not exist")
    tops = [Path(os.path.abspath(src)) for src in sources]
    bases = _display_bases([top.parent if top.is_file() else top for top in tops])
    found: dict[str, Source] = {}
    for top in tops:
        files = [top] if top.is_file() else list(_walk(top, skip=skip_real))
        if top.is_file():  # a single file: as if its folder were SRC
            top = top.parent
        base = bases[top]
        kit_files: dict[str, KitSample] = {}
        broken_kits: dict[str, str] = {}  # folder -> why its drumkit.xml could not be read
        if classes == "hydrogen":
            for xml in (f for f in files if f.name == "drumkit.xml"):
                try:
                    samples = read_hydrogen_kit(xml)
                except DrumdiffError as error:  # one broken kit must not stop the others
                    broken_kits[str(xml.parent)] = str(error)
                    continue
                for sample in samples:
                    kit_files.setdefault(os.path.abspath(sample.path), sample)
        for file in files:
            key = os.path.abspath(file)
            if key in found or not (_is_audio_name(file.name) or key in kit_files):
                continue
            display = Path(os.path.relpath(key, base)).as_posix()
            rel_parent = Path(os.path.relpath(file.parent, top)).as_posix()
            group = Path(os.path.relpath(file.parent, base)).as_posix()  # the folder, as `display` names it
            if classes == "none":
                found[key] = Source(key, display, group, SINGLE_CLASS)
            elif classes == "folders":
                if rel_parent == ".":
                    found[key] = Source(key, display, group, reject="not in a class folder")
                else:
                    found[key] = Source(key, display, group, rel_parent.split("/")[0])
            elif key in kit_files:
                found[key] = _kit_source(kit_files.pop(key), key, display, mapping)
            else:
                why = next((e for d, e in broken_kits.items() if key.startswith(d + os.sep)), "")
                found[key] = Source(key, display, group, reject="not in a Hydrogen kit", detail=why)
        for key, sample in kit_files.items():  # listed by a kit, not found under SRC: elsewhere, or missing
            display = Path(os.path.relpath(key, base)).as_posix()
            if os.path.isfile(key):
                found.setdefault(key, _kit_source(sample, key, display, mapping))
            else:
                found.setdefault(key, Source(key, display, sample.kit, reject="missing"))
    return sorted(found.values(), key=lambda s: s.display)


def count_ignored(sources: Sequence[str | os.PathLike], *, skip: Path) -> int:
    """Files under the source folders that have no audio extension (and are not a `drumkit.xml`)."""
    skip_real = Path(os.path.realpath(skip))
    return sum(
        1
        for src in sources
        if Path(src).is_dir()
        for f in _walk(Path(os.path.abspath(src)), skip=skip_real)
        if not _is_audio_name(f.name) and f.name != "drumkit.xml"
    )


def _is_audio_name(name: str) -> bool:
    return name.lower().endswith(audio_io.AUDIO_EXTENSIONS)


def _walk(root: Path, *, skip: Path | None) -> Iterable[Path]:
    """Files under `root` in sorted order: follows folder links once, skips hidden entries and `skip`."""
    seen: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen or (skip is not None and real == str(skip)):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(folder) / name


def _display_bases(tops: list[Path]) -> dict[Path, Path]:
    """The folder that each SRC's `display` paths (and folder groups) are relative to.

    Normally the parent of SRC, so names start with the SRC folder's name ("Samples/kick.wav"). When two
    different SRC folders share a name (~/A/Samples, ~/B/Samples), all names start from their common parent
    instead ("A/Samples/kick.wav"), so that every input keeps a distinct name and output file.
    """
    distinct = set(tops)
    if len({top.name for top in distinct}) == len(distinct):
        return {top: top.parent for top in distinct}
    try:
        common = Path(os.path.commonpath([top.parent for top in distinct]))
    except ValueError:  # different drives (Windows): absolute paths are the only shared base
        common = Path(distinct.pop().anchor)
    return {top: common for top in tops}


def _kit_source(sample: KitSample, key: str, display: str, mapping: dict[str, list[str]]) -> Source:
    provenance = {
        "kit": sample.kit,
        "instrument": sample.instrument,
        "author": sample.author,
        "license": sample.license or "unknown (not stated in drumkit.xml)",
    }
    class_name = class_for_instrument(sample.instrument, mapping)
    if class_name is None:
        detail = f"instrument {sample.instrument!r} names no class of the mapping"
        return Source(key, display, sample.kit, reject="no class", provenance=provenance, detail=detail)
    return Source(key, display, sample.kit, class_name, provenance=provenance)
