"""The prepare run: plan what the previous run already did, condition the rest, drop duplicates, place, record.

A run stages every newly encoded FLAC under `DIR/.staging`, and only once the duplicates are known moves the
accepted ones into `DIR/<class>/` and writes `manifest.json` (the new dataset is complete from that moment),
then `rejected.json`; outputs the manifest no longer lists are deleted last. An interrupted run therefore
leaves the previous dataset as it was, and the next run redoes what it had not finished.

A run holds the folder's lock (`DIR/.drumdiff.lock`, `drumdiff.outputs.folder_lock`) from the start to the
last file: a second run into the same DIR says that it waits, and runs when the first one is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drumdiff import audio as audio_io
from drumdiff.data.conditioning import Encoded, Job, PrepareSettings, process_files, sha1_file
from drumdiff.data.duplicates import fingerprint, near_duplicate_rejections
from drumdiff.data.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    REJECT_REASONS,
    REJECTED,
    SPLITS,
    read_previous,
    split_for_group,
)
from drumdiff.data.regions import region_sha1
from drumdiff.data.soundfont import DEFAULT_PRESETS, PresetSpec
from drumdiff.data.sources import SINGLE_CLASS, ClassMode, Source, count_ignored, find_sources
from drumdiff.errors import DrumdiffError
from drumdiff.files import check_writable, write_json
from drumdiff.outputs import LOCK_NAME, folder_lock

STAGING = ".staging"  # encoded files wait here until duplicates are known; emptied at every start
MARKER = ".drumdiff-prepare"  # written first, so that a re-run into an interrupted DIR is allowed
# Reasons that depend only on the file's bytes and the settings: cached between runs by size and mtime.
_CONTENT_REASONS = {"empty", "not audio", "non-finite samples", "silent", "too short", "bad region"}


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
    unread_kits: int = 0  # SoundFont / SFZ files among the ignored ones (read with --classes kits)
    seconds: float = 0.0
    inputs: int = 0

    @property
    def warnings(self) -> list[str]:
        """One line per class that has no train clip: a model trained on this folder never sees it."""
        lines = []
        for name, counts in sorted(self.per_class_split.items()):
            if not counts.get("train"):
                where = ", ".join(f"{counts[s]} in {s}" for s in SPLITS if counts.get(s))
                lines.append(
                    f"WARNING: class {name!r} has no train clips ({where}): a model trained on this folder "
                    "never sees it; add a kit or folder of it that the split puts in train (docs/data.md)"
                )
        return lines

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
        splits = [
            s for s in SPLITS if s != "test" or any(c.get("test") for c in self.per_class_split.values())
        ]
        lines.append(f"  {'class':<14}" + "".join(f"{s:>8}" for s in splits))
        for name, counts in sorted(self.per_class_split.items()):
            lines.append(f"  {name:<14}" + "".join(f"{counts.get(s, 0):>8}" for s in splits))
        total = sum(self.rejected.values())
        lines.append(f"  rejected: {total}" + (" (see rejected.json)" if total else ""))
        for reason, count in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason:<24}{count:>6}")
        if self.ignored_non_audio:
            kits = (
                f" ({self.unread_kits} SoundFont/SFZ kits: read them with --classes kits)"
                if self.unread_kits
                else ""
            )
            lines.append(f"  ignored {self.ignored_non_audio} files without an audio extension{kits}")
        lines.append(
            f"  {self.inputs} inputs, {self.decoded} decoded, in {self.seconds:.1f} s "
            f"({self.files_per_second:.1f} decoded files/s)"
        )
        return "\n".join([*lines, *self.warnings])


@dataclass(eq=False)  # identity, not value: `in` and `is` look for this very candidate
class Candidate:
    """An input whose fitted audio is known, before duplicates are removed: a manifest item to be."""

    item: dict[str, Any]  # its manifest item, with the keys written (a pending one: source and audio only)
    staged: str | None = None  # encoded by this run: its FLAC waits under STAGING
    previous_path: str | None = None  # kept from the previous run: where its output is, under DIR
    pending: Source | None = None  # a cached duplicate: decoded after all if its original is gone


def prepare(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    classes: ClassMode = "none",
    mapping: dict[str, list[str]] | None = None,
    settings: PrepareSettings | None = None,
    workers: int = 1,
    progress: bool = True,
    soundfont_presets: PresetSpec = DEFAULT_PRESETS,
    test_sources: Sequence[str | os.PathLike] = (),
    licenses: Sequence[tuple[str | os.PathLike, str]] = (),
    near_duplicates: bool = True,
) -> PrepareReport:
    """Import audio files under `sources` (and `test_sources`, whose items get split "test") into the
    prepared dataset folder `out` (see docs/data.md). `licenses`: (path, licence text) pairs.

    Raises `DrumdiffError` when a source is missing, `out` cannot be written, or no file was accepted
    (after writing `rejected.json`, so the user can see why; an earlier dataset in `out` is then kept).
    """
    started = time.perf_counter()
    settings = settings or PrepareSettings()
    out = Path(out)
    if not sources:
        raise DrumdiffError("no source folder given")
    for src in [*sources, *test_sources]:
        if not Path(src).exists():
            raise DrumdiffError(f"source {src} does not exist")
    _create_out(out)
    with _locked(out):  # a second run into `out` waits here
        everything = [*sources, *test_sources]
        _prepare_out(out)
        found = find_sources(
            sources, classes=classes, mapping=mapping, skip=out, soundfont_presets=soundfont_presets,
            test_sources=test_sources, licenses=licenses,
        )  # fmt: skip
        settings_dict = asdict(settings)
        report = PrepareReport(out=out, inputs=len(found))
        report.ignored_non_audio, report.unread_kits = count_ignored(everything, skip=out, classes=classes)

        rejected, candidates, to_decode, near_cached = _plan(found, out, settings_dict)
        if not near_duplicates:
            to_decode += [source for source, _ in near_cached]
            near_cached = []
        near: list[dict[str, Any]] = []
        while True:
            if to_decode:
                report.decoded += len(to_decode)
                accepted, failed = _decode_all(to_decode, out, settings, workers=workers, progress=progress)
                candidates += accepted
                rejected += failed
            kept, duplicates = _remove_duplicates(candidates)
            # Cached duplicates whose original is gone (or rejected now): decode them after all.
            to_decode = [c.pending for c in kept if c.pending is not None]
            if not to_decode and near_duplicates:
                kept, near = _remove_near_duplicates(kept, out, sample_rate=settings.sample_rate)
                # Cached near-duplicates whose kept twin is gone or no longer in another split: decode them.
                to_decode = [s for s, record in near_cached if not _still_near(s, record, kept)]
                near_cached = [(s, r) for s, r in near_cached if s not in to_decode]
            if not to_decode:
                break
            candidates = [c for c in candidates if c.pending is None or c.pending not in to_decode]
        rejected += [{**record, "path": source.display} for source, record in near_cached]
        rejected = sorted(rejected + duplicates + near, key=lambda r: r["path"])
        rejected_doc = {"settings": settings_dict, "reasons": REJECT_REASONS, "rejected": rejected}
        report.rejected = dict(Counter(r["reason"] for r in rejected))
        if not kept:  # leave an earlier dataset in `out` as it was: only say why nothing was accepted
            _write_json(out / REJECTED, rejected_doc)
            shutil.rmtree(out / STAGING, ignore_errors=True)
            hint = (
                f" ({report.unread_kits} SoundFont/SFZ files: read with --classes kits)"
                if report.unread_kits
                else ""
            )
            raise DrumdiffError(
                f"no file was accepted from {', '.join(map(str, everything))}; see {out / REJECTED}{hint}"
            )

        report.encoded, report.reused = _place(kept, out)
        items = sorted((c.item for c in kept), key=lambda it: it["path"])
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "sample_rate": settings.sample_rate,
            "length": settings.length,
            "channels": settings.channels,
            "classes": sorted({item["class"] for item in items}),
            "class_mode": classes,
            "settings": settings_dict,
            "items": items,
        }
        _write_json(out / MANIFEST, manifest)  # the new dataset is complete from here on
        _write_json(out / REJECTED, rejected_doc)
        _remove_stale(out, keep={item["path"] for item in items})

        report.accepted = len(items)
        for item in items:
            counts = report.per_class_split.setdefault(item["class"], dict.fromkeys(SPLITS, 0))
            counts[item["split"]] += 1
        report.seconds = time.perf_counter() - started
        return report


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold `out`'s folder lock; say so on stderr when another run holds it for more than a second."""
    note = threading.Timer(
        1.0,
        lambda: print(
            f"another run is preparing {out}; waiting for it to finish", file=sys.stderr, flush=True
        ),
    )
    note.daemon = True
    note.start()
    try:
        with folder_lock(out):
            note.cancel()
            yield
    finally:
        note.cancel()


def _create_out(out: Path) -> None:
    """Create `out`; refuse a file, a folder that cannot be written and a foreign non-empty folder (before
    the lock file is put into it)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DrumdiffError(f"cannot create output folder {out}: {error.strerror or error}") from error
    if not out.is_dir():
        raise DrumdiffError(f"output {out} exists and is not a folder")
    ours = (out / MANIFEST).exists() or (out / MARKER).exists()
    if not ours and any(entry.name != LOCK_NAME for entry in out.iterdir()):
        raise DrumdiffError(
            f"output folder {out} is not empty and holds no drumdiff dataset; pick a new folder"
        )
    try:
        check_writable(out)
    except OSError as error:
        raise DrumdiffError(f"output folder {out} is not writable ({error.strerror or error})") from error


def _prepare_out(out: Path) -> None:
    """Mark `out` as a prepare output folder and empty its staging folder (under the lock)."""
    (out / MARKER).write_text("drumdiff data prepare output folder\n", encoding="utf-8")
    shutil.rmtree(out / STAGING, ignore_errors=True)
    (out / STAGING).mkdir()


def _plan(
    found: list[Source], out: Path, settings_dict: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[Candidate], list[Source], list[tuple[Source, dict[str, Any]]]]:
    """(rejections known without decoding, candidates kept from the previous run, sources to decode, cached
    near-duplicates with their rejection: they stand while the clip they nearly duplicate stays).

    The previous run's outputs and rejections count only when the settings are the same and the source's
    size and modification time (or, for outputs, content) are unchanged; see `_reuse`.
    """
    previous = read_previous(out / MANIFEST)
    prev_items = (
        {it.get("source_path"): it for it in previous.get("items", [])}
        if previous.get("settings") == settings_dict
        else {}
    )
    prev_rejected_doc = read_previous(out / REJECTED)
    prev_rejected = (
        {r.get("source_path"): r for r in prev_rejected_doc.get("rejected", [])}
        if prev_rejected_doc.get("settings") == settings_dict
        else {}
    )
    rejected: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    to_decode: list[Source] = []
    near_cached: list[tuple[Source, dict[str, Any]]] = []
    for source in found:
        if source.reject:
            detail = f"{source.display}: {source.detail or REJECT_REASONS[source.reject]}"
            rejected.append(_rejection(source, source.reject, detail))
            continue
        reused = _reuse(source, prev_items.get(source.path), out)
        if reused is not None:
            candidates.append(Candidate(_manifest_item(source, reused), previous_path=reused["path"]))
            continue
        cached = prev_rejected.get(source.path)
        if cached and _unchanged(source, cached):
            if cached.get("reason") == "near duplicate" and cached.get("duplicate_of"):
                near_cached.append((source, cached))
                continue
            if cached.get("reason") in _CONTENT_REASONS:
                rejected.append({**cached, "path": source.display})
                continue
            if cached.get("reason") == "duplicate" and cached.get("audio_sha1"):
                # Its audio is known: decoded again only if the file it duplicated is gone.
                known = {
                    "source": source.display,
                    "source_path": source.path,
                    "audio_sha1": cached["audio_sha1"],
                    **({"region": cached["region"]} if "region" in cached else {}),
                }
                stat = {k: cached.get(k) for k in ("source_size", "source_mtime_ns")}
                candidates.append(Candidate({**known, **stat}, pending=source))
                continue
        to_decode.append(source)
    return rejected, candidates, to_decode, near_cached


def _reuse(source: Source, previous: dict[str, Any] | None, out: Path) -> dict[str, Any] | None:
    """The previous run's item for `source` when neither the source nor the output changed, else None."""
    if previous is None or not source.class_name:
        return None
    output = out / previous.get("path", "")
    if previous.get("region") != (source.region.record() if source.region else None):
        return None  # the kit plays it differently now (an SFZ edited: tune, offset, volume)
    try:
        if not output.is_file() or output.stat().st_size != previous.get("size"):
            return None
        if not _same_stat(source.file, previous):
            digest = region_sha1(source.region) if source.region else sha1_file(source.file)
            if digest != previous.get("source_sha1"):
                return None  # changed content
            stat = os.stat(source.file)  # touched only: keep, remember the new time
            previous = {**previous, "source_mtime_ns": stat.st_mtime_ns}
        if sha1_file(output) != previous.get("sha1"):
            return None  # an output that was damaged or replaced since: never trusted
    except OSError:
        return None
    return previous


def _unchanged(source: Source, record: dict[str, Any]) -> bool:
    """Whether a rejection recorded for `source` still describes it: same file stat, same kit region."""
    region = source.region.record() if source.region else None
    return _same_stat(source.file, record) and record.get("region") == region


def _same_stat(path: str, record: dict[str, Any]) -> bool:
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_size == record.get("source_size") and stat.st_mtime_ns == record.get("source_mtime_ns")


def _decode_all(
    sources: list[Source], out: Path, settings: PrepareSettings, *, workers: int, progress: bool
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Decode, condition and stage `sources` under `out/.staging`: (candidates, rejections)."""
    jobs = [Job(s.file, str(out / STAGING / output_name(s)), s.display, settings, s.region) for s in sources]
    candidates: list[Candidate] = []
    rejected: list[dict[str, Any]] = []
    for source, job, result in zip(
        sources, jobs, process_files(jobs, workers=workers, progress=progress), strict=True
    ):
        if isinstance(result, Encoded):
            candidates.append(Candidate(_manifest_item(source, asdict(result)), staged=job.staged))
        else:
            stat = {"source_size": result.source_size, "source_mtime_ns": result.source_mtime_ns}
            extra = {k: v for k, v in stat.items() if v is not None}
            rejected.append(_rejection(source, result.reason, result.detail, **extra))
    return candidates, rejected


def _manifest_item(source: Source, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest item of `source`, from an `Encoded` result or the previous run's item, keys in a fixed
    order (so that a re-run writes the same manifest, byte for byte)."""
    class_name = source.class_name or SINGLE_CLASS
    item: dict[str, Any] = {
        "path": f"{class_name}/{output_name(source)}",
        "class": class_name,
        "group": source.group,
        "split": source.split or split_for_group(source.group),
        "source": source.display,
        "source_path": source.path,
        "source_size": facts.get("source_size"),
        "source_mtime_ns": facts.get("source_mtime_ns"),
        "source_sha1": facts.get("source_sha1"),
        **({"region": source.region.record()} if source.region else {}),
        "original": facts.get("original"),
        "processing": facts.get("processing"),
        "peak_db": facts.get("peak_db"),
        "lufs": facts.get("lufs"),
        "audio_sha1": facts["audio_sha1"],
        "sha1": facts.get("sha1"),
        "size": facts.get("size"),
        "fingerprint": facts.get("fingerprint"),
    }
    if source.provenance:
        item["provenance"] = source.provenance
    return item


def output_name(source: Source) -> str:
    """`<readable stem>-<8 hex of the source's display path>.flac`: unique, ASCII, stable across machines."""
    digest = hashlib.sha1(source.display.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{_slug(Path(source.display).stem)}-{digest}.flac"


def _slug(text: str, limit: int = 60) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")
    return slug[:limit] or "clip"


def _remove_duplicates(candidates: list[Candidate]) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(kept, rejections of duplicates): the first candidate by source path of each fitted audio is kept.

    This runs before splitting, so a sample shared by two kits cannot land in both splits. A duplicate's
    rejection keeps its audio SHA-1 and source stat, which let the next run skip it.
    """
    kept: dict[str, Candidate] = {}
    duplicates: list[dict[str, Any]] = []
    for candidate in sorted(candidates, key=lambda c: c.item["source"]):
        item = candidate.item
        first = kept.setdefault(item["audio_sha1"], candidate)
        if first is not candidate:
            duplicate_of = first.item["source"]
            duplicates.append(
                {
                    "path": item["source"],
                    "source_path": item["source_path"],
                    "reason": "duplicate",
                    "detail": f"{item['source']}: same audio as {duplicate_of}",
                    "duplicate_of": duplicate_of,
                    "audio_sha1": item["audio_sha1"],
                    "source_size": item.get("source_size"),
                    "source_mtime_ns": item.get("source_mtime_ns"),
                    **({"region": item["region"]} if "region" in item else {}),
                }
            )
    return list(kept.values()), duplicates


def _remove_near_duplicates(
    kept: list[Candidate], out: Path, *, sample_rate: int
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(kept, rejections): a candidate that nearly duplicates one before it (by source path) in another
    split is left out (`duplicates.near_duplicates`), so that no recording straddles train, val and test."""
    ordered = sorted(kept, key=lambda c: c.item["source"])

    def load(i: int) -> Any:
        candidate = ordered[i]
        return audio_io.read(candidate.staged or out / (candidate.previous_path or candidate.item["path"]))[0]

    for i, candidate in enumerate(ordered):
        if not candidate.item.get("fingerprint"):  # kept from a manifest written before fingerprints
            candidate.item["fingerprint"] = fingerprint(load(i), sample_rate)
    dropped = near_duplicate_rejections([c.item for c in ordered], load, sample_rate=sample_rate)
    return [c for i, c in enumerate(ordered) if i not in dropped], list(dropped.values())


def _still_near(source: Source, record: dict[str, Any], kept: list[Candidate]) -> bool:
    """Whether a cached near-duplicate still stands: the clip it nearly duplicates is kept, in another split."""
    split = source.split or split_for_group(source.group)
    return any(c.item["source"] == record["duplicate_of"] and c.item["split"] != split for c in kept)


def _rejection(source: Source, reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A rejected.json record."""
    region = {"region": source.region.record()} if source.region else {}
    return {"path": source.display, "source_path": source.path, "reason": reason, "detail": detail, **region,
            **extra}  # fmt: skip


def _place(kept: list[Candidate], out: Path) -> tuple[int, int]:
    """Move staged files into `out/<class>/` and reused ones whose class changed: (encoded, reused)."""
    encoded = reused = 0
    for candidate in kept:
        final = out / candidate.item["path"]
        final.parent.mkdir(parents=True, exist_ok=True)
        if candidate.staged is not None:
            os.replace(candidate.staged, final)
            encoded += 1
        else:
            if candidate.previous_path and candidate.previous_path != candidate.item["path"]:
                os.replace(out / candidate.previous_path, final)
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


def _write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON atomically and flushed to disk before the rename, so that the dataset survives a
    crash or power cut; a failure (a full disk) is a `DrumdiffError` naming the file."""
    try:
        write_json(path, data, indent=1, fsync=True)
    except OSError as error:
        raise DrumdiffError(f"cannot write {path}: {error.strerror or error}") from error
