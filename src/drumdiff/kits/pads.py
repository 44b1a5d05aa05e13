"""The pads of a kit: notes of the General MIDI drum map, each with a short name, a title and a class.

A pad is asked for by a short name (`kick`, `tom-low`), by its General MIDI name in any spelling
(`Low Conga`, `low-conga`) or by its note number (`45`). Its title is what the kit files call the
instrument; its class is what `drumdiff data prepare` would give that title (the one name table,
`drumdiff.data.DEFAULT_HYDROGEN_MAPPING`), so a kit read back gets the classes it was made from.

Only the standard library is imported at module level (`drumdiff kit --help` stays instant); the GM names
and the class table are imported when a pad is looked up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from drumdiff.errors import DrumdiffError

# Short names: name -> (note, title, ordering). Pads of one ordering family get the first takes of that
# family sorted so that the notes mean what they say (see drumdiff.kits.make): toms from dark to bright by
# rising note, hi-hats from the shortest tail (pedal) to the longest (open); the number is the rank.
SHORT_NAMES: dict[str, tuple[int, str, tuple[str, int] | None]] = {
    "kick": (36, "Kick", None),
    "kick-2": (35, "Kick 2", None),
    "side-stick": (37, "Side Stick", None),
    "snare": (38, "Snare", None),
    "clap": (39, "Clap", None),
    "snare-2": (40, "Snare 2", None),
    "tom-floor-low": (41, "Low Floor Tom", ("tom", 41)),
    "hihat-closed": (42, "Closed Hi-Hat", ("hihat", 1)),
    "tom-floor-high": (43, "High Floor Tom", ("tom", 43)),
    "hihat-pedal": (44, "Pedal Hi-Hat", ("hihat", 0)),
    "tom-low": (45, "Low Tom", ("tom", 45)),
    "hihat-open": (46, "Open Hi-Hat", ("hihat", 2)),
    "tom-mid": (47, "Mid Tom", ("tom", 47)),
    "tom-mid-high": (48, "High-Mid Tom", ("tom", 48)),
    "crash": (49, "Crash", None),
    "tom-high": (50, "High Tom", ("tom", 50)),
    "ride": (51, "Ride", None),
    "china": (52, "China", None),
    "ride-bell": (53, "Ride Bell", None),
    "tambourine": (54, "Tambourine", None),
    "splash": (55, "Splash", None),
    "cowbell": (56, "Cowbell", None),
    "crash-2": (57, "Crash 2", None),
    "shaker": (82, "Shaker", None),
}
# kick, snare, closed and open hi-hat, three toms and three short percussion hits. Cymbals are left out of
# the default: a model clip (0.74 s) is far shorter than a crash or ride rings.
DEFAULT_PADS: tuple[str, ...] = (
    "kick", "snare", "hihat-closed", "hihat-open", "tom-low", "tom-mid", "tom-high",
    "side-stick", "tambourine", "cowbell",
)  # fmt: skip


@dataclass(frozen=True)
class Pad:
    """One pad: a MIDI note, the name it is asked for by, its title in the kit files, and its class."""

    note: int
    name: str  # short name or slug of the GM name: file names, --pads
    title: str  # the instrument name written into the kit files
    gm_name: str  # the General MIDI name of the note
    class_name: str  # a class of DEFAULT_HYDROGEN_MAPPING: what `data prepare` reads the title as
    order: tuple[str, int] | None = None  # (family, rank): see SHORT_NAMES


def slug(text: str) -> str:
    """`Low Floor Tom` -> `low-floor-tom`: lower case, runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")


def pad_for(value: str | int) -> Pad:
    """The pad named by a short name, a GM name (any case or punctuation) or a note number 35-87."""
    from drumdiff.data.regions import GM_PERCUSSION

    text = str(value).strip()
    note: int | None = None
    if re.fullmatch(r"\d+", text):
        note = int(text)
        if note not in GM_PERCUSSION:
            low, high = min(GM_PERCUSSION), max(GM_PERCUSSION)
            raise DrumdiffError(
                f"pad {text}: note {note} has no General MIDI drum name; choose a note from {low} to {high}"
            )
    else:
        key = slug(text)
        if key in SHORT_NAMES:
            return _short_pad(key)
        note = next((n for n, gm in GM_PERCUSSION.items() if slug(gm) == key), None)
        if note is None:
            raise DrumdiffError(
                f"unknown pad {text!r}; choose one of {', '.join(SHORT_NAMES)}, a General MIDI drum name "
                f"(e.g. 'low conga') or a note number from {min(GM_PERCUSSION)} to {max(GM_PERCUSSION)}"
            )
    short = next((name for name, (n, _, _) in SHORT_NAMES.items() if n == note), None)
    if short is not None:
        return _short_pad(short)
    gm = GM_PERCUSSION[note]
    return Pad(note=note, name=slug(gm), title=gm, gm_name=gm, class_name=_class_of(gm, note))


def _short_pad(name: str) -> Pad:
    from drumdiff.data.regions import GM_PERCUSSION

    note, title, order = SHORT_NAMES[name]
    return Pad(note, name, title, GM_PERCUSSION[note], _class_of(title, note), order)


def _class_of(title: str, note: int) -> str:
    from drumdiff.data.sources import DEFAULT_HYDROGEN_MAPPING, class_for_instrument

    found = class_for_instrument(title, DEFAULT_HYDROGEN_MAPPING)
    if found is None:  # every title of the table is matched (tested); a guard for edits to either
        raise DrumdiffError(f"pad {title!r} (note {note}) names no class of the class table")
    return found


def parse_pads(pads: str | Iterable[str | int] | None) -> list[Pad]:
    """Pads from `--pads` text (`kick,snare,42,tom-low`) or a list of names and notes; None: DEFAULT_PADS.

    Order is kept; a note asked for twice (`kick,36`) or an empty list is a DrumdiffError.
    """
    if pads is None:
        pads = DEFAULT_PADS
    items = [str(p).strip() for p in (pads.split(",") if isinstance(pads, str) else pads)]
    if "" in items and any(items):
        raise DrumdiffError(f"pads {pads!r}: an empty item; separate pads with single commas")
    found: list[Pad] = []
    for item in filter(None, items):
        pad = pad_for(item)
        twin = next((p for p in found if p.note == pad.note), None)
        if twin is not None:
            raise DrumdiffError(f"pad {item!r} is note {pad.note}, which {twin.name!r} already plays")
        found.append(pad)
    if not found:
        raise DrumdiffError(f"no pads given; choose some of {', '.join(SHORT_NAMES)}")
    return found
