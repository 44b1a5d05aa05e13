"""Hydrogen drum kits: the sample files a `drumkit.xml` lists, with each one's instrument, kit and licence.

A kit reader only lists files and names them; `sources.find_sources` turns instrument names into classes.
The readers of other kit formats (`soundfont.py`, `sfz.py`) sit beside this one.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from drumdiff.data.regions import licence_notes
from drumdiff.errors import DrumdiffError


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
        notes = licence_notes(xml_path.parent)
        license_ = f"not stated in drumkit.xml; {notes}" if notes else ""
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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop an XML namespace: "{http://www.hydrogen-music.org/drumkit}name"


def _child_text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""
