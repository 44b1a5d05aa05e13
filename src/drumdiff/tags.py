"""Provenance inside the audio files drumdiff writes, and reading it back (`drumdiff info`).

A generated clip says where it came from in standard chunks that DAWs and `ffprobe` show, so the facts travel
with the file when its sidecar JSON is left behind. Standard library only (soundfile only to recognise other
audio formats; no torch), so `drumdiff info` starts at once.

The tags are one flat `dict[str, str]` with these keys (`provenance_tags` makes them; it leaves out `date`
unless asked, because the same `drumdiff generate` command must write the same bytes):

| key          | value                                      | WAV                                        | FLAC (Vorbis comment)  |
|--------------|--------------------------------------------|--------------------------------------------|------------------------|
| `title`      | the file's stem (or the class)             | INFO `INAM`                                | `TITLE`                |
| `comment`    | one line for people: operation, class,     | INFO `ICMT`, bext Description (ASCII, 256  | `COMMENT`,             |
|              | seed, sampler, steps, guidance, model hash | bytes), iXML `NOTE`                        | `DESCRIPTION`          |
| `software`   | `drumdiff 0.1.0`                           | INFO `ISFT`                                | `SOFTWARE`             |
| `date`       | ISO 8601 UTC, `2025-01-31T12:00:00Z`;      | INFO `ICRD`, bext OriginationDate/Time     | `DATE`                 |
|              | only when the caller passes one            |                                            |                        |
| `provenance` | compact JSON of the generation record      | iXML `DRUMDIFF/PROVENANCE` (+ one element  | `DRUMDIFF_PROVENANCE`  |
|              |                                            | per field, e.g. `DRUMDIFF/MODEL_SHA256`)   |                        |

A tagged WAV is laid out `RIFF|RF64 WAVE: [ds64] fmt [fact PEAK ...] bext data LIST/INFO iXML`: bext (version
1, EBU Tech 3285) before the audio as broadcast tools expect, LIST/INFO after it because that is the only
place sox looks for it, iXML last. Every chunk is padded to an even size; the sample bytes are copied, never
re-encoded. (sox 14.4 parses a WAV's INFO but never prints it: `soxi -a` shows the comment of a FLAC only.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from drumdiff.errors import AudioError
from drumdiff.files import atomic_path

TAG_KEYS = ("title", "comment", "software", "date", "provenance")
ORIGINATOR = "drumdiff"  # bext Originator
_INFO_IDS = {"title": b"INAM", "comment": b"ICMT", "software": b"ISFT", "date": b"ICRD"}
_VORBIS_FIELDS = {
    "title": ("TITLE",),
    "comment": ("COMMENT", "DESCRIPTION"),
    "software": ("SOFTWARE",),
    "date": ("DATE",),
    "provenance": ("DRUMDIFF_PROVENANCE",),
}
# Record fields left out of the embedded provenance: about the request or the machine, not the clip (the
# sidecar JSON keeps them). Paths are cut to file names so a shared clip does not show the maker's folders.
_NOT_EMBEDDED = frozenset(
    {"file", "device", "threads", "torch_version", "timing", "n", "batch_size", "format"}
)
_RIFF_MAGICS = (b"RIFF", b"RF64", b"BW64")  # RF64 (EBU Tech 3306) and BW64 (ITU-R BS.2088) share a layout
_OURS = (b"bext", b"iXML")  # replaced whole; LIST/INFO is merged entry by entry
_BEXT = struct.Struct("<256s32s32s10s8sQH64s190s")  # bext v1 without CodingHistory: 602 bytes
_FLAC_STREAMINFO, _FLAC_VORBIS_COMMENT = 0, 4
_FLAC_MAX_BLOCK = 2**24 - 1
_Chunk = tuple[bytes, int, int]  # a RIFF chunk: (id, payload offset, payload size)
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# --- the tags of a generation record ----------------------------------------------------------------------


def provenance_tags(
    record: Mapping[str, Any], *, stem: str | None = None, date: str | None = None
) -> dict[str, str]:
    """The tags of a clip from its generation record (the dict `commands/session.py` writes to the sidecar).

    Keys: `title` (`stem`; default the record's `file` without suffix, else its class, else its operation),
    `comment`, `software`, `provenance`, and `date` only when given (ISO 8601): the same request writes the
    same bytes, so no clock reading goes into the file unless the caller wants one. Missing record fields are
    left out of the comment.
    """
    from drumdiff import __version__

    if stem is None:
        stem = Path(str(record["file"])).stem if record.get("file") else None
    title = stem or str(record.get("class_name") or record.get("operation") or "drumdiff")
    tags = {
        "title": _one_line(title),
        "comment": provenance_comment(record),
        "software": f"drumdiff {record.get('drumdiff_version') or __version__}",
        "provenance": json.dumps(
            compact_provenance(record), ensure_ascii=False, separators=(",", ":"), default=str
        ),
    }
    if date is not None:
        tags["date"] = date
    return tags


def iso_date(unix_time: float | None = None) -> str:
    """A `date` tag: ISO 8601 UTC to the second, `2025-01-31T12:00:00Z` (default: now)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if unix_time is None else unix_time))


def compact_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without request/machine fields (`n`, `device`, `timing`, ...), paths cut to file names."""
    compact: dict[str, Any] = {}
    for key, value in record.items():
        if key in _NOT_EMBEDDED:
            continue
        if key == "model" and isinstance(value, Mapping):
            name = {"name": Path(str(value["path"])).name} if value.get("path") else {}
            value = {**name, **{k: v for k, v in value.items() if k != "path"}}
        elif key == "input" and isinstance(value, str):
            value = Path(value).name
        elif key == "inputs" and isinstance(value, (list, tuple)):
            value = [Path(str(item)).name for item in value]
        compact[key] = value
    return compact


def provenance_comment(record: Mapping[str, Any]) -> str:
    """One line: `drumdiff 0.1.0 generate: class kick, seed 12, ddim 20 steps, guidance 2, model sha256 ...`."""
    from drumdiff import __version__

    version = record.get("drumdiff_version") or __version__
    parts = [f"class {record['class_name']}" if record.get("class_name") else "unconditional"]
    if record.get("seed") is not None:
        parts.append(f"seed {record['seed']}")
    sampler, steps = record.get("sampler"), record.get("steps")
    if sampler or steps is not None:
        parts.append(" ".join(str(p) for p in (sampler, None if steps is None else f"{steps} steps") if p))
    if record.get("guidance") is not None:
        parts.append(f"guidance {_number(record['guidance'])}")
    model = record.get("model")
    if isinstance(model, Mapping) and model.get("sha256"):
        parts.append(f"model sha256 {model['sha256']}")
    return _one_line(f"drumdiff {version} {record.get('operation') or 'clip'}: {', '.join(parts)}")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_tags(tags: Mapping[str, str], *, source: str | os.PathLike) -> dict[str, str]:
    """`tags` as a plain dict, or an `AudioError` naming `source`: keys from `TAG_KEYS`, text without NUL."""
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if key not in TAG_KEYS:
            raise AudioError(f"cannot tag {source}: unknown tag {key!r}; tags are {', '.join(TAG_KEYS)}")
        if not isinstance(value, str) or "\0" in value:
            raise AudioError(f"cannot tag {source}: tag {key!r} must be text without NUL characters")
        checked[key] = value
    return checked


# --- writing ----------------------------------------------------------------------------------------------


def write_tags(path: str | os.PathLike, tags: Mapping[str, str]) -> Path:
    """Add or replace the tags of a WAV (RIFF/RF64) or FLAC file in place, atomically; see `write_wav_tags`."""
    path = Path(path)
    with _open(path) as handle:
        kind = _kind(handle)
    if kind == "WAV":
        return write_wav_tags(path, tags)
    if kind == "FLAC":
        return write_flac_tags(path, tags)
    raise AudioError(f"cannot tag {path}: not a WAV or FLAC file")


def write_wav_tags(path: str | os.PathLike, tags: Mapping[str, str]) -> Path:
    """Put `tags` into a WAV file: its LIST/INFO entries for these keys, a bext and an iXML chunk.

    Keys the file has and `tags` does not name are kept, other programs' INFO entries and every other chunk
    (fmt, fact, PEAK, data, cue, ...) too, byte for byte; earlier bext and iXML chunks and several LIST/INFO
    chunks become one each. The file is rewritten atomically; tagging twice alike gives the same bytes.
    """
    path = Path(path)
    tags = check_tags(tags, source=path)
    if not tags:
        return path
    with atomic_path(path) as tmp, _open(path) as src, open(tmp, "wb") as dst:
        tags = {**_read_wav(src, path)["tags"], **tags}
        magic, chunks, ds64 = _parse_riff(src, path)
        layout = _wav_layout(src, chunks, tags)
        body = 4 + sum(8 + _size(p) + (_size(p) & 1) for _, p in layout)  # "WAVE" + the chunks
        if magic == b"RIFF" and body > 0xFFFFFFFF:
            raise AudioError(f"cannot tag {path}: the tagged file would pass the 4 GB limit of a WAV file")
        dst.write(magic + struct.pack("<I", body if magic == b"RIFF" else 0xFFFFFFFF) + b"WAVE")
        for chunk_id, payload in layout:
            if chunk_id == b"ds64":  # RF64's 64-bit sizes: only the file size changes
                payload = struct.pack("<Q", body) + _read(src, (chunk_id, *payload))[8:]
            size = _size(payload)
            big = ds64 is not None and chunk_id == b"data" and size == ds64[1]  # RF64: the size is in ds64
            dst.write(chunk_id + struct.pack("<I", 0xFFFFFFFF if big else size))
            if isinstance(payload, bytes):
                dst.write(payload)
            else:
                _copy(src, dst, offset=payload[0], size=size)
            if size & 1:
                dst.write(b"\0")
    return path


_Payload = bytes | tuple[int, int]  # new bytes, or (offset, size) of the source file's bytes


def _wav_layout(src: BinaryIO, chunks: list[_Chunk], tags: Mapping[str, str]) -> list[tuple[bytes, _Payload]]:
    """The chunks of the tagged file in order: the source's, with bext before data, LIST/INFO and iXML after."""
    info = {_INFO_IDS[key]: _zstr(value) for key, value in tags.items() if key in _INFO_IDS}
    for chunk in chunks:
        if _is_info(src, chunk):
            for entry_id, value in _read_info_entries(src, chunk):
                info.setdefault(entry_id, value)  # other programs' entries stay
    layout: list[tuple[bytes, _Payload]] = []
    for chunk in chunks:
        chunk_id = chunk[0]
        if chunk_id in _OURS or _is_info(src, chunk):
            continue
        if chunk_id == b"data" and not any(c == b"data" for c, _ in layout):
            layout.append((b"bext", _bext(tags.get("comment", ""), tags.get("date", ""))))
            layout.append((chunk_id, chunk[1:]))
            layout.append((b"LIST", b"INFO" + b"".join(_chunk(i, v) for i, v in info.items())))
            layout.append((b"iXML", _ixml(tags)))
        else:
            layout.append((chunk_id, chunk[1:]))
    return layout


def write_flac_tags(path: str | os.PathLike, tags: Mapping[str, str]) -> Path:
    """Put `tags` into a FLAC file's VORBIS_COMMENT block (fields of other names are kept), atomically.

    Other metadata blocks and the audio frames are kept byte for byte; the vendor string of an existing
    comment block (the encoder library) is kept too.
    """
    path = Path(path)
    tags = check_tags(tags, source=path)
    if not tags:
        return path
    ours = {name: value for key, value in tags.items() for name in _VORBIS_FIELDS[key]}
    with atomic_path(path) as tmp, _open(path) as src, open(tmp, "wb") as dst:
        prefix, blocks, frames = _parse_flac(src, path)
        vendor, comments = "drumdiff", []
        old = next((b for b in blocks if b[0] == _FLAC_VORBIS_COMMENT), None)
        if old is not None:
            vendor, comments = _read_vorbis(src, old, path)
        comments = [(k, v) for k, v in comments if k.upper() not in ours] + list(ours.items())
        comment_block = _vorbis_block(vendor, comments)
        if len(comment_block) > _FLAC_MAX_BLOCK:
            raise AudioError(f"cannot tag {path}: the tags pass FLAC's 16 MB block limit")
        kept = [b for b in blocks if b[0] != _FLAC_VORBIS_COMMENT]
        layout: list[tuple[int, _Payload]] = [
            (kept[0][0], kept[0][1:]),  # STREAMINFO stays first
            (_FLAC_VORBIS_COMMENT, comment_block),
            *((b[0], b[1:]) for b in kept[1:]),
        ]
        _copy(src, dst, offset=0, size=prefix)  # an ID3v2 tag before "fLaC", if any
        dst.write(b"fLaC")
        for i, (block_type, payload) in enumerate(layout):
            size = _size(payload)
            last = 0x80 if i == len(layout) - 1 else 0
            dst.write(bytes([last | block_type]) + size.to_bytes(3, "big"))
            if isinstance(payload, bytes):
                dst.write(payload)
            else:
                _copy(src, dst, offset=payload[0], size=size)
        src.seek(frames)
        shutil.copyfileobj(src, dst, 1 << 20)
    return path


def _size(payload: _Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else payload[1]


def _copy(src: BinaryIO, dst: BinaryIO, *, offset: int, size: int) -> None:
    src.seek(offset)
    while size > 0:
        block = src.read(min(size, 1 << 20))
        if not block:
            raise AudioError(f"{src.name}: the file changed while it was being tagged")
        dst.write(block)
        size -= len(block)


def _zstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: id, little-endian size, payload, a pad byte when the size is odd."""
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _bext(comment: str, date: str) -> bytes:
    """A BWF bext chunk, version 1 (EBU Tech 3285): Description, Originator, OriginationDate/Time."""
    description = comment.encode("ascii", "replace")
    if len(description) > 256:
        description = description[:253] + b"..."
    match = re.match(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2}))?", date)
    day = match.group(1).encode() if match else b""
    clock = ":".join(match.group(2, 3, 4)).encode() if match and match.group(2) else b""
    # Description, Originator, OriginatorReference, OriginationDate, OriginationTime, TimeReference (samples
    # since midnight), Version, UMID (none: zeros), Reserved
    return _BEXT.pack(description, ORIGINATOR.encode(), b"", day, clock, 0, 1, b"", b"")


def _ixml(tags: Mapping[str, str]) -> bytes:
    """iXML: `NOTE` is the comment; `DRUMDIFF` holds `PROVENANCE` (the JSON) and one element per field."""
    root = ET.Element("BWFXML")
    ET.SubElement(root, "IXML_VERSION").text = "2.10"
    if tags.get("comment"):
        ET.SubElement(root, "NOTE").text = _xml_text(tags["comment"])
    ours = ET.SubElement(root, "DRUMDIFF")
    for key in ("title", "software", "date", "provenance"):
        if tags.get(key):
            ET.SubElement(ours, key.upper()).text = _xml_text(tags[key])
    try:
        fields = json.loads(tags.get("provenance", "{}"))
    except ValueError:
        fields = {}
    for name, value in _flat(fields if isinstance(fields, dict) else {}):
        tag = re.sub(r"[^A-Z0-9_]", "_", name.upper())
        if tag[:1].isdigit() or ours.find(tag) is not None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        ET.SubElement(ours, tag).text = _xml_text(text)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="utf-8", xml_declaration=False
    )


def _flat(fields: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{"model": {"sha256": x}}` -> `[("model_sha256", x)]`; lists stay whole."""
    out: list[tuple[str, Any]] = []
    for key, value in fields.items():
        name = f"{prefix}{key}"
        out.extend(_flat(value, f"{name}_") if isinstance(value, Mapping) else [(name, value)])
    return out


def _xml_text(text: str) -> str:
    """Text XML 1.0 can hold (no control characters); ElementTree escapes `&`, `<`, `>`."""
    return _XML_INVALID.sub("\ufffd", text)


def _vorbis_block(vendor: str, comments: list[tuple[str, str]]) -> bytes:
    """A VORBIS_COMMENT payload: little-endian lengths (unlike the big-endian FLAC block header)."""
    parts = [struct.pack("<I", len(vendor.encode())), vendor.encode(), struct.pack("<I", len(comments))]
    for key, value in comments:
        entry = f"{key}={value}".encode()
        parts += [struct.pack("<I", len(entry)), entry]
    return b"".join(parts)


# --- reading ----------------------------------------------------------------------------------------------


def read_tags(path: str | os.PathLike) -> dict[str, Any]:
    """Everything a WAV or FLAC file says about itself, as JSON-ready data; other audio formats only name it.

    Returns `{"format": "WAV" | "FLAC" | libsndfile's name, "tags": {key: text} (keys of `TAG_KEYS` found),
    "provenance": the parsed `provenance` JSON or {}}` plus, for WAV, `container` ("RIFF" | "RF64" | "BW64"),
    `chunks` (ids in file order), `info` ({INFO id: text}), `bext` ({} when absent) and `ixml` (the XML text,
    "" when absent); for FLAC, `vendor` and `comments` ({FIELD: [values]}). A file without tags gives empty
    parts. Missing, non-audio, truncated or damaged files raise `AudioError` naming the file.
    """
    path = Path(path)
    with _open(path) as handle:
        kind = _kind(handle)
        if kind == "WAV":
            result = _read_wav(handle, path)
        elif kind == "FLAC":
            result = _read_flac(handle, path)
        else:
            result = {"format": _other_format(path), "tags": {}}
    text = result["tags"].get("provenance", "")
    try:
        provenance = json.loads(text) if text else {}
    except ValueError:
        provenance = {}
    result["provenance"] = provenance if isinstance(provenance, dict) else {}
    return result


def _open(path: Path) -> BinaryIO:
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 (the callers close it)
    except OSError as error:
        raise AudioError(f"{path}: cannot open: {error.strerror or error}") from error
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        raise AudioError(f"{path}: empty file (0 bytes)")
    return handle


def _kind(handle: BinaryIO) -> str | None:
    """The kind of file from its first bytes: WAV (RIFF, RF64, BW64), FLAC (also after an ID3v2 tag) or None."""
    handle.seek(0)
    head = handle.read(10)
    if head[:4] in _RIFF_MAGICS:
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:3] == b"ID3" and len(head) == 10:
        handle.seek(_id3_size(head))
        return "FLAC" if handle.read(4) == b"fLaC" else None  # else an MP3, most likely
    return None


def _id3_size(head: bytes) -> int:
    """Bytes of the ID3v2 tag whose 10-byte header is `head` (syncsafe size, plus a footer when flagged)."""
    size = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
    return size + (10 if head[5] & 0x10 else 0)


def _other_format(path: Path) -> str:
    """libsndfile's name of a format drumdiff does not tag (OGG, AIFF, ...), or an `AudioError`."""
    import soundfile as sf

    try:
        return str(sf.info(os.fsencode(path) if os.name == "posix" else str(path)).format)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(
            f"{path}: not an audio file (neither WAV nor FLAC, nor another known format)"
        ) from error


def _parse_riff(handle: BinaryIO, path: Path) -> tuple[bytes, list[_Chunk], tuple[int, int] | None]:
    """(magic, chunks, RF64's (riff size, data size) or None) of a WAV; `AudioError` when cut short."""
    file_size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    head = handle.read(12)
    if len(head) < 12 or head[:4] not in _RIFF_MAGICS or head[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    magic, declared = head[:4], struct.unpack("<I", head[4:8])[0]
    ds64 = None
    if magic != b"RIFF":
        chunk = handle.read(36)
        if len(chunk) < 36 or chunk[:4] != b"ds64":
            raise AudioError(f"{path}: damaged {magic.decode()} file (no ds64 chunk after the header)")
        ds64 = struct.unpack("<QQ", chunk[8:24])
        declared = ds64[0]
    end = file_size if declared in (0, 0xFFFFFFFF) else 8 + declared
    if end > file_size + 1:  # a missing pad byte at the very end is common and harmless
        raise AudioError(
            f"{path}: truncated WAV file (the header promises {end} bytes, the file has {file_size})"
        )
    end = min(end, file_size)
    chunks: list[_Chunk] = []
    pos = 12
    while pos + 8 <= end:
        handle.seek(pos)
        chunk_id, size = struct.unpack("<4sI", handle.read(8))
        if not all(0x20 <= c <= 0x7E for c in chunk_id):
            break  # bytes after the last chunk that are no chunk: ignored, as every reader does
        if chunk_id == b"data" and size == 0xFFFFFFFF:
            size = ds64[1] if ds64 is not None else end - pos - 8  # RF64's real size; a streamed RIFF
        if pos + 8 + size > file_size:
            raise AudioError(
                f"{path}: truncated WAV file (its {chunk_id.decode()!r} chunk needs {size} bytes, "
                f"{file_size - pos - 8} are left)"
            )
        chunks.append((chunk_id, pos + 8, size))
        pos += 8 + size + (size & 1)
    ids = [c[0] for c in chunks]
    if b"fmt " not in ids or b"data" not in ids:
        raise AudioError(f"{path}: damaged WAV file (no {'fmt' if b'fmt ' not in ids else 'data'} chunk)")
    return magic, chunks, ds64


def _read(handle: BinaryIO, chunk: _Chunk, limit: int | None = None) -> bytes:
    handle.seek(chunk[1])
    return handle.read(chunk[2] if limit is None else min(chunk[2], limit))


def _is_info(handle: BinaryIO, chunk: _Chunk) -> bool:
    return chunk[0] == b"LIST" and _read(handle, chunk, 4) == b"INFO"


def _read_info_entries(handle: BinaryIO, chunk: _Chunk) -> list[tuple[bytes, bytes]]:
    """The (id, raw value) entries of a LIST/INFO chunk; a malformed tail is ignored."""
    data = _read(handle, chunk)
    entries, pos = [], 4
    while pos + 8 <= len(data):
        entry_id, size = struct.unpack("<4sI", data[pos : pos + 8])
        if pos + 8 + size > len(data):
            break
        entries.append((entry_id, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return entries


def _text(raw: bytes) -> str:
    raw = raw.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def _read_wav(handle: BinaryIO, path: Path) -> dict[str, Any]:
    magic, chunks, _ = _parse_riff(handle, path)
    info: dict[str, str] = {}
    bext: dict[str, Any] = {}
    ixml = ""
    for chunk in chunks:
        if _is_info(handle, chunk):
            for entry_id, value in _read_info_entries(handle, chunk):
                info.setdefault(entry_id.decode("latin-1"), _text(value))
        elif chunk[0] == b"bext" and not bext:
            bext = _parse_bext(_read(handle, chunk))
        elif chunk[0] == b"iXML" and not ixml:
            ixml = _read(handle, chunk).rstrip(b"\0").decode("utf-8", "replace")
    note, ours = _parse_ixml(ixml)
    tags = {key: info[i.decode()] for key, i in _INFO_IDS.items() if info.get(i.decode())}
    for key in ("title", "software", "date", "provenance"):
        if key not in tags and ours.get(key.upper()):
            tags[key] = ours[key.upper()]
    comment = tags.get("comment") or note or bext.get("description", "")
    if comment:
        tags["comment"] = comment
    return {
        "format": "WAV",
        "container": magic.decode(),
        "chunks": [c[0].decode("latin-1") for c in chunks],
        "info": info,
        "bext": bext,
        "ixml": ixml,
        "tags": {key: tags[key] for key in TAG_KEYS if key in tags},
    }


def _parse_bext(data: bytes) -> dict[str, Any]:
    fields = _BEXT.unpack(data[: _BEXT.size].ljust(_BEXT.size, b"\0"))
    description, originator, reference, day, clock, time_reference, version = fields[:7]
    return {
        "description": _text(description),
        "originator": _text(originator),
        "originator_reference": _text(reference),
        "origination_date": _text(day),
        "origination_time": _text(clock),
        "time_reference": time_reference,
        "version": version,
        "coding_history": _text(data[_BEXT.size :]),
    }


def _parse_ixml(text: str) -> tuple[str, dict[str, str]]:
    """(NOTE, {child of DRUMDIFF: text}) of an iXML document; empty for none or malformed XML."""
    if not text.strip():
        return "", {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return "", {}
    ours = root.find("DRUMDIFF")
    fields = {child.tag: child.text or "" for child in ours} if ours is not None else {}
    return (root.findtext("NOTE") or "").strip(), fields


def _parse_flac(handle: BinaryIO, path: Path) -> tuple[int, list[tuple[int, int, int]], int]:
    """(bytes before "fLaC", metadata blocks as (type, offset, size), offset of the first frame)."""
    file_size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    head = handle.read(10)
    prefix = 0
    if head[:3] == b"ID3" and len(head) == 10:  # an ID3v2 tag some taggers put before FLAC
        prefix = _id3_size(head)
    handle.seek(prefix)
    if handle.read(4) != b"fLaC":
        raise AudioError(f"{path}: not a FLAC file (no fLaC marker)")
    blocks: list[tuple[int, int, int]] = []
    pos, last = prefix + 4, False
    while not last:
        handle.seek(pos)
        header = handle.read(4)
        if len(header) < 4:
            raise AudioError(f"{path}: truncated FLAC file (it ends inside its metadata)")
        last, block_type, size = bool(header[0] & 0x80), header[0] & 0x7F, int.from_bytes(header[1:], "big")
        if block_type == 127 or (not blocks and block_type != _FLAC_STREAMINFO):
            raise AudioError(f"{path}: damaged FLAC file (invalid metadata block {block_type})")
        if pos + 4 + size > file_size:
            raise AudioError(f"{path}: truncated FLAC file (a metadata block needs {size} bytes)")
        blocks.append((block_type, pos + 4, size))
        pos += 4 + size
    if pos >= file_size:
        raise AudioError(f"{path}: truncated FLAC file (no audio frames after the metadata)")
    return prefix, blocks, pos


def _read_vorbis(
    handle: BinaryIO, block: tuple[int, int, int], path: Path
) -> tuple[str, list[tuple[str, str]]]:
    handle.seek(block[1])
    data = handle.read(block[2])
    try:
        (length,) = struct.unpack_from("<I", data, 0)
        vendor = data[4 : 4 + length].decode("utf-8", "replace")
        pos = 4 + length
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        comments = []
        for _ in range(count):
            (length,) = struct.unpack_from("<I", data, pos)
            if pos + 4 + length > len(data):
                raise struct.error("a comment runs past the block")
            entry = data[pos + 4 : pos + 4 + length].decode("utf-8", "replace")
            key, _, value = entry.partition("=")
            comments.append((key, value))
            pos += 4 + length
    except struct.error as error:
        raise AudioError(f"{path}: damaged FLAC file (its VORBIS_COMMENT block is malformed)") from error
    return vendor, comments


def _read_flac(handle: BinaryIO, path: Path) -> dict[str, Any]:
    _, blocks, _ = _parse_flac(handle, path)
    block = next((b for b in blocks if b[0] == _FLAC_VORBIS_COMMENT), None)
    vendor, comments = _read_vorbis(handle, block, path) if block else ("", [])
    fields: dict[str, list[str]] = {}
    for key, value in comments:
        fields.setdefault(key.upper(), []).append(value)
    tags = {}
    for key, names in _VORBIS_FIELDS.items():
        value = next((fields[n][0] for n in names if fields.get(n)), "")
        if value:
            tags[key] = value
    return {"format": "FLAC", "vendor": vendor, "comments": fields, "tags": tags}
