"""Finding the inputs: every audio file (or clip inside a kit file) under the SRC folders, with its class,
group, split and provenance.

A file's class comes from the class mode: one class (`none`), the first folder level under SRC (`folders`),
the instrument that a Hydrogen kit lists it under, matched against a name table (`hydrogen`), or, with
`kits`, that and every SoundFont and SFZ kit's notes (their names, else the General MIDI name of the note,
through the same table), and the file name of any other one-shot. An input that cannot get a class carries
the reason (`Source.reject`) instead, before anything is decoded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from drumdiff import audio as audio_io
from drumdiff.data.hydrogen import KitSample, read_hydrogen_kit
from drumdiff.data.manifest import Split
from drumdiff.data.regions import KitFileError, KitRegion, Region, gm_name
from drumdiff.data.sfz import read_sfz
from drumdiff.data.soundfont import DEFAULT_PRESETS, PresetSpec, read_soundfont
from drumdiff.errors import DrumdiffError

ClassMode = Literal["none", "folders", "hydrogen", "kits"]
CLASS_MODES = ("none", "folders", "hydrogen", "kits")
SINGLE_CLASS = "drums"  # the one class of --classes none
KIT_SUFFIXES = (".sf2", ".sf3", ".sfz")  # kit files read with --classes kits (beside Hydrogen's drumkit.xml)

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
        "agogo", "guiro", "whistle", "glass", "perc", "vibraslap", "cuica", "castanet", "surdo",
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
    provenance: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # more about `reject`, when there is more to say
    region: Region | None = None  # a clip inside a kit file (SoundFont, SFZ); `path` is "<file>#<member>"
    split: Split | None = None  # "test" for inputs of a test source; None: `split_for_group(group)`

    @property
    def file(self) -> str:
        """The file that is read (and whose size and time tell whether it changed)."""
        return self.region.file if self.region is not None else self.path


def find_sources(
    sources: Sequence[str | os.PathLike],
    *,
    classes: ClassMode = "none",
    mapping: dict[str, list[str]] | None = None,
    skip: str | os.PathLike | None = None,
    soundfont_presets: PresetSpec = DEFAULT_PRESETS,
    test_sources: Sequence[str | os.PathLike] = (),
    licenses: Sequence[tuple[str | os.PathLike, str]] = (),
) -> list[Source]:
    """Every input under `sources` and `test_sources` with its class, group and provenance (or a reason to
    leave it out). Inputs of `test_sources` get split "test"; `licenses` are (path, text) pairs: the text
    of the longest path that holds an input is its provenance's licence."""
    if classes not in CLASS_MODES:
        raise DrumdiffError(f"--classes must be one of {', '.join(CLASS_MODES)}, got {classes!r}")
    mapping = mapping or DEFAULT_HYDROGEN_MAPPING
    skip_real = Path(os.path.realpath(skip)) if skip is not None else None
    everything = [*sources, *test_sources]
    for src in everything:
        if not Path(src).exists():
            raise DrumdiffError(f"source {src} does not exist")
    tops = [Path(os.path.abspath(src)) for src in everything]
    held_out = {Path(os.path.abspath(src)) for src in test_sources}
    bases = _display_bases([top.parent if top.is_file() else top for top in tops])
    licence_for = _licence_table(licenses)
    found: dict[str, Source] = {}
    for top in tops:
        split: Split | None = "test" if top in held_out else None
        unreadable: list[OSError] = []
        files = [top] if top.is_file() else list(_walk(top, skip=skip_real, unreadable=unreadable))
        if top.is_file():  # a single file: as if its folder were SRC
            top = top.parent
        base = bases[top]
        for error in unreadable:  # a folder that cannot be listed: its files are unknown, say so
            key = os.path.abspath(error.filename)
            display = Path(os.path.relpath(key, base)).as_posix()
            detail = f"the folder cannot be read ({error.strerror or error}); its files are left out"
            found[key] = Source(key, display, display, reject="unreadable", detail=detail)
        kit_files: dict[str, KitSample] = {}
        broken_kits: dict[str, str] = {}  # folder -> why its drumkit.xml could not be read
        listed: set[str] = set()  # sample files that an SFZ kit reads
        if classes in ("hydrogen", "kits"):
            for xml in (f for f in files if f.name == "drumkit.xml"):
                try:
                    samples = read_hydrogen_kit(xml)
                except DrumdiffError as error:  # one broken kit must not stop the others
                    broken_kits[str(xml.parent)] = str(error)
                    continue
                for sample in samples:
                    kit_files.setdefault(os.path.abspath(sample.path), sample)
        hydrogen_folders = {str(f.parent) for f in files if f.name == "drumkit.xml"}
        if classes == "kits":
            read: list[tuple[Path, list[Source]]] = []
            included: set[str] = set()  # SFZ files that another one #includes: parts, not kits
            for kit_file in (f for f in files if f.name.lower().endswith(KIT_SUFFIXES)):
                display = Path(os.path.relpath(kit_file, base)).as_posix()
                includes: set[str] = set()
                kit = _kit_file_sources(kit_file, display, mapping, soundfont_presets, licence_for, includes)
                read.append((kit_file, kit))
                if not (len(kit) == 1 and kit[0].reject == "bad kit file"):
                    included |= includes
            for kit_file, kit in read:
                if os.path.realpath(kit_file) in included:
                    continue
                for source in kit:
                    if source.region is not None and source.region.kind == "file":
                        listed.add(source.region.file)
                    found.setdefault(source.path, _with_split(source, split))
        for file in files:
            key = os.path.abspath(file)
            if key in found or key in listed or not (_is_audio_name(file.name) or key in kit_files):
                continue
            display = Path(os.path.relpath(key, base)).as_posix()
            rel_parent = Path(os.path.relpath(file.parent, top)).as_posix()
            group = Path(os.path.relpath(file.parent, base)).as_posix()  # the folder, as `display` names it
            licence = licence_for(key)
            provenance = {"license": licence} if licence else {}
            if classes == "none":
                source = Source(key, display, group, SINGLE_CLASS, provenance=provenance)
            elif classes == "folders":
                if rel_parent == ".":
                    source = Source(key, display, group, reject="not in a class folder")
                else:
                    source = Source(key, display, group, rel_parent.split("/")[0], provenance=provenance)
            elif key in kit_files:
                source = _kit_source(kit_files.pop(key), key, display, mapping, licence)
            elif classes == "hydrogen" or str(file.parent) in hydrogen_folders:
                why = next((e for d, e in broken_kits.items() if key.startswith(d + os.sep)), "")
                source = Source(key, display, group, reject="not in a Hydrogen kit", detail=why)
            else:  # --classes kits: a one-shot outside any kit is named by its file
                source = _named_source(key, display, group, mapping, provenance)
            found[key] = _with_split(source, split)
        for key, sample in kit_files.items():  # listed by a kit, not found under SRC: elsewhere, or missing
            display = Path(os.path.relpath(key, base)).as_posix()
            if os.path.isfile(key):
                source = _kit_source(sample, key, display, mapping, licence_for(key))
            else:
                source = Source(key, display, sample.kit, reject="missing")
            found.setdefault(key, _with_split(source, split))
    return sorted(found.values(), key=lambda s: s.display)


def count_ignored(
    sources: Sequence[str | os.PathLike], *, skip: Path, classes: ClassMode = "none"
) -> tuple[int, int]:
    """(files under the source folders that are neither audio nor a kit file that is read, SoundFont/SFZ
    files among them: read with --classes kits)."""
    skip_real = Path(os.path.realpath(skip))
    ignored = kits = 0
    for src in sources:
        if not Path(src).is_dir():
            continue
        for f in _walk(Path(os.path.abspath(src)), skip=skip_real):
            is_kit = f.name.lower().endswith(KIT_SUFFIXES)
            if _is_audio_name(f.name) or f.name == "drumkit.xml" or (is_kit and classes == "kits"):
                continue
            ignored += 1
            kits += is_kit
    return ignored, kits


def _is_audio_name(name: str) -> bool:
    return name.lower().endswith(audio_io.AUDIO_EXTENSIONS)


def _walk(root: Path, *, skip: Path | None, unreadable: list[OSError] | None = None) -> Iterable[Path]:
    """Files under `root` in sorted order: follows folder links once, skips hidden entries and `skip`.
    Folders that cannot be listed are appended to `unreadable` (their `OSError`, which names the folder)."""
    seen: set[str] = set()
    onerror = unreadable.append if unreadable is not None else None
    for folder, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
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


def _kit_source(
    sample: KitSample, key: str, display: str, mapping: dict[str, list[str]], licence: str | None
) -> Source:
    provenance = {
        "kit": sample.kit,
        "instrument": sample.instrument,
        "author": sample.author,
        "license": licence or sample.license or "unknown (not stated in drumkit.xml)",
    }
    if licence and sample.license and sample.license != licence:
        provenance["stated_license"] = sample.license
    class_name = class_for_instrument(sample.instrument, mapping)
    if class_name is None:
        detail = f"instrument {sample.instrument!r} names no class of the mapping"
        return Source(key, display, sample.kit, reject="no class", provenance=provenance, detail=detail)
    return Source(key, display, sample.kit, class_name, provenance=provenance)


def _kit_file_sources(
    path: Path,
    display: str,
    mapping: dict[str, list[str]],
    presets: PresetSpec,
    licence_for: Callable[[str], str | None],
    included: set[str],
) -> list[Source]:
    """The clips of one SoundFont or SFZ file as sources; a file that cannot be read is one rejection.
    `included` collects the files an SFZ `#include`s."""
    key = os.path.abspath(path)
    try:
        if path.suffix.lower() == ".sfz":
            entries = read_sfz(path, included=included)
        else:
            entries = read_soundfont(path, presets=presets)
    except KitFileError as error:
        return [Source(key, display, path.stem, reject="bad kit file", detail=str(error))]
    licence = licence_for(key)
    unknown = f"unknown (not stated in the {'SFZ' if path.suffix.lower() == '.sfz' else 'SoundFont'})"
    sources = []
    for entry in entries:
        provenance = {k: v for k, v in entry.provenance.items() if v not in ("", None)}
        stated = provenance.pop("stated_license", "")
        provenance["license"] = licence or stated or unknown
        if licence and stated and stated != licence:
            provenance["stated_license"] = stated
        member_key, member_display = f"{key}#{entry.member}", f"{display}#{entry.member}"
        if entry.reject is not None:
            sources.append(Source(member_key, member_display, entry.kit, reject=entry.reject,
                                  provenance=provenance, detail=entry.detail))  # fmt: skip
            continue
        class_name, name, how = _region_class(entry, mapping)
        provenance.update({"instrument": name, "class_from": how})
        if entry.note is not None and gm_name(entry.note):
            provenance["gm_name"] = gm_name(entry.note)
        if class_name is None:
            names = [*entry.names, *entry.labels]
            detail = (
                f"note {entry.note} ({gm_name(entry.note) or 'no GM name'}) and names {names} match no class"
            )
            sources.append(Source(member_key, member_display, entry.kit, reject="no class",
                                  provenance=provenance, detail=detail, region=entry.region))  # fmt: skip
        else:
            sources.append(Source(member_key, member_display, entry.kit, class_name, provenance=provenance,
                                  region=entry.region))  # fmt: skip
    return sources


def _region_class(entry: KitRegion, mapping: dict[str, list[str]]) -> tuple[str | None, str, str]:
    """(class, the name it came from, how) of a kit clip: the names of its own audio first (they know the
    kit: AVL's kits put a hi-hat swish on GM's Hi-Mid Tom), then the General MIDI name of its note, then the
    broader names (an instrument called "Standard Drums" says nothing about one of its notes)."""
    for name in entry.names:
        class_name = class_for_instrument(name, mapping)
        if class_name is not None:
            return class_name, name, "name"
    gm = gm_name(entry.note)
    if gm is not None and (class_name := class_for_instrument(gm, mapping)) is not None:
        return class_name, gm, f"GM note {entry.note}"
    for name in entry.labels:
        class_name = class_for_instrument(name, mapping)
        if class_name is not None:
            return class_name, name, "label"
    return None, (entry.names or entry.labels or ("",))[0], "none"


def name_of(stem: str) -> str:
    """The instrument name a file name gives: `hihat_closed01` -> "hihat closed01" (matched by "contains")."""
    return re.sub(r"[_\-.]+", " ", stem).strip()


def _named_source(
    key: str, display: str, group: str, mapping: dict[str, list[str]], provenance: dict[str, Any]
) -> Source:
    name = name_of(Path(key).stem)
    class_name = class_for_instrument(name, mapping)
    provenance = {**provenance, "instrument": name, "class_from": "file name"}
    if class_name is None:
        detail = f"file name {name!r} names no class of the mapping"
        return Source(key, display, group, reject="no class", provenance=provenance, detail=detail)
    return Source(key, display, group, class_name, provenance=provenance)


def _with_split(source: Source, split: Split | None) -> Source:
    if split is None:
        return source
    return replace(source, split=split)


def _licence_table(licenses: Sequence[tuple[str | os.PathLike, str]]) -> Callable[[str], str | None]:
    """A lookup: the licence text of the longest given path that is (or holds) a file, or None."""
    table = sorted(((os.path.abspath(p), text) for p, text in licenses), key=lambda pt: -len(pt[0]))

    def licence_for(path: str) -> str | None:
        for prefix, text in table:
            if path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep):
                return text
        return None

    return licence_for
