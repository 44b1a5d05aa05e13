"""SoundFont kits (`.sf2`, and `.sf3`, which stores each sample as Ogg Vorbis): the drum presets' zones as clips.

The RIFF is parsed here with `struct` (the format is small: `RIFF sfbk` holding `LIST INFO`, `LIST sdta` with
`smpl` and optionally `sm24`, and `LIST pdta` with the nine tables phdr, pbag, pmod, pgen, inst, ibag, imod,
igen, shdr). Only the headers and tables are read here; a worker later cuts each region's samples out of the
file (`regions.read_region`). Every instrument zone that a chosen preset reaches becomes one clip: velocity
layers and alternative samples are separate zones and so separate clips; a linked left/right pair of zones
over the same keys and velocities is one stereo clip.

A file whose RIFF is truncated or lies about its sizes, or whose tables point outside themselves, raises
`KitFileError` (one rejection for the file); a zone whose sample lies outside the sample data is one
"bad region" rejection, and the other zones go on.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from drumdiff.data.regions import KitFileError, KitRegion, Region
from drumdiff.errors import DrumdiffError

DRUM_BANK = 128  # where SoundFonts keep their drum kits (GM percussion on bank 128)
PresetSpec = tuple[tuple[int | None, int | None], ...]  # (bank, program) pairs, None = any
DEFAULT_PRESETS: PresetSpec = ((DRUM_BANK, None),)

_RECORD = {"phdr": "<20sHHHIII", "pbag": "<HH", "pgen": "<HH", "inst": "<20sH", "ibag": "<HH", "igen": "<HH"}
_RECORD["shdr"] = "<20sIIIIIBbHH"
# Generator operators used here (SoundFont 2.04, section 8.1.2).
START_OFFSET, END_OFFSET, START_COARSE, END_COARSE = 0, 1, 4, 12
INSTRUMENT, KEY_RANGE, VEL_RANGE, ATTENUATION = 41, 43, 44, 48
COARSE_TUNE, FINE_TUNE, SAMPLE_ID, SCALE_TUNING, ROOT_KEY = 51, 52, 53, 56, 58
_RANGES = (KEY_RANGE, VEL_RANGE)
RIGHT, LEFT, VORBIS, ROM = 2, 4, 0x10, 0x8000  # sampleType bits
_FULL = 0x7F00  # a key or velocity range of 0-127


def parse_presets(spec: str) -> PresetSpec:
    """`--soundfont-presets`: "128:*" (the default: every drum kit), "0:0,128:25", "*" (every preset)."""
    pairs: list[tuple[int | None, int | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        if part == "*":
            pairs.append((None, None))
            continue
        bank, sep, program = part.partition(":")
        try:
            pairs.append(
                (
                    None if bank == "*" else int(bank),
                    None if program in ("*", "") or not sep else int(program),
                )
            )
        except ValueError:
            raise DrumdiffError(
                f"--soundfont-presets: {part!r} is not BANK:PROGRAM (numbers or *), e.g. 128:* or 0:0"
            ) from None
    return tuple(pairs)


def read_soundfont(path: str | os.PathLike, *, presets: PresetSpec = DEFAULT_PRESETS) -> list[KitRegion]:
    """Every zone of the chosen presets as a clip, and one "not a drum preset" entry per preset left out.

    Raises `KitFileError` when the file cannot be read as a SoundFont.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            info, smpl, sm24, tables = _read_riff(handle, os.fstat(handle.fileno()).st_size)
    except OSError as error:
        raise KitFileError(f"cannot read {path}: {error.strerror or error}") from error
    font = _Font(path, info, smpl, sm24, tables)
    return list(font.regions(presets))


def _read_riff(
    handle: BinaryIO, size: int
) -> tuple[dict[str, str], tuple[int, int], tuple[int, int] | None, dict[str, list[tuple]]]:
    """(INFO texts, smpl (offset, bytes), sm24 or None, the pdta tables as records), checking every size."""
    head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise KitFileError("not a SoundFont (no RIFF sfbk header)")
    riff_end = 8 + struct.unpack("<I", head[4:8])[0]
    if riff_end > size:
        raise KitFileError(
            f"truncated or lying RIFF: its header claims {riff_end} bytes, the file has {size}"
        )
    lists: dict[bytes, dict[bytes, tuple[int, int]]] = {}
    for chunk_id, offset, length in _chunks(handle, 12, riff_end):
        if chunk_id == b"LIST" and length >= 4:
            handle.seek(offset)
            kind = handle.read(4)
            lists[kind] = {cid: (off, n) for cid, off, n in _chunks(handle, offset + 4, offset + length)}
    for kind in (b"sdta", b"pdta"):
        if kind not in lists:
            raise KitFileError(f"no LIST {kind.decode()} chunk")
    info = {}
    for chunk_id, (offset, length) in lists.get(b"INFO", {}).items():
        if length <= 4096:  # names, copyright, comments; ifil/iver are binary and unused
            handle.seek(offset)
            info[chunk_id.decode("latin-1")] = _text(handle.read(length))
    if b"smpl" not in lists[b"sdta"]:
        raise KitFileError("no smpl chunk (sample data)")
    tables: dict[str, list[tuple]] = {}
    for name, fmt in _RECORD.items():
        if name.encode() not in lists[b"pdta"]:
            raise KitFileError(f"no {name} chunk in pdta")
        offset, length = lists[b"pdta"][name.encode()]
        record = struct.calcsize(fmt)
        if length % record or length < record:
            raise KitFileError(
                f"{name} chunk of {length} bytes is not a whole number of {record}-byte records"
            )
        handle.seek(offset)
        tables[name] = list(struct.iter_unpack(fmt, handle.read(length)))
    return info, lists[b"sdta"][b"smpl"], lists[b"sdta"].get(b"sm24"), tables


def _chunks(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, data offset, size) of the RIFF chunks in [start, end); a size past `end` raises `KitFileError`."""
    position = start
    while position + 8 <= end:
        handle.seek(position)
        chunk_id, length = struct.unpack("<4sI", handle.read(8))
        if position + 8 + length > end:
            raise KitFileError(
                f"truncated or lying RIFF: chunk {chunk_id.decode('latin-1')!r} at byte {position} claims "
                f"{length} bytes, only {end - position - 8} follow"
            )
        yield chunk_id, position + 8, length
        position += 8 + length + (length & 1)  # chunks are padded to an even size


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def _signed(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


def _range(value: int) -> tuple[int, int]:
    return value & 0xFF, value >> 8


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None


class _Font:
    """The parsed tables of one SoundFont, and the walk from presets to instrument zones to regions."""

    def __init__(
        self,
        path: Path,
        info: dict[str, str],
        smpl: tuple[int, int],
        sm24: tuple[int, int] | None,
        tables: dict[str, list[tuple]],
    ) -> None:
        self.path, self.info, self.tables = path, info, tables
        self.smpl_offset, self.smpl_bytes = smpl
        # sm24 holds the low byte of each 16-bit sample; one that is too short is ignored, as the spec says.
        self.sm24 = sm24[0] if sm24 and sm24[1] >= self.smpl_bytes // 2 else None
        for name in ("phdr", "inst", "shdr", "pbag", "ibag"):
            if not tables[name]:
                raise KitFileError(f"empty {name} table")

    def regions(self, presets: PresetSpec) -> Iterator[KitRegion]:
        phdr = self.tables["phdr"]
        for p in range(len(phdr) - 1):  # the last record is the terminal "EOP"
            raw_name, program, bank, bag = phdr[p][:4]
            name = _text(raw_name).replace("/", "-") or f"preset {bank}:{program}"
            label = f"{bank:03d}:{program:03d} {name}"
            kit = f"{self.path.stem}/{name}"
            if not any((b is None or b == bank) and (q is None or q == program) for b, q in presets):
                detail = f"preset {label} (bank {bank}) is not chosen; see --soundfont-presets"
                yield KitRegion(member=label, kit=kit, reject="not a drum preset", detail=detail)
                continue
            preset_global, preset_zones = self._zones("pbag", "pgen", bag, phdr[p + 1][3], INSTRUMENT)
            seen: dict[str, int] = {}
            for zone in preset_zones:
                generators = {**preset_global, **zone}
                for region in self._instrument(generators, label=label, kit=kit):
                    count = seen[region.member] = seen.get(region.member, 0) + 1
                    if count > 1:  # the same sample, keys and velocities twice (layered): keep both, apart
                        region = replace(region, member=f"{region.member} ({count})")
                    yield region

    def _zones(
        self, bag_table: str, gen_table: str, first: int, last: int, terminal: int
    ) -> tuple[dict, list]:
        """(global zone, other zones) of bags [first, last), each as {operator: raw amount}."""
        bags, gens = self.tables[bag_table], self.tables[gen_table]
        if not 0 <= first <= last < len(bags):
            raise KitFileError(f"{bag_table} indices {first}..{last} outside its {len(bags)} records")
        zones = []
        for b in range(first, last):
            lo, hi = bags[b][0], bags[b + 1][0]
            if not 0 <= lo <= hi <= len(gens):
                raise KitFileError(f"{gen_table} indices {lo}..{hi} outside its {len(gens)} records")
            zones.append({oper: amount for oper, amount in gens[lo:hi]})
        # The first zone is global when it lacks the terminal generator; other zones without one are ignored.
        global_zone = zones.pop(0) if zones and terminal not in zones[0] else {}
        return global_zone, [z for z in zones if terminal in z]

    def _instrument(self, preset: dict[int, int], *, label: str, kit: str) -> Iterator[KitRegion]:
        inst = self.tables["inst"]
        index = preset[INSTRUMENT]
        if index >= len(inst) - 1:
            raise KitFileError(f"preset {label} names instrument {index}; the file has {len(inst) - 1}")
        inst_name = _text(inst[index][0])
        inst_global, zones = self._zones("ibag", "igen", inst[index][1], inst[index + 1][1], SAMPLE_ID)
        merged = [{**inst_global, **zone} for zone in zones]
        paired: set[int] = set()
        for k, generators in enumerate(merged):
            if k in paired:
                continue
            keys = _intersect(_range(preset.get(KEY_RANGE, _FULL)), _range(generators.get(KEY_RANGE, _FULL)))
            vel = _intersect(_range(preset.get(VEL_RANGE, _FULL)), _range(generators.get(VEL_RANGE, _FULL)))
            if keys is None or vel is None:
                continue  # the preset zone does not reach this instrument zone
            samples = [self._sample(generators[SAMPLE_ID], label)]
            if samples[0]["type"] & (LEFT | RIGHT):  # a stereo half: find its other half over the same notes
                for j, other in enumerate(merged):
                    if (
                        j != k
                        and j not in paired
                        and other[SAMPLE_ID] == samples[0]["link"]
                        and all(other.get(r, _FULL) == generators.get(r, _FULL) for r in _RANGES)
                    ):
                        paired.add(j)
                        samples.append(self._sample(other[SAMPLE_ID], label))
                        samples.sort(key=lambda s: 0 if s["type"] & LEFT else 1)  # left first
                        break
            yield self._region(preset, generators, samples, keys=keys, vel=vel, label=label, kit=kit,
                               inst_name=inst_name)  # fmt: skip

    def _sample(self, index: int, label: str) -> dict[str, Any]:
        shdr = self.tables["shdr"]
        if index >= len(shdr) - 1:
            raise KitFileError(f"preset {label} names sample {index}; the file has {len(shdr) - 1}")
        raw_name, start, end, _, _, rate, pitch, correction, link, kind = shdr[index]
        return {"name": _text(raw_name), "start": start, "end": end, "rate": rate, "pitch": pitch,
                "correction": correction, "link": link, "type": kind}  # fmt: skip

    def _region(
        self,
        preset: dict[int, int],
        generators: dict[int, int],
        samples: list[dict[str, Any]],
        *,
        keys: tuple[int, int],
        vel: tuple[int, int],
        label: str,
        kit: str,
        inst_name: str,
    ) -> KitRegion:
        """One clip: the zone's samples, played at its root key when the zone covers it, else its lowest key."""
        first = samples[0]
        root = _signed(generators.get(ROOT_KEY, 0xFFFF))
        if not 0 <= root <= 127:
            root = first["pitch"] if first["pitch"] <= 127 else 60
        note = root if keys[0] <= root <= keys[1] else keys[0]
        # Preset generators add to the instrument's (SoundFont 2.04, 9.4); scale tuning is cents per key.
        scale = _signed(generators.get(SCALE_TUNING, 100)) + _signed(preset.get(SCALE_TUNING, 0))
        coarse = _signed(generators.get(COARSE_TUNE, 0)) + _signed(preset.get(COARSE_TUNE, 0))
        fine = _signed(generators.get(FINE_TUNE, 0)) + _signed(preset.get(FINE_TUNE, 0))
        pitch = (note - root) * scale / 100 + coarse + (fine + first["correction"]) / 100
        attenuation = _signed(generators.get(ATTENUATION, 0)) + _signed(preset.get(ATTENUATION, 0))  # cB
        names = " + ".join(s["name"] for s in samples)
        member = f"{label.split(' ', 1)[1]}/{note:03d} v{vel[0]:03d}-{vel[1]:03d} {names}"
        provenance = {
            "kit": kit,
            "preset": label,
            "sf2_instrument": inst_name,
            "sample": names,
            "note": note,
            "keys": list(keys),
            "velocity": list(vel),
            "soundfont": self.info.get("INAM", ""),
            "author": self.info.get("IENG", ""),
            "copyright": self.info.get("ICOP", ""),
            "stated_license": self.info.get("ICOP", "") or self.info.get("ICMT", "")[:200],
        }
        common = {"member": member, "kit": kit, "note": note, "names": (names,), "labels": (inst_name,)}
        region = self._cut(generators, samples, pitch=pitch, gain_db=-attenuation / 10)
        if isinstance(region, str):
            return KitRegion(**common, provenance=provenance, reject="bad region", detail=region)
        return KitRegion(**common, region=region, provenance=provenance)

    def _cut(
        self, generators: dict[int, int], samples: list[dict[str, Any]], *, pitch: float, gain_db: float
    ) -> Region | str:
        """The zone's `Region`, or why it has none (a sample outside the sample data, a ROM sample)."""
        start_shift = _signed(generators.get(START_OFFSET, 0)) + 32768 * _signed(
            generators.get(START_COARSE, 0)
        )
        end_shift = _signed(generators.get(END_OFFSET, 0)) + 32768 * _signed(generators.get(END_COARSE, 0))
        vorbis = bool(samples[0]["type"] & VORBIS)
        if samples[0]["rate"] <= 0:
            return f"sample {samples[0]['name']!r} states a sample rate of 0"
        spans, lsb = [], []
        for s in samples:
            if s["type"] & ROM:
                return f"sample {s['name']!r} is in a synthesizer's ROM, not in this file"
            if vorbis:  # SoundFont 3: start/end are byte offsets of the sample's Ogg stream in smpl
                start, end, limit, unit = s["start"], s["end"], self.smpl_bytes, "bytes"
            else:
                start, end = s["start"] + start_shift, s["end"] + end_shift
                limit, unit = self.smpl_bytes // 2, "frames"
            if not 0 <= start < end <= limit:
                return (
                    f"sample {s['name']!r} spans {unit} {start}..{end}; the sample data holds {limit} {unit}"
                )
            if vorbis:
                spans.append((self.smpl_offset + start, end - start))
            else:
                spans.append((self.smpl_offset + 2 * start, end - start))
                if self.sm24 is not None:
                    lsb.append(self.sm24 + start)
        return Region(
            file=str(self.path),
            kind="ogg" if vorbis else "pcm16",
            sample_rate=samples[0]["rate"],
            spans=tuple(spans),
            lsb=tuple(lsb),
            first=max(0, start_shift) if vorbis else 0,  # sf3: offsets count decoded frames
            pitch_semitones=round(pitch, 4),
            gain_db=round(gain_db, 3),
        )
