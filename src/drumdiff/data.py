"""Datasets: import folders of one-shots (and Hydrogen kits) into a prepared folder, inspect it, train on it.

`prepare` turns any pile of audio files into `DIR/<class>/<name>.flac` (24-bit FLAC, model rate, length and
channels), `DIR/manifest.json` (what was done to every accepted file) and `DIR/rejected.json` (why every other
file was left out). It never stops because of one bad file, and a second run re-encodes only what changed.

`PreparedDataset` reads a prepared folder through a float16 memory-mapped cache, so training never decodes
audio; `Augment` holds the one-shot augmentations, driven by a per-item seed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from drumdiff import audio as audio_io
from drumdiff.config import ModelConfig
from drumdiff.errors import AudioError, DrumdiffError
from drumdiff.files import atomic_path, check_writable

MANIFEST_FORMAT = "drumdiff-dataset"
MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
REJECTED = "rejected.json"
STAGING = ".staging"  # encoded files wait here until duplicates are known; emptied at every start
MARKER = ".drumdiff-prepare"  # written first, so that a re-run into an interrupted DIR is allowed
CACHE_DIR = ".cache"
SINGLE_CLASS = "drums"  # the one class of --classes none
VAL_FRACTION = 0.1
MAX_DECODE_SECONDS = 120.0  # decode at most this much of each input: room for silence before the onset

ClassMode = Literal["none", "folders", "hydrogen"]
Split = Literal["train", "val"]

# Every reason that can appear in rejected.json, with what it means (docs/data.md repeats this list).
REJECT_REASONS: dict[str, str] = {
    "missing": "the file vanished or is a broken symbolic link",
    "not a file": "not a regular file (a device, a socket, ...)",
    "unreadable": "the file cannot be opened (permissions, I/O error)",
    "empty": "0 bytes, or a header with no audio frames",
    "not audio": "libsndfile cannot decode it (text, image, random bytes, corrupt header)",
    "non-finite samples": "NaN or Inf samples (float files)",
    "silent": "peak below -60 dBFS after DC removal",
    "too short": "fewer than 256 samples from the first to the last sample above -60 dBFS",
    "duplicate": "the same decoded, fitted audio as an accepted file (`duplicate_of` names it)",
    "not in a class folder": "--classes folders: the file sits directly in SRC, not in a class folder",
    "not in a Hydrogen kit": "--classes hydrogen: no drumkit.xml lists the file",
    "no class": "--classes hydrogen: the instrument name matches no class of the mapping",
    "failed": "an unexpected error while decoding or conditioning (the detail says which); retried next run",
}
# Reasons that depend only on the file's bytes and the settings: cached between runs by size and mtime.
_CONTENT_REASONS = {"empty", "not audio", "non-finite samples", "silent", "too short"}

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
_DEFAULT_MODEL = ModelConfig()


@dataclass(frozen=True)
class PrepareSettings:
    """How every accepted file is conditioned. A change re-encodes everything on the next run."""

    sample_rate: int = _DEFAULT_MODEL.sample_rate
    length: int = _DEFAULT_MODEL.length
    channels: int = _DEFAULT_MODEL.audio_channels
    normalize: Literal["peak", "lufs", "none"] = "peak"
    peak_db: float = -1.0
    lufs: float = -14.0
    fade_ms: float = 10.0
    silence_db: float = audio_io.SILENCE_DB
    min_active: int = 256

    def __post_init__(self) -> None:
        if self.sample_rate < 1000:
            raise DrumdiffError(f"--sample-rate must be at least 1000 Hz, got {self.sample_rate}")
        if self.length < self.min_active:
            raise DrumdiffError(f"--length must be at least {self.min_active} samples, got {self.length}")
        if self.channels not in (1, 2):
            raise DrumdiffError(f"channels must be 1 or 2, got {self.channels}")
        if self.normalize not in ("peak", "lufs", "none"):
            raise DrumdiffError(f"--normalize must be peak, lufs or none, got {self.normalize!r}")


def split_for_group(group: str) -> Split:
    """The one train/val rule: "val" when the SHA-1 of the group name falls in the last 10% of its range."""
    digest = hashlib.sha1(group.encode("utf-8", "surrogateescape")).digest()  # any file name hashes
    position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "val" if position >= 1.0 - VAL_FRACTION else "train"


# ----------------------------------------------------------------------------------------------------------
# Finding the inputs


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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop an XML namespace: "{http://www.hydrogen-music.org/drumkit}name"


def _child_text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


@dataclass(frozen=True)
class KitSample:
    """One sample file listed by a Hydrogen `drumkit.xml`."""

    path: Path
    instrument: str
    kit: str
    author: str
    license: str


def read_hydrogen_kit(xml_path: str | os.PathLike) -> list[KitSample]:
    """Every layer file of every instrument in a Hydrogen `drumkit.xml` (any schema version, namespaced or not)."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as error:
        raise DrumdiffError(f"cannot parse Hydrogen kit {xml_path}: {error}") from error
    kit = _child_text(root, "name") or xml_path.parent.name
    author, license_ = _child_text(root, "author"), _child_text(root, "license")
    if not license_:  # older kits: the licence may be in a text file beside drumkit.xml
        notes = sorted(
            p.name
            for p in xml_path.parent.iterdir()
            if p.is_file() and p.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "README"))
        )
        license_ = f"not stated in drumkit.xml; see {', '.join(notes)}" if notes else ""
    samples: list[KitSample] = []
    for instrument in root.iter():
        if _local(instrument.tag) != "instrument":
            continue
        name = _child_text(instrument, "name")
        for element in instrument.iter():
            if _local(element.tag) == "filename" and (element.text or "").strip():
                file = Path(element.text.strip())
                samples.append(
                    KitSample(
                        path=file if file.is_absolute() else xml_path.parent / file,
                        instrument=name,
                        kit=kit,
                        author=author,
                        license=license_,
                    )
                )
    return samples


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


# ----------------------------------------------------------------------------------------------------------
# Conditioning one file (runs in worker processes)


def _slug(text: str, limit: int = 60) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")
    return slug[:limit] or "clip"


def output_name(source: Source) -> str:
    """`<readable stem>-<8 hex of the source's display path>.flac`: unique, ASCII, stable across machines."""
    digest = hashlib.sha1(source.display.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{_slug(Path(source.display).stem)}-{digest}.flac"


def _sha1_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def audio_fingerprint(audio: torch.Tensor) -> str:
    """SHA-1 of `[C, T]` quantized to 16 bits: equal for the same audio from different containers."""
    quantized = torch.round(audio.clamp(-1, 1) * 32767).to(torch.int16).numpy()
    return hashlib.sha1(quantized.tobytes()).hexdigest()


def condition(
    decoded: audio_io.Decoded, settings: PrepareSettings
) -> tuple[torch.Tensor | None, dict[str, Any], str | None]:
    """Apply the prepare rules to decoded audio: (clip `[C, length]` or None, what was done, reject reason)."""
    x = decoded.audio  # (C, T) at the source rate
    sr = decoded.sample_rate
    done: dict[str, Any] = {}
    if decoded.partial:
        done["decoded_partially"] = decoded.partial_reason
    if x.shape[0] != settings.channels:
        how = "duplicated" if x.shape[0] == 1 else "mean of all channels"
        done["channels"] = f"{x.shape[0]} -> {settings.channels} ({how})"
        x = audio_io.to_channels(x, settings.channels)
    dc = x.mean(dim=1)
    x = audio_io.remove_dc(x)
    if float(dc.abs().max()) > 1e-4:
        done["dc_removed"] = round(float(dc.abs().max()), 6)
    if audio_io.peak_db(x) < settings.silence_db:
        return None, done, "silent"
    trimmed = audio_io.trim_leading_silence(x, threshold_db=settings.silence_db)
    if trimmed.shape[1] < x.shape[1]:
        done["trimmed_leading_s"] = round((x.shape[1] - trimmed.shape[1]) / sr, 6)
    x = trimmed
    if (
        audio_io.active_span(x, threshold_db=settings.silence_db)
        < settings.min_active * sr / settings.sample_rate
    ):
        return None, done, "too short"
    # Crop before resampling (with a margin for the filter) so a 60 s file costs no more than a short one.
    needed = math.ceil(settings.length * sr / settings.sample_rate) + 64
    if x.shape[1] > needed:
        x = x[:, :needed]
    if sr != settings.sample_rate:
        done["resampled"] = f"{sr} -> {settings.sample_rate} Hz"
        x = audio_io.resample(x, sr, settings.sample_rate)
    if x.shape[1] > settings.length:
        done["cropped_from_s"] = round(trimmed.shape[1] / sr, 6)
    elif x.shape[1] < settings.length:
        done["padded_from_s"] = round(x.shape[1] / settings.sample_rate, 6)
    x = audio_io.fit_length(x, settings.length, fade_ms=settings.fade_ms, sample_rate=settings.sample_rate)
    if settings.normalize != "none":
        before = audio_io.peak_db(x)
        x = audio_io.normalize(
            x,
            mode=settings.normalize,
            peak_db=settings.peak_db,
            lufs=settings.lufs,
            sample_rate=settings.sample_rate,
        )
        done["normalized"] = settings.normalize
        done["gain_db"] = round(audio_io.peak_db(x) - before, 3)
    elif float(x.abs().max()) > 1.0:
        done["clipped"] = True  # --normalize none with a float source above full scale
    x = x.clamp(-1.0, 1.0)
    if not bool(torch.isfinite(x).all()) or audio_io.peak_db(x) < settings.silence_db:
        return None, done, "silent"  # cannot happen after the checks above, but never write such a clip
    return x, done, None


class OutputError(DrumdiffError):
    """The output folder cannot be written (disk full, permissions): stops `prepare`, as every file would fail."""


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core already


def process_file(job: tuple[str, str, str, PrepareSettings]) -> dict[str, Any]:
    """Decode, condition and encode one input to `staged` (a worker task; picklable in and out).

    `job` is (source path, staged output path, display name, settings). Returns {"ok": True, ...} with what
    goes into the manifest, or {"ok": False, "reason", "detail"}; raises `OutputError` when `staged` cannot
    be written.
    """
    path, staged, display, settings = job
    started = time.perf_counter()
    try:
        stat = os.stat(path)
        source_stat = {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    except OSError:
        source_stat = {}
    try:
        decoded = audio_io.decode(path, max_seconds=MAX_DECODE_SECONDS)
    except audio_io.AudioDecodeError as error:
        return {"ok": False, "reason": error.reason, "detail": str(error), **source_stat}
    original = {
        "sample_rate": decoded.sample_rate,
        "channels": decoded.channels,
        "duration_s": round(
            decoded.frames_expected / decoded.sample_rate if decoded.limited else decoded.duration, 6
        ),
        "format": decoded.format,
        "subtype": decoded.subtype,
    }
    clip, done, reason = condition(decoded, settings)
    if clip is None:
        return {
            "ok": False,
            "reason": reason,
            "detail": f"{display}: {REJECT_REASONS[reason]}",
            **source_stat,
        }
    try:
        audio_io.write(staged, clip, settings.sample_rate, format="flac")
        sha1 = _sha1_file(staged)
    except (AudioError, OSError) as error:  # the output side: not this input's fault
        raise OutputError(str(error)) from error
    return {
        "ok": True,
        "original": original,
        "processing": done,
        "audio_sha1": audio_fingerprint(clip),
        "peak_db": round(audio_io.peak_db(clip), 3),
        "lufs": round(audio_io.loudness_lufs(clip, settings.sample_rate), 3),
        "sha1": sha1,
        "source_sha1": _sha1_file(path),
        "seconds": time.perf_counter() - started,
        **source_stat,
    }


# ----------------------------------------------------------------------------------------------------------
# prepare


@dataclass
class PrepareReport:
    """What `prepare` did: counts for the summary and the paths it wrote."""

    out: Path
    accepted: int = 0
    encoded: int = 0  # files decoded and written this run
    reused: int = 0  # files kept from the previous run
    decoded: int = 0  # inputs decoded this run (encoded ones and new rejections)
    per_class_split: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    ignored_non_audio: int = 0
    seconds: float = 0.0
    inputs: int = 0

    @property
    def files_per_second(self) -> float:
        """Inputs decoded per second of the whole run (start-up and bookkeeping included)."""
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few human-readable lines: counts per class and split, per rejection reason, speed."""
        lines = [
            f"prepared {self.out}: {self.accepted} accepted ({self.encoded} encoded, {self.reused} reused; "
            f"{self.decoded} inputs decoded)"
        ]
        splits = ("train", "val")
        lines.append(f"  {'class':<14}" + "".join(f"{s:>8}" for s in splits))
        for name, counts in sorted(self.per_class_split.items()):
            lines.append(f"  {name:<14}" + "".join(f"{counts.get(s, 0):>8}" for s in splits))
        total = sum(self.rejected.values())
        lines.append(f"  rejected: {total}" + (" (see rejected.json)" if total else ""))
        for reason, count in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<24}{count:>6}")
        if self.ignored_non_audio:
            lines.append(f"  ignored {self.ignored_non_audio} files without an audio extension")
        lines.append(
            f"  {self.inputs} inputs, {self.decoded} decoded, in {self.seconds:.1f} s "
            f"({self.files_per_second:.1f} decoded files/s)"
        )
        return "\n".join(lines)


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, flushed to disk, then renamed)."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8: escape it (\udcxx reads back)
        encoded = (json.dumps(data, indent=1) + "\n").encode("ascii")
    try:
        with atomic_path(path, fsync=True) as tmp:
            tmp.write_bytes(encoded)
    except OSError as error:
        raise DrumdiffError(f"cannot write {path}: {error.strerror or error}") from error


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DrumdiffError(f"cannot create output folder {out}: {error.strerror or error}") from error
    if not out.is_dir():
        raise DrumdiffError(f"output {out} exists and is not a folder")
    ours = (out / MANIFEST).exists() or (out / MARKER).exists()
    if not ours and any(out.iterdir()):
        raise DrumdiffError(
            f"output folder {out} is not empty and holds no drumdiff dataset; pick a new folder"
        )
    try:
        check_writable(out)
    except OSError as error:
        raise DrumdiffError(f"output folder {out} is not writable ({error.strerror or error})") from error
    (out / MARKER).write_text("drumdiff data prepare output folder\n", encoding="utf-8")
    shutil.rmtree(out / STAGING, ignore_errors=True)
    (out / STAGING).mkdir()


def prepare(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    classes: ClassMode = "none",
    mapping: dict[str, list[str]] | None = None,
    settings: PrepareSettings | None = None,
    workers: int = 1,
    progress: bool = True,
) -> PrepareReport:
    """Import audio files under `sources` into the prepared dataset folder `out` (see docs/data.md).

    Raises `DrumdiffError` when a source is missing, `out` cannot be written, or no file was accepted
    (after writing `rejected.json`, so the user can see why; an earlier dataset in `out` is then kept).
    """
    started = time.perf_counter()
    settings = settings or PrepareSettings()
    out = Path(out)
    if not sources:
        raise DrumdiffError("no source folder given")
    for src in sources:
        if not Path(src).exists():
            raise DrumdiffError(f"source {src} does not exist")
    _prepare_out(out)
    found = find_sources(sources, classes=classes, mapping=mapping, skip=out)
    settings_dict = asdict(settings)
    report = PrepareReport(out=out, inputs=len(found), ignored_non_audio=_count_ignored(sources, skip=out))

    rejected, candidates, to_decode = _plan(found, out, settings_dict)
    report.decoded += len(to_decode)
    accepted, failed = _decode_all(to_decode, out, settings, workers=workers, progress=progress)
    candidates += accepted
    rejected += failed
    items, duplicates = _remove_duplicates(candidates)
    while pending := [item for item in items if "pending" in item]:
        # Cached duplicates whose original is gone (or rejected now): decode them after all.
        candidates = [item for item in candidates if not any(item is p for p in pending)]
        report.decoded += len(pending)
        accepted, failed = _decode_all(
            [item["pending"] for item in pending], out, settings, workers=workers, progress=progress
        )
        candidates += accepted
        rejected += failed
        items, duplicates = _remove_duplicates(candidates)
    rejected = sorted(rejected + [_duplicate_rejection(item) for item in duplicates], key=lambda r: r["path"])
    rejected_doc = {"settings": settings_dict, "reasons": REJECT_REASONS, "rejected": rejected}
    report.rejected = dict(Counter(r["reason"] for r in rejected))
    if not items:  # leave an earlier dataset in `out` as it was: only say why nothing was accepted
        _write_json(out / REJECTED, rejected_doc)
        shutil.rmtree(out / STAGING, ignore_errors=True)
        raise DrumdiffError(f"no file was accepted from {', '.join(map(str, sources))}; see {out / REJECTED}")

    report.encoded, report.reused = _place(items, out)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "sample_rate": settings.sample_rate,
        "length": settings.length,
        "channels": settings.channels,
        "classes": sorted({item["class"] for item in items}),
        "class_mode": classes,
        "settings": settings_dict,
        "items": sorted(items, key=lambda it: it["path"]),
    }
    _write_json(out / MANIFEST, manifest)  # the new dataset is complete from here on
    _write_json(out / REJECTED, rejected_doc)
    _remove_stale(out, keep={item["path"] for item in items})

    report.accepted = len(items)
    for item in items:
        counts = report.per_class_split.setdefault(item["class"], {"train": 0, "val": 0})
        counts[item["split"]] += 1
    report.seconds = time.perf_counter() - started
    return report


def _count_ignored(sources: Sequence[str | os.PathLike], *, skip: Path) -> int:
    """Files under the source folders that have no audio extension (and are not a `drumkit.xml`)."""
    skip_real = Path(os.path.realpath(skip))
    return sum(
        1
        for src in sources
        if Path(src).is_dir()
        for f in _walk(Path(os.path.abspath(src)), skip=skip_real)
        if not _is_audio_name(f.name) and f.name != "drumkit.xml"
    )


def _plan(
    found: list[Source], out: Path, settings_dict: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Source]]:
    """(rejections known without decoding, candidates kept from the previous run, sources to decode).

    The previous run's outputs and rejections count only when the settings are the same and the source's
    size and modification time (or, for outputs, content) are unchanged; see `_reuse`.
    """
    previous = _read_json(out / MANIFEST) or {}
    prev_items = (
        {it.get("source_path"): it for it in previous.get("items", [])}
        if previous.get("settings") == settings_dict
        else {}
    )
    prev_rejected_doc = _read_json(out / REJECTED) or {}
    prev_rejected = (
        {r.get("source_path"): r for r in prev_rejected_doc.get("rejected", [])}
        if prev_rejected_doc.get("settings") == settings_dict
        else {}
    )
    rejected: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    to_decode: list[Source] = []
    for source in found:
        if source.reject:
            detail = f"{source.display}: {source.detail or REJECT_REASONS[source.reject]}"
            rejected.append(_rejection(source, source.reject, detail))
            continue
        reused = _reuse(source, prev_items.get(source.path), out)
        if reused is not None:
            candidates.append(_item(source, reused))
            continue
        cached = prev_rejected.get(source.path)
        if cached and _same_stat(source.path, cached):
            if cached.get("reason") in _CONTENT_REASONS:
                rejected.append({**cached, "path": source.display})
                continue
            if cached.get("reason") == "duplicate" and cached.get("audio_sha1"):
                # Its audio is known: decoded again only if the file it duplicated is gone.
                candidates.append({**cached, "source": source.display, "pending": source})
                continue
        to_decode.append(source)
    return rejected, candidates, to_decode


def _decode_all(
    sources: list[Source], out: Path, settings: PrepareSettings, *, workers: int, progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Decode, condition and stage `sources` under `out/.staging`: (candidate items, rejections)."""
    staged = [str(out / STAGING / output_name(source)) for source in sources]
    tasks = [(s.path, path, s.display, settings) for s, path in zip(sources, staged, strict=True)]
    candidates: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for source, path, result in zip(
        sources, staged, _run_jobs(tasks, workers=workers, progress=progress), strict=True
    ):
        if result["ok"]:
            candidates.append(_item(source, {**result, "staged": path}))
        else:
            extra = {k: result[k] for k in ("source_size", "source_mtime_ns") if k in result}
            rejected.append(_rejection(source, result["reason"], result["detail"], **extra))
    return candidates, rejected


def _remove_duplicates(
    candidates: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, duplicates): the first item by source path of each fitted audio is kept; each duplicate gets
    `duplicate_of`. This runs before splitting, so a sample shared by two kits cannot land in both splits."""
    kept: dict[str, dict[str, Any]] = {}
    duplicates: list[dict[str, Any]] = []
    for item in sorted(candidates, key=lambda it: it["source"]):
        first = kept.get(item["audio_sha1"])
        if first is None:
            kept[item["audio_sha1"]] = item
        else:
            duplicates.append({**item, "duplicate_of": first["source"]})
    return list(kept.values()), duplicates


def _duplicate_rejection(item: dict[str, Any]) -> dict[str, Any]:
    """The rejected.json record of a duplicate; its audio SHA-1 and source stat let the next run skip it."""
    return {
        "path": item["source"],
        "source_path": item["source_path"],
        "reason": "duplicate",
        "detail": f"{item['source']}: same audio as {item['duplicate_of']}",
        "duplicate_of": item["duplicate_of"],
        "audio_sha1": item["audio_sha1"],
        "source_size": item.get("source_size"),
        "source_mtime_ns": item.get("source_mtime_ns"),
    }


def _rejection(source: Source, reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"path": source.display, "source_path": source.path, "reason": reason, "detail": detail, **extra}


def _same_stat(path: str, record: dict[str, Any]) -> bool:
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_size == record.get("source_size") and stat.st_mtime_ns == record.get("source_mtime_ns")


def _reuse(source: Source, previous: dict[str, Any] | None, out: Path) -> dict[str, Any] | None:
    """The previous run's item for `source` when neither the source nor the output changed, else None."""
    if previous is None or not source.class_name:
        return None
    output = out / previous.get("path", "")
    try:
        if not output.is_file() or output.stat().st_size != previous.get("size"):
            return None
        if not _same_stat(source.path, previous):
            if _sha1_file(source.path) != previous.get("source_sha1"):
                return None  # changed content
            stat = os.stat(source.path)  # touched only: keep, remember the new time
            previous = {**previous, "source_mtime_ns": stat.st_mtime_ns}
        if _sha1_file(output) != previous.get("sha1"):
            return None  # an output that was damaged or replaced since: never trusted
    except OSError:
        return None
    return {**previous, "previous_path": previous["path"]}


def _item(source: Source, result: dict[str, Any]) -> dict[str, Any]:
    """A manifest item from a worker result (new, with `staged`) or a previous item (with `previous_path`)."""
    class_name = source.class_name or SINGLE_CLASS
    item: dict[str, Any] = {
        "path": f"{class_name}/{output_name(source)}",
        "class": class_name,
        "group": source.group,
        "split": split_for_group(source.group),
        "source": source.display,
        "source_path": source.path,
        "source_size": result.get("source_size"),
        "source_mtime_ns": result.get("source_mtime_ns"),
        "source_sha1": result.get("source_sha1"),
        "original": result.get("original"),
        "processing": result.get("processing"),
        "peak_db": result.get("peak_db"),
        "lufs": result.get("lufs"),
        "audio_sha1": result["audio_sha1"],
        "sha1": result.get("sha1"),
        "size": result.get("size"),
    }
    if source.provenance:
        item["provenance"] = source.provenance
    if "staged" in result:
        item["staged"] = result["staged"]
        item["size"] = os.path.getsize(result["staged"])
    if "previous_path" in result:
        item["previous_path"] = result["previous_path"]
    return item


def _place(items: list[dict[str, Any]], out: Path) -> tuple[int, int]:
    """Move staged files into `out/<class>/` and reused ones whose class changed: (encoded, reused)."""
    encoded = reused = 0
    for item in items:
        final = out / item["path"]
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = item.pop("staged", None)
        previous_path = item.pop("previous_path", None)
        if staged is not None:
            os.replace(staged, final)
            encoded += 1
        else:
            if previous_path and previous_path != item["path"]:
                os.replace(out / previous_path, final)
            reused += 1
    return encoded, reused


def _remove_stale(out: Path, *, keep: set[str]) -> None:
    """Delete outputs that `keep` does not list (removed, changed or now-duplicate sources, an interrupted
    run's leftovers), then empty class folders and the staging folder."""
    for stale in out.glob("*/*.flac"):
        if stale.relative_to(out).as_posix() not in keep and not stale.parent.name.startswith("."):
            stale.unlink()
    for folder in out.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and not any(folder.iterdir()):
            folder.rmdir()
    shutil.rmtree(out / STAGING, ignore_errors=True)


def _run_jobs(
    tasks: list[tuple[str, str, str, PrepareSettings]], *, workers: int, progress: bool
) -> list[dict[str, Any]]:
    """`process_file` over the tasks, in a spawn process pool when workers > 1, with a progress bar."""
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc="prepare", unit="file", disable=not progress or not tasks)
    try:
        if workers > 1 and len(tasks) > 1:
            context = multiprocessing.get_context("spawn")
            try:
                with concurrent.futures.ProcessPoolExecutor(
                    max_workers=workers, mp_context=context, initializer=_init_worker
                ) as pool:
                    futures = {pool.submit(_safe_process, task): i for i, task in enumerate(tasks)}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            results[futures[future]] = future.result()
                            bar.update()
                    except BaseException:
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
            except BrokenProcessPool as error:
                tqdm.write(f"worker processes failed ({error}); going on in this process", file=sys.stderr)
        # One process (or what a broken pool left): one torch thread, as clips are too small to split.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, task in enumerate(tasks):
                if results[i] is None:
                    results[i] = _safe_process(task)
                    bar.update()
        finally:
            torch.set_num_threads(threads)
    finally:
        bar.close()
    return [result for result in results if result is not None]  # all filled by now


def _safe_process(task: tuple[str, str, str, PrepareSettings]) -> dict[str, Any]:
    """`process_file`, turning an unexpected failure on one input into a "failed" rejection, not a crash.

    An `OutputError` (the output folder cannot be written) still stops the run: every file would fail.
    """
    try:
        return process_file(task)
    except OutputError:
        raise
    except Exception as error:  # one odd file must not stop an import of thousands
        Path(task[1]).unlink(missing_ok=True)
        return {"ok": False, "reason": "failed", "detail": f"{task[2]}: {type(error).__name__}: {error}"}


# ----------------------------------------------------------------------------------------------------------
# Reading a prepared folder


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check `root/manifest.json`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DrumdiffError(
            f"{root} is not a prepared dataset: {path} not found (run `drumdiff data prepare`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DrumdiffError(f"cannot read {path}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DrumdiffError(f"{path} is not a drumdiff dataset manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DrumdiffError(
            f"{path} has version {manifest.get('version')}, this drumdiff reads {MANIFEST_VERSION}"
        )
    return manifest


def _mix_seed(*parts: int) -> int:
    digest = hashlib.sha1(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # a non-negative 63-bit seed


@dataclass(frozen=True)
class Augment:
    """One-shot augmentations; each is off when its amount is 0. Deterministic given the generator.

    gain_db: random gain uniform in [-gain_db, 0] dB (never louder, so no clipping).
    polarity: probability of inverting the polarity.
    swap: probability of swapping left and right.
    width: side signal scaled by a factor uniform in [1 - width, 1 + width] (stereo only).
    shift_ms: onset delayed by up to this many milliseconds (zeros in front, tail cropped).
    pitch_semitones: varispeed pitch shift uniform in +-this (0 = off; changes duration like a sampler).
    """

    gain_db: float = 6.0
    polarity: float = 0.5
    swap: float = 0.5
    width: float = 0.2
    shift_ms: float = 2.0
    pitch_semitones: float = 0.0

    def __call__(self, audio: torch.Tensor, *, generator: torch.Generator, sample_rate: int) -> torch.Tensor:
        """Augment one clip `[C, T]`; the output has the same shape."""
        channels, length = audio.shape
        u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()  # one draw per augmentation
        x = audio
        if self.pitch_semitones > 0:
            semitones = (2 * u[5] - 1) * self.pitch_semitones
            ratio = 2 ** (semitones / 12)  # > 1: higher and shorter
            new_length = max(1, round(length / ratio))
            x = torch.nn.functional.interpolate(x[None], size=new_length, mode="linear", align_corners=False)[
                0
            ]
            x = audio_io.fit_length(x, length, fade_ms=5.0, sample_rate=sample_rate)  # (C, T)
        if self.shift_ms > 0:
            shift = int(u[4] * self.shift_ms * sample_rate / 1000)
            if shift > 0:
                x = torch.nn.functional.pad(x, (shift, 0))[:, :length]
        if channels == 2:
            if u[2] < self.swap:
                x = x.flip(0)
            if self.width > 0:
                factor = 1 + (2 * u[3] - 1) * self.width
                mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2 * factor
                x = torch.stack([mid + side, mid - side])
        sign = -1.0 if u[1] < self.polarity else 1.0
        gain = 10 ** (-u[0] * self.gain_db / 20)
        return (x * (sign * gain)).contiguous()


def _cache_key(manifest_bytes: bytes, split: str) -> str:
    return hashlib.sha1(manifest_bytes + split.encode()).hexdigest()[:16]


def build_cache(
    root: str | os.PathLike,
    *,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The float16 `[N, C, T]` `.npy` cache of a split, built (atomically) if missing or out of date."""
    root = Path(root)
    manifest_bytes = (root / MANIFEST).read_bytes()
    manifest = load_manifest(root)
    folder = Path(cache_dir) if cache_dir is not None else root / CACHE_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder)
    except OSError:  # a read-only dataset folder: cache in the user's cache folder instead
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        folder = base / "drumdiff" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-{_cache_key(manifest_bytes, split)}.npy"
    if path.is_file():
        return path
    items = _split_items(manifest, split)
    shape = (len(items), manifest["channels"], manifest["length"])
    try:
        with atomic_path(path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            for i, item in enumerate(tqdm(items, desc=f"cache {split}", unit="clip", disable=not progress)):
                clip, rate = audio_io.read(root / item["path"])
                if rate != manifest["sample_rate"] or tuple(clip.shape) != shape[1:]:
                    raise DrumdiffError(
                        f"{root / item['path']}: {tuple(clip.shape)} at {rate} Hz does not match the manifest "
                        f"({shape[1:]} at {manifest['sample_rate']} Hz); run `drumdiff data prepare` again"
                    )
                array[i] = clip.numpy().astype(np.float16)
            array.flush()
            del array
    except OSError as error:
        raise DrumdiffError(f"cannot write the dataset cache {path}: {error.strerror or error}") from error
    for old in folder.glob(f"{split}-*.npy"):  # caches of earlier manifests
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _split_items(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    if split not in ("train", "val", "all"):
        raise DrumdiffError(f"split must be train, val or all, got {split!r}")
    return [it for it in manifest["items"] if split == "all" or it["split"] == split]


class PreparedDataset(torch.utils.data.Dataset):
    """A prepared folder as `(audio [C, T] float32, class_index)` pairs, read from a float16 memory map.

    The cache is built on first use (and rebuilt when the manifest changes); the object pickles without the
    memory map, so spawn-based DataLoader workers re-open it. With `augment`, item i of epoch e uses the seed
    (seed, e, i): call `set_epoch(e)` each epoch (non-persistent workers pick it up).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: str = "train",
        augment: Augment | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        manifest = load_manifest(self.root)
        self.class_names: list[str] = list(manifest["classes"])
        self.sample_rate: int = int(manifest["sample_rate"])
        self.length: int = int(manifest["length"])
        self.channels: int = int(manifest["channels"])
        self.split = split
        self.items = _split_items(manifest, split)
        index = {name: i for i, name in enumerate(self.class_names)}
        self.labels = np.array([index[it["class"]] for it in self.items], dtype=np.int64)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache_path = build_cache(self.root, split=split, cache_dir=cache_dir, progress=progress)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draw of this epoch."""
        self.epoch = epoch

    def _clips(self) -> np.ndarray:
        if self._array is None:
            # Copy-on-write only so that torch accepts the pages without a warning; nothing ever writes.
            self._array = np.load(self.cache_path, mmap_mode="c")  # (N, C, T) float16
        return self._array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        audio = torch.from_numpy(self._clips()[index]).float()  # (C, T), a copy (torch converts fastest)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, index % len(self)))
            audio = self.augment(audio, generator=generator, sample_rate=self.sample_rate)
        return audio, int(self.labels[index])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several clips at once without augmentation: (audio `[B, C, T]` float32, labels `[B]`)."""
        order = np.asarray(indices, dtype=np.int64)
        clips = self._clips()
        audio = torch.empty(len(order), self.channels, self.length)  # (B, C, T)
        for k, i in enumerate(order):
            audio[k].copy_(torch.from_numpy(clips[i]))  # float16 -> float32 straight from the page cache
        return audio, torch.from_numpy(self.labels[order])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # memory maps do not pickle; workers re-open the file
        return state


# ----------------------------------------------------------------------------------------------------------
# inspect


def inspect(
    root: str | os.PathLike, *, png: str | os.PathLike | None = None, examples: int = 4
) -> dict[str, Any]:
    """Counts, duration and loudness statistics per class and split; a PNG grid of examples per class.

    Returns {"stats": [...rows...], "png": path or None, "rejected": {reason: count}}.
    """
    root = Path(root)
    manifest = load_manifest(root)
    rejected_doc = _read_json(root / REJECTED) or {}
    rejected = dict(Counter(r.get("reason", "?") for r in rejected_doc.get("rejected", [])))
    png_path = Path(png) if png is not None else root / "inspect.png"
    drawn = bool(manifest["classes"]) and examples > 0
    if drawn:
        _draw_examples(root, manifest, png_path, examples=examples)
    return {
        "stats": class_split_stats(manifest),
        "png": str(png_path) if drawn else None,
        "rejected": rejected,
    }


def class_split_stats(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (class, split) with items: count, original duration, cropped count, loudness spread."""
    rows = []
    for class_name in manifest["classes"]:
        for split in ("train", "val"):
            chosen = [it for it in manifest["items"] if it["class"] == class_name and it["split"] == split]
            if not chosen:
                continue
            durations = np.array([(it.get("original") or {}).get("duration_s", math.nan) for it in chosen])
            lufs = np.array([it.get("lufs") if it.get("lufs") is not None else math.nan for it in chosen])
            lufs = lufs[np.isfinite(lufs)]
            rows.append(
                {
                    "class": class_name,
                    "split": split,
                    "count": len(chosen),
                    "duration_s_median": round(float(np.nanmedian(durations)), 3),
                    "duration_s_max": round(float(np.nanmax(durations)), 3),
                    "cropped": sum(1 for it in chosen if "cropped_from_s" in (it.get("processing") or {})),
                    "lufs_median": round(float(np.median(lufs)), 2) if lufs.size else None,
                    "lufs_p10": round(float(np.percentile(lufs, 10)), 2) if lufs.size else None,
                    "lufs_p90": round(float(np.percentile(lufs, 90)), 2) if lufs.size else None,
                }
            )
    return rows


def _draw_examples(root: Path, manifest: dict[str, Any], png_path: Path, *, examples: int) -> None:
    """Save a grid to `png_path` (atomically): per class, `examples` clips spread over the class, each as a
    waveform above a spectrogram (90 dB range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not png_path.parent.is_dir():
        raise DrumdiffError(f"cannot write {png_path}: folder {png_path.parent} does not exist")
    sr, classes = manifest["sample_rate"], manifest["classes"]
    cmap = plt.get_cmap("magma").with_extremes(bad="black", under="black")
    # A -160 dB noise floor, so digital silence draws as black instead of blank (log of 0).
    floor = np.random.default_rng(0).standard_normal(manifest["length"]).astype(np.float32) * 1e-8
    fig, axes = plt.subplots(
        2 * len(classes), examples, figsize=(3 * examples, 3.2 * len(classes)), squeeze=False
    )
    try:
        for row, class_name in enumerate(classes):
            chosen = [it for it in manifest["items"] if it["class"] == class_name]
            picks = sorted({round(k * (len(chosen) - 1) / max(1, examples - 1)) for k in range(examples)})
            for col in range(examples):
                wave_ax, spec_ax = axes[2 * row, col], axes[2 * row + 1, col]
                if col >= len(picks) or not chosen:
                    wave_ax.axis("off")
                    spec_ax.axis("off")
                    continue
                item = chosen[picks[col]]
                mono = audio_io.read(root / item["path"])[0].mean(0).numpy()  # (T,)
                wave_ax.plot(np.arange(mono.size) / sr, mono, linewidth=0.4, color="tab:blue")
                wave_ax.set_ylim(-1, 1)
                wave_ax.set_title(f"{class_name}: {Path(item['source']).name[:28]}", fontsize=7)
                wave_ax.tick_params(labelsize=6)
                with np.errstate(divide="ignore"):
                    spectrum, _, _, image = spec_ax.specgram(
                        mono + floor[: mono.size], NFFT=1024, Fs=sr, noverlap=768, cmap=cmap
                    )
                top = 10 * math.log10(max(float(spectrum.max()), 1e-30))
                image.set_clim(top - 90, top)  # a 90 dB window, so silence reads as black
                spec_ax.set_ylim(0, sr / 2)
                spec_ax.tick_params(labelsize=6)
        fig.tight_layout()
        try:
            with atomic_path(png_path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=80)
        except OSError as error:
            raise DrumdiffError(f"cannot write {png_path}: {error.strerror or error}") from error
    finally:
        plt.close(fig)
