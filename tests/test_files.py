"""Atomic writes: the target appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from drumdiff.files import atomic_path, check_writable


def test_success_renames_with_ordinary_permissions(tmp_path) -> None:
    target = tmp_path / "clip.wav"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.exists() and not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, fsync=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_missing_folder_raises_oserror(tmp_path) -> None:
    with pytest.raises(OSError), atomic_path(tmp_path / "missing" / "x.json"):
        pass
    with pytest.raises(OSError):
        check_writable(tmp_path / "missing")
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
