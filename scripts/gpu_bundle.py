"""The lent-GPU run's folder: what travels there (pack) and what the device makes of it (unpack).

A device run (see docs/training.md, "A lent GPU: the prepared 9-minute run") takes at most 64 MiB of working
tree with it and brings back files of at most 16 MiB each. This module holds every step on both sides:

    pack(DATA, FOLDER, init=MODEL)   here: train + val clips as 16-bit FLAC with the trailing silence cut, the
                                     manifest as it is, the init model (fp16), the wheels of soundfile/soxr;
                                     refused when FOLDER + the repository's travelling files exceed 64 MiB
    unpack(FOLDER, DIR)              there: a prepared dataset again (24-bit FLAC at full length, same manifest)

`scripts/gpu_pack.py` is the command line of pack; `scripts/gpu_train.sh` runs `python scripts/gpu_bundle.py
FOLDER DIR` (unpack) on the device. The weights that come back are split and joined by `scripts/gpu_parts.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from drumdiff import audio as audio_io
from drumdiff.data.manifest import MANIFEST, load_manifest
from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path, file_digest, read_json, write_json

MIB = 1024**2
TRAVEL_LIMIT = 64 * MIB  # what one device call takes along: tracked + untracked-not-ignored + carried
PACK_FORMAT, PACK_VERSION = "drumdiff-gpu-pack", 1
PACK_RECORD = "pack.json"
CLIPS, INIT, WHEELS = "clips", "init.safetensors", "wheels"
PACKED_SPLITS = ("train", "val")  # training reads these; "test" is never needed there
# What the device lacks (docs: the device's package list): soundfile (with libsndfile inside its wheel), its
# cffi backend, and soxr, at the versions installed here.
WHEEL_PACKAGES = ("soundfile", "soxr", "cffi")
PIP_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
PCM16 = 32768.0  # libsndfile reads 16-bit PCM as q / 32768


# ---------------------------------------------------------------------------------------------- sizes


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def repo_root(path: Path) -> Path:
    """The top of the git checkout holding `path` (an existing folder); DrumdiffError when there is none."""
    result = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise DrumdiffError(
            f"{path} is not inside a git checkout: the device tool carries only folders of the checkout it sends"
        )
    return Path(result.stdout.strip())


def travelling_bytes(repo: Path) -> int:
    """Bytes of what every device call sends: tracked files plus untracked files that git does not ignore."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for name in sorted(set(listing.split(b"\0")) - {b""}):
        path = repo / os.fsdecode(name)
        if path.is_symlink():
            total += len(os.readlink(path))  # a link travels as a link
        elif path.is_file():
            total += path.stat().st_size
    return total


def _travels(repo: Path, path: Path) -> bool:
    """Whether `path` is a file of the checkout that every device call sends (tracked, or untracked and not
    ignored)."""
    if not path.resolve().is_relative_to(repo.resolve()):
        return False
    relative = path.resolve().relative_to(repo.resolve()).as_posix()
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "--", relative],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return relative in listing.splitlines()


def is_ignored(repo: Path, folder: Path) -> bool:
    """Whether git ignores the folder `folder` inside `repo` (it need not exist yet)."""
    relative = folder.resolve().relative_to(repo.resolve())
    check = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "-q", f"{relative}/"], capture_output=True
    )
    return check.returncode == 0


def _mb(n: int) -> str:
    return f"{n / MIB:.2f} MiB"


# ---------------------------------------------------------------------------------------------- clips


def quantize16(audio: torch.Tensor) -> np.ndarray:
    """`[C, T]` float in [-1, 1] -> `(T, C)` int16, rounded to the nearest 1/32768 (what 16-bit FLAC reads)."""
    scaled = np.rint(audio.numpy().astype(np.float64) * PCM16)
    return np.clip(scaled, -32768, 32767).astype(np.int16).T


def cut_trailing_silence(samples: np.ndarray) -> np.ndarray:
    """`(T, C)` int16 without the frames after the last non-zero one (at least one frame stays)."""
    loud = np.flatnonzero(np.any(samples != 0, axis=1))
    return samples[: int(loud[-1]) + 1 if len(loud) else 1]


def _write_pcm16(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """A 16-bit FLAC of `(T, C)` int16 samples, at FLAC's highest compression, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".flac") as tmp:
        sf.write(tmp, samples, sample_rate, format="FLAC", subtype="PCM_16", compression_level=1.0)


def _map(function: Callable[[Any], Any], items: Sequence[Any], *, workers: int) -> list[Any]:
    """`function` over `items` in threads (libsndfile releases the GIL), results in order."""
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def _default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


# ---------------------------------------------------------------------------------------------- pack


@dataclass(frozen=True)
class PackSummary:
    """What `pack` wrote and how big everything is (bytes)."""

    folder: Path
    clips: int
    splits: dict[str, int]
    source_clip_bytes: int
    clip_bytes: int
    init_bytes: int
    wheel_bytes: int
    folder_bytes: int
    repo_bytes: int
    limit_bytes: int

    @property
    def total_bytes(self) -> int:
        """What a device call carrying the folder sends."""
        return self.folder_bytes + self.repo_bytes

    def lines(self) -> list[str]:
        """The summary `gpu_pack.py` prints."""
        splits = ", ".join(f"{n} {split}" for split, n in self.splits.items())
        return [
            f"clips: {self.clips} ({splits}) as 16-bit FLAC, trailing silence cut: {_mb(self.clip_bytes)} "
            f"(the prepared files: {_mb(self.source_clip_bytes)})",
            f"init model: {_mb(self.init_bytes)}; wheels: {_mb(self.wheel_bytes)}",
            f"folder {self.folder}: {_mb(self.folder_bytes)}; the checkout's travelling files: "
            f"{_mb(self.repo_bytes)}",
            f"total sent by a device call carrying it: {_mb(self.total_bytes)} of {_mb(self.limit_bytes)}",
        ]


def _clear_folder(folder: Path) -> None:
    """Make `folder` an empty folder; only an earlier pack (or an empty folder) may be replaced."""
    if folder.exists() and not folder.is_dir():
        raise DrumdiffError(f"{folder} is a file; name a folder for the pack")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / PACK_RECORD).is_file() and not (folder / CLIPS).is_dir():
            raise DrumdiffError(f"{folder} holds other files than a pack; name a new or empty folder")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _pack_init(init: Path, dest: Path, *, repo: Path) -> dict[str, Any]:
    """Copy the init model file (converted to fp16 when it is fp32: half the bytes to carry). An fp16 file that
    travels with the checkout anyway (the shipped src/drumdiff/weights/drums.safetensors) is named, not
    copied: `file` is then its path from the pack folder (`../src/drumdiff/weights/drums.safetensors`) and
    `bytes` 0."""
    from drumdiff.modelfile import load_model_file, read_metadata, save_model_file

    meta = read_metadata(init)  # a ModelFileError naming the file when it is no model file
    if meta["dtype"] == "float16" and _travels(repo, init):
        return {
            "file": Path(os.path.relpath(init.resolve(), dest.parent.resolve())).as_posix(),
            "in_checkout": True,
            "from": init.name,
            "converted_to_fp16": False,
            "sha256": file_digest(init),
            "bytes": 0,
        }
    if meta["dtype"] == "float16":
        shutil.copyfile(init, dest)
    else:
        loaded = load_model_file(init)
        save_model_file(
            dest,
            state_dict=loaded.net.state_dict(),
            config=loaded.config,
            class_names=loaded.class_names,
            provenance=meta["provenance"],
            fp16=True,
        )
        _sort_header(dest)
        read_metadata(dest)
    return {
        "file": INIT,
        "from": init.name,
        "converted_to_fp16": meta["dtype"] != "float16",
        "sha256": file_digest(dest),
        "bytes": dest.stat().st_size,
    }


def _sort_header(path: Path) -> None:
    """Rewrite a .safetensors header with its keys sorted: safetensors writes the metadata in a random order
    (a hash map), and the pack is to be the same bytes for the same inputs. The tensor data is untouched
    (its offsets count from the end of the header); the header stays padded to 8 bytes with spaces."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(struct.pack("<Q", len(header)) + header + blob[8 + length :])


def wheel_requirements() -> list[str]:
    """`NAME==VERSION` of each package the device lacks, at the versions installed here."""
    return [f"{name}=={metadata.version(name)}" for name in WHEEL_PACKAGES]


def download_wheels(dest: Path) -> None:
    """pip download of the wheels for CPython 3.12 on manylinux x86-64 (the device's Python) into `dest`."""
    platforms = [arg for platform in PIP_PLATFORMS for arg in ("--platform", platform)]
    options = [
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
    ]
    command = [sys.executable, "-m", "pip", "download", *options, *platforms, "-d", str(dest)]
    command += wheel_requirements()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DrumdiffError(
            f"pip download of {', '.join(wheel_requirements())} failed ({detail}); pass --wheels DIR with the "
            "wheels downloaded elsewhere, or --no-wheels for a device that has soundfile and soxr"
        )


def _pack_wheels(source: Path | None, dest: Path) -> list[str]:
    """The wheels into `dest`: copied from `source`, or downloaded when `source` is None."""
    dest.mkdir()
    if source is None:
        with tempfile.TemporaryDirectory() as tmp:
            download_wheels(Path(tmp))
            wheels = sorted(Path(tmp).glob("*.whl"))
            for wheel in wheels:
                shutil.copyfile(wheel, dest / wheel.name)
    else:
        wheels = sorted(source.glob("*.whl"))
        if not wheels:
            raise DrumdiffError(f"--wheels {source}: no .whl files there")
        for wheel in wheels:
            shutil.copyfile(wheel, dest / wheel.name)
    names = [wheel.name for wheel in wheels]
    packages = Counter(name.split("-")[0].lower().replace("_", "-") for name in names)
    twice = sorted(name for name, n in packages.items() if n > 1)
    if twice:  # pip refuses two versions of one package in one install
        raise DrumdiffError(f"wheels: more than one version of {', '.join(twice)}; keep one of each")
    return names


def pack(
    data_dir: Path,
    folder: Path,
    *,
    init: Path | None,
    wheels: Path | None,
    download: bool = True,
    limit_bytes: int = TRAVEL_LIMIT,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> PackSummary:
    """Pack the train and val clips of a prepared dataset, an init model and the wheels into `folder`.

    `folder` must be a folder inside a git checkout that git ignores (the device call names it in `carry`).
    `wheels`: a folder of pre-downloaded wheels; None with `download` fetches them with pip, None without
    `download` packs none. Refuses (DrumdiffError, and removes the folder) when the folder plus the
    checkout's travelling files exceed `limit_bytes`. The same inputs give the same bytes.
    """
    data_dir, folder = Path(data_dir), Path(folder)
    manifest = load_manifest(data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    repo = repo_root(folder.parent)
    if folder.resolve() == repo.resolve() or not folder.resolve().is_relative_to(repo.resolve()):
        raise DrumdiffError(f"{folder} must be a folder inside the checkout {repo}")
    if not is_ignored(repo, folder):
        relative = folder.resolve().relative_to(repo.resolve())
        raise DrumdiffError(
            f"git does not ignore {folder}: it would travel with every device call as well as when carried; "
            f"add /{relative}/ to {repo / '.gitignore'}"
        )
    _clear_folder(folder)
    repo_bytes = travelling_bytes(repo)  # the folder is ignored, so this is the rest of the checkout
    try:
        summary = _pack_into(
            data_dir,
            folder,
            manifest,
            init=init,
            wheels=wheels,
            download=download,
            repo=repo,
            repo_bytes=repo_bytes,
            limit_bytes=limit_bytes,
            workers=workers or _default_workers(),
            log=log,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if summary.total_bytes > limit_bytes:
        shutil.rmtree(folder)
        raise DrumdiffError(
            f"the pack is too big to travel: {_mb(summary.folder_bytes)} in {folder} plus "
            f"{_mb(summary.repo_bytes)} of the checkout's files is {_mb(summary.total_bytes)}, over the device "
            f"call's {_mb(limit_bytes)} (folder removed); pack fewer clips, a smaller init model, or free "
            "the checkout of large untracked files"
        )
    return summary


def _pack_into(
    data_dir: Path,
    folder: Path,
    manifest: dict[str, Any],
    *,
    init: Path | None,
    wheels: Path | None,
    download: bool,
    repo: Path,
    repo_bytes: int,
    limit_bytes: int,
    workers: int,
    log: Callable[[str], None],
) -> PackSummary:
    items = [item for item in manifest["items"] if item["split"] in PACKED_SPLITS]
    if not any(item["split"] == "train" for item in items):
        raise DrumdiffError(f"{data_dir} has no train clips to pack")
    rate, channels, length = manifest["sample_rate"], manifest["channels"], manifest["length"]

    def pack_clip(item: dict[str, Any]) -> tuple[int, int]:
        source = data_dir / item["path"]
        clip, clip_rate = audio_io.read(source)
        if clip_rate != rate or tuple(clip.shape) != (channels, length):
            raise DrumdiffError(
                f"{source}: {tuple(clip.shape)} at {clip_rate} Hz does not match the manifest "
                f"({(channels, length)} at {rate} Hz); run `drumdiff data prepare` again"
            )
        samples = cut_trailing_silence(quantize16(clip))
        _write_pcm16(folder / CLIPS / item["path"], samples, rate)
        return source.stat().st_size, len(samples)

    log(f"packing {len(items)} clips of {data_dir} ...")
    results = _map(pack_clip, items, workers=workers)
    clips_manifest = {**manifest, "items": items}
    write_json(folder / CLIPS / MANIFEST, clips_manifest)
    init_record = _pack_init(Path(init), folder / INIT, repo=repo) if init is not None else None
    wheel_names = _pack_wheels(wheels, folder / WHEELS) if (wheels is not None or download) else []
    splits = dict(sorted(Counter(item["split"] for item in items).items()))
    left_out = dict(
        sorted(Counter(it["split"] for it in manifest["items"] if it["split"] not in PACKED_SPLITS).items())
    )
    clip_bytes = folder_bytes(folder / CLIPS)
    record = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "clips": {
            "manifest": f"{CLIPS}/{MANIFEST}",
            "count": len(items),
            "splits": splits,
            "left_out": left_out,
            "bits": 16,
            "frames_kept": sum(frames for _, frames in results),
            "frames_full": len(items) * length,
            "bytes": clip_bytes,
        },
        "init": init_record,
        "wheels": wheel_names,
    }
    write_json(folder / PACK_RECORD, record)  # last: a folder without it is an unfinished pack
    return PackSummary(
        folder=folder,
        clips=len(items),
        splits=splits,
        source_clip_bytes=sum(size for size, _ in results),
        clip_bytes=clip_bytes,
        init_bytes=init_record["bytes"] if init_record else 0,
        wheel_bytes=folder_bytes(folder / WHEELS) if wheel_names else 0,
        folder_bytes=folder_bytes(folder),
        repo_bytes=repo_bytes,
        limit_bytes=limit_bytes,
    )


def read_pack(folder: Path) -> dict[str, Any]:
    """The pack record of `folder`, checked."""
    path = Path(folder) / PACK_RECORD
    if not path.is_file():
        raise DrumdiffError(
            f"{folder} is not a finished pack ({PACK_RECORD} missing): run scripts/gpu_pack.py"
        )
    return read_json(path, kind="drumdiff GPU pack", format=PACK_FORMAT, version=PACK_VERSION)


# ---------------------------------------------------------------------------------------------- unpack


def unpack(folder: Path, out_dir: Path, *, workers: int | None = None) -> Path:
    """A packed folder -> a prepared dataset in `out_dir` (24-bit FLAC padded to full length, the same
    manifest); `out_dir` must not exist or be empty. The manifest is written last. Returns `out_dir`."""
    folder, out_dir = Path(folder), Path(out_dir)
    read_pack(folder)
    clips = folder / CLIPS
    manifest = load_manifest(clips)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DrumdiffError(f"{out_dir} exists and is not empty; unpack into a new folder")
    rate, channels, length = manifest["sample_rate"], manifest["channels"], manifest["length"]

    def unpack_clip(item: dict[str, Any]) -> None:
        source = clips / item["path"]
        clip, clip_rate = audio_io.read(source)
        if clip_rate != rate or clip.shape[0] != channels or clip.shape[1] > length:
            raise DrumdiffError(f"{source}: {tuple(clip.shape)} at {clip_rate} Hz does not fit the manifest")
        target = out_dir / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        audio_io.write(target, audio_io.fit_length(clip, length), rate, format="flac")

    out_dir.mkdir(parents=True, exist_ok=True)
    _map(unpack_clip, manifest["items"], workers=workers or _default_workers())
    with atomic_path(out_dir / MANIFEST) as tmp:
        shutil.copyfile(clips / MANIFEST, tmp)
    return out_dir


# ---------------------------------------------------------------------------------------------- device CLI


def main(argv: list[str] | None = None) -> int:
    """`python scripts/gpu_bundle.py FOLDER OUT`: unpack on the device (scripts/gpu_train.sh)."""
    parser = argparse.ArgumentParser(
        description="a packed folder -> a prepared dataset (24-bit FLAC, full length)"
    )
    parser.add_argument("folder", type=Path, help="folder written by scripts/gpu_pack.py")
    parser.add_argument("out", type=Path, help="new dataset folder")
    args = parser.parse_args(argv)
    try:
        unpack(args.folder, args.out)
    except DrumdiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"unpacked {len(load_manifest(args.out)['items'])} clips into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
