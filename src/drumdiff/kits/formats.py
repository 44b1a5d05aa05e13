"""The kit files a sampler opens: an SFZ instrument, a Hydrogen drum kit, a Decent Sampler preset.

Every writer takes the pads and the sample files each pad plays (paths relative to the kit folder, with
"/"), so the folder can move; each file is written atomically (`drumdiff.files.atomic_path`). The WAV
folder itself is written by `drumdiff.kits.make` (the one place samples are written). Round robins:

- SFZ: one `<group>` per pad (`key=`), one `<region>` per take with `seq_length`/`seq_position`.
- Hydrogen: one instrument per pad with `midiOutNote`; its takes are layers over the whole velocity range
  and `sampleSelectionAlgo` ROUND_ROBIN (Hydrogen cycles through the layers a velocity falls in; at most
  16 layers, Hydrogen's default limit, hence MAX_ROUND_ROBINS). `drumkit.xml` sits in the kit folder and
  names `samples/...`; the `.h2drumkit` archive is laid out as Hydrogen's own export: one top-level folder
  named after the kit, the samples flat beside its `drumkit.xml`.
- Decent Sampler: one `<group>` per pad, `seqMode="round_robin"` with each sample's `seqPosition`.

Hi-hats choke each other (SFZ `group`/`off_by`, Hydrogen `muteGroup`, Decent Sampler tags). Only the
standard library is used; archives and XML are byte-for-byte the same for the same kit.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path
from drumdiff.kits.pads import Pad

FORMATS = ("wav", "sfz", "hydrogen", "dspreset")  # "wav" (the samples/ folder) is always written
MAX_ROUND_ROBINS = 16  # Hydrogen plays at most 16 layers per instrument (its default maximum)
SAMPLES = "samples"  # the WAV folder inside the kit folder
HYDROGEN_NS = "http://www.hydrogen-music.org/drumkit"
HYDROGEN_XML = "drumkit.xml"
CHOKE_CLASS = "hihat"  # pads of this class stop each other, like the hi-hat of a real kit
MAX_NAME = 100


@dataclass(frozen=True)
class PadFiles:
    """A pad and the sample files of its takes, relative to the kit folder ("samples/36_kick_1.wav")."""

    pad: Pad
    samples: tuple[str, ...]

    @property
    def chokes(self) -> bool:
        return self.pad.class_name == CHOKE_CLASS


def parse_formats(formats: str | Iterable[str] | None) -> list[str]:
    """Formats from `--formats` text (`sfz,hydrogen`) or a list; None or "all": every format. "wav" is
    always included: the other formats play its files."""
    if formats is None:
        return list(FORMATS)
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    if items == ["all"]:
        return list(FORMATS)
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        shown = ", ".join(repr(f) for f in unknown) if unknown else "nothing"
        raise DrumdiffError(f"unknown kit format {shown}; choose some of {', '.join(FORMATS)} (or all)")
    return [f for f in FORMATS if f == "wav" or f in items]


def kit_stem(name: str) -> str:
    """The file stem of a kit name, as Hydrogen names its folder: spaces -> "_", only letters, digits,
    ".", "-", "_" kept ("drumdiff kit" -> "drumdiff_kit")."""
    check_name(name)
    stem = re.sub(r"[^\w.-]+", "", name.strip().replace(" ", "_"), flags=re.ASCII).strip(".")
    return stem or "kit"


def check_name(name: str) -> None:
    """Refuse a kit name that no sampler can show: empty, over MAX_NAME characters, control characters."""
    if not isinstance(name, str) or not name.strip():
        raise DrumdiffError("the kit name must not be empty")
    if len(name) > MAX_NAME:
        raise DrumdiffError(f"the kit name must be at most {MAX_NAME} characters, got {len(name)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise DrumdiffError(f"the kit name {name!r} contains control characters")


def check_round_robins(count: object) -> int:
    """The number of takes per pad, 1 to MAX_ROUND_ROBINS."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ROUND_ROBINS:
        raise DrumdiffError(
            f"round robins must be a whole number from 1 to {MAX_ROUND_ROBINS} (Hydrogen's limit of layers "
            f"per instrument), got {count!r}"
        )
    return count


def write_formats(
    folder: Path,
    *,
    formats: list[str],
    stem: str,
    name: str,
    pads: list[PadFiles],
    info: str,
    release_s: float,
) -> list[str]:
    """Write the kit files of `formats` (besides the samples) into `folder`; returns their relative paths."""
    written: list[str] = []
    if "sfz" in formats:
        written.append(write_sfz(folder / f"{stem}.sfz", name=name, pads=pads, info=info))
    if "hydrogen" in formats:
        written += write_hydrogen(folder, stem=stem, name=name, pads=pads, info=info)
    if "dspreset" in formats:
        written.append(write_dspreset(folder / f"{stem}.dspreset", pads=pads, release_s=release_s))
    return written


def _write_bytes(path: Path, data: bytes) -> str:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path.name


# ---------------------------------------------------------------------------------------------- SFZ


def write_sfz(path: Path, *, name: str, pads: list[PadFiles], info: str) -> str:
    """An SFZ instrument: one-shot regions at each pad's key, round robins by seq_position."""
    lines = [f"// {_one_line(name)}: {_one_line(info)}", "", "<global>", "loop_mode=one_shot", ""]
    for entry in pads:
        pad, takes = entry.pad, entry.samples
        lines += ["<group>", f"group_label={_one_line(pad.title)}", f"key={pad.note}"]
        if len(takes) > 1:
            lines.append(f"seq_length={len(takes)}")
        if entry.chokes:
            lines += ["group=1", "off_by=1"]
        for position, sample in enumerate(takes, start=1):
            seq = f" seq_position={position}" if len(takes) > 1 else ""
            lines.append(f"<region> sample={sample}{seq}")
        lines.append("")
    return _write_bytes(path, "\n".join(lines).encode("utf-8"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- Hydrogen


def write_hydrogen(folder: Path, *, stem: str, name: str, pads: list[PadFiles], info: str) -> list[str]:
    """`drumkit.xml` (samples under samples/) and `STEM.h2drumkit` (Hydrogen's archive layout)."""
    in_folder = hydrogen_xml(name=name, pads=pads, info=info)
    flat = [PadFiles(p.pad, tuple(PurePosixPath(s).name for s in p.samples)) for p in pads]
    archived = hydrogen_xml(name=name, pads=flat, info=info)
    xml_name = _write_bytes(folder / HYDROGEN_XML, in_folder)
    members = [(f"{stem}/{HYDROGEN_XML}", archived)]
    for entry in pads:
        for sample in entry.samples:
            members.append((f"{stem}/{PurePosixPath(sample).name}", (folder / sample).read_bytes()))
    archive = _write_bytes(folder / f"{stem}.h2drumkit", _tar_gz(members))
    return [xml_name, archive]


def hydrogen_xml(*, name: str, pads: list[PadFiles], info: str) -> bytes:
    """A `drumkit.xml` that validates against Hydrogen 1.2's drumkit.xsd (Debian's hydrogen-data)."""
    ET.register_namespace("", HYDROGEN_NS)

    def sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
        element = ET.SubElement(parent, f"{{{HYDROGEN_NS}}}{tag}")
        if text is not None:
            element.text = str(text)
        return element

    root = ET.Element(f"{{{HYDROGEN_NS}}}drumkit_info")
    for tag, text in (("name", name), ("author", "drumdiff"), ("info", info), ("license", ""),
                      ("image", ""), ("imageLicense", "")):  # fmt: skip
        sub(root, tag, text)
    component = sub(sub(root, "componentList"), "drumkitComponent")
    for tag, text in (("id", 0), ("name", "Main"), ("volume", 1)):
        sub(component, tag, text)
    instruments = sub(root, "instrumentList")
    for index, entry in enumerate(pads):
        pad = entry.pad
        instrument = sub(instruments, "instrument")
        fields: list[tuple[str, object]] = [
            ("id", index), ("name", pad.title), ("volume", 1), ("isMuted", "false"), ("isSoloed", "false"),
            ("pan_L", 1), ("pan_R", 1), ("pitchOffset", 0), ("randomPitchFactor", 0), ("gain", 1),
            ("applyVelocity", "true"), ("filterActive", "false"), ("filterCutoff", 1), ("filterResonance", 0),
            ("Attack", 0), ("Decay", 0), ("Sustain", 1), ("Release", 1000),
            ("muteGroup", 0 if entry.chokes else -1), ("midiOutChannel", -1), ("midiOutNote", pad.note),
            ("isStopNote", "false"),
            ("sampleSelectionAlgo", "ROUND_ROBIN" if len(entry.samples) > 1 else "VELOCITY"),
            ("isHihat", -1), ("lower_cc", 0), ("higher_cc", 127),
            ("FX1Level", 0), ("FX2Level", 0), ("FX3Level", 0), ("FX4Level", 0),
        ]  # fmt: skip
        for tag, text in fields:
            sub(instrument, tag, text)
        part = sub(instrument, "instrumentComponent")
        sub(part, "component_id", 0)
        sub(part, "gain", 1)
        for sample in entry.samples:  # every take over the whole velocity range: ROUND_ROBIN cycles them
            layer = sub(part, "layer")
            for tag, text in (("filename", sample), ("min", 0), ("max", 1), ("gain", 1), ("pitch", 0)):
                sub(layer, tag, text)
    return _xml_bytes(root, indent=" ")


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    """A gzipped tar (pax, as Hydrogen writes) of (name, data) files: mode 0644, no owner, time 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as zipped:
        zipped.write(raw.getvalue())
    return packed.getvalue()


# ---------------------------------------------------------------------------------------------- Decent Sampler


def write_dspreset(path: Path, *, pads: list[PadFiles], release_s: float) -> str:
    """A Decent Sampler preset: a group per pad, its takes as round robins (seqMode/seqPosition).

    The release is as long as a clip, so that a short MIDI note lets the hit ring out."""
    root = ET.Element("DecentSampler", minVersion="1.0.0")
    groups = ET.SubElement(root, "groups", attack="0", decay="0", sustain="1", release=f"{release_s:.3f}")
    for entry in pads:
        pad, takes = entry.pad, entry.samples
        attributes = {"name": pad.title}
        if len(takes) > 1:
            attributes.update(seqMode="round_robin", seqLength=str(len(takes)))
        if entry.chokes:
            attributes.update(tags=CHOKE_CLASS, silencedByTags=CHOKE_CLASS, silencingMode="fast")
        group = ET.SubElement(groups, "group", attributes)
        for position, sample in enumerate(takes, start=1):
            note = str(pad.note)
            sample_attributes = {"path": sample, "rootNote": note, "loNote": note, "hiNote": note}
            if len(takes) > 1:
                sample_attributes["seqPosition"] = str(position)
            ET.SubElement(group, "sample", sample_attributes)
    return _write_bytes(path, _xml_bytes(root, indent="  "))


def _xml_bytes(root: ET.Element, *, indent: str) -> bytes:
    ET.indent(root, space=indent)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"
