"""The kit folder, all or nothing: checked before sampling, written in a hidden folder beside it, renamed.

An existing folder is taken only when it is empty, or, with overwrite, when it is a drumdiff kit holding
nothing but the files its kit.json lists: files of yours are never deleted. Only the standard library and
`drumdiff.files` are imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from drumdiff.errors import DrumdiffError
from drumdiff.files import check_writable, read_json

KIT_FORMAT, KIT_VERSION = "drumdiff-kit", 1
MANIFEST = "kit.json"


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse an `out_dir` that is a file, or a folder with files in it unless it is a drumdiff kit that
    holds nothing but its own files and `overwrite` is set; refuse a parent folder that cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DrumdiffError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DrumdiffError(
                f"{out_dir} already exists and is not empty; choose a new folder, or --overwrite to replace "
                "an earlier kit"
            )
        stranger = _not_kit_file(out_dir)
        if stranger is not None:
            raise DrumdiffError(f"--overwrite replaces only a drumdiff kit folder, and {stranger}")
    parent = _existing_parent(out_dir)
    try:
        check_writable(parent)
    except OSError as error:
        raise DrumdiffError(
            f"cannot write the kit: folder {parent} is not writable ({error.strerror or error})"
        ) from error


def _not_kit_file(folder: Path) -> str | None:
    """Why `folder` is not a kit folder that may be replaced whole (None when it is one)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{folder} has no {MANIFEST}"
    data = read_json(manifest, kind="drumdiff kit manifest", format=KIT_FORMAT, version=KIT_VERSION)
    listed = {*data.get("files", []), MANIFEST}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink() and any(f.startswith(relative + "/") for f in listed):
            continue
        if relative not in listed:
            return f"{path} is not one of its files (move it away first)"
    return None


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path if path.is_dir() else path.parent


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden empty folder beside `out_dir` to write the kit into; renamed onto `out_dir` when the block
    ends, deleted (with the parent folders made for it) when it raises."""
    out_dir = Path(os.path.abspath(out_dir))  # "." and ".." resolved: the kit lands where it was asked to
    parent = out_dir.parent
    created = _make_parents(parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
        os.chmod(staging, _new_folder_mode())  # mkdtemp's folders are 0700
    except OSError:
        _remove_empty(created)
        raise
    try:
        yield staging
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def _new_folder_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; one that is no longer empty stays
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished kit onto `out_dir`: a missing or empty folder is replaced at once; an earlier
    kit (checked by `check_out_dir`) is moved aside first and deleted only once the new one is in place."""
    if out_dir.is_dir() and any(out_dir.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, aside / "kit")
        try:
            os.replace(staging, out_dir)
        except BaseException:
            os.replace(aside / "kit", out_dir)
            aside.rmdir()
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        os.replace(staging, out_dir)
    except OSError as error:  # someone filled `out_dir` meanwhile: theirs stays
        raise DrumdiffError(f"cannot write the kit to {out_dir}: {error.strerror or error}") from error
