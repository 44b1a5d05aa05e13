"""`data prepare` under an adversary (issue 16): concurrent runs, bad levels, kills, odd folders, help texts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from drumdiff.cli import main
from drumdiff.outputs import folder_lock
from tests.test_data import hit, read_json, wav

LENGTH = "2048"


def run_cli(*args: str, **kwargs) -> subprocess.Popen:
    """`python -m drumdiff ARGS` in a new process, stdout (and stderr unless given) captured as text."""
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "drumdiff", *args], stdout=subprocess.PIPE, text=True, **kwargs
    )


def test_concurrent_prepare_runs_wait_for_each_other(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(3):
        wav(src / "k" / f"h{i}.wav", hit(i))
    common = ("data", "prepare", str(src), "--out", str(out), "--length", LENGTH, "--no-progress")
    out.mkdir()
    log = tmp_path / "stderr.txt"
    with folder_lock(out), open(log, "w") as stderr:  # another run holds the folder: wait, and say so
        waiting = run_cli(*common, "--workers", "1", stderr=stderr)
        deadline = time.monotonic() + 60
        while "waiting for it to finish" not in log.read_text() and waiting.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert waiting.poll() is None and not (out / "manifest.json").exists(), log.read_text()
    stdout, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and "prepared" in stdout

    # Two runs at once with different settings: each sees a whole dataset; the last one's settings stand.
    runs = [run_cli(*common, "--workers", "1", "--peak-db", db) for db in ("-3", "-6")]
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    manifest, rejected = read_json(out / "manifest.json"), read_json(out / "rejected.json")
    assert manifest["settings"] == rejected["settings"]
    peak = manifest["settings"]["peak_db"]
    assert peak in (-3.0, -6.0) and all(abs(it["peak_db"] - peak) < 0.01 for it in manifest["items"])
    assert len(manifest["items"]) == 3 and len(list(out.glob("*/*.flac"))) == 3


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--peak-db", "nan"), ("--peak-db", "20"), ("--peak-db", "0.5"), ("--peak-db", "-inf"),
     ("--peak-db", "-80"), ("--lufs", "nan"), ("--lufs", "inf"), ("--lufs", "6"), ("--lufs", "-200")],
)  # fmt: skip
def test_prepare_refuses_levels_out_of_range(tmp_path, capsys, flag, value):
    src, out = tmp_path / "src", tmp_path / "out"
    wav(src / "k" / "h.wav", hit(0))
    code = main(["data", "prepare", str(src), "--out", str(out), "--length", LENGTH, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing written


def test_a_class_wholly_in_val_is_named_in_the_summary(tmp_path, capsys):
    from drumdiff.data import split_for_group

    # --classes folders: the group is "<SRC name>/<class folder>"; find a SRC name that puts kick in val.
    name = next(f"s{i}" for i in range(1000) if split_for_group(f"s{i}/kick") == "val"
                and split_for_group(f"s{i}/snare") == "train")  # fmt: skip
    src, out = tmp_path / name, tmp_path / "out"
    for i in range(2):
        wav(src / "kick" / f"k{i}.wav", hit(i))
        wav(src / "snare" / f"s{i}.wav", hit(10 + i))
    code = main(["data", "prepare", str(src), "--out", str(out), "--classes", "folders", "--length", LENGTH,
                 "--workers", "1", "--no-progress"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "'kick'" in warnings[0] and "2 in val" in warnings[0], lines


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its new parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads worker pids from Linux /proc")
def test_workers_exit_when_prepare_is_killed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    rng = np.random.default_rng(0)
    for i in range(200):
        wav(src / "k" / f"h{i}.wav", hit(int(rng.integers(1 << 30))))
    run = run_cli("data", "prepare", str(src), "--out", str(out), "--length", LENGTH, "--workers", "2",
                  "--no-progress", "--no-near-duplicates", stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any((out / ".staging").glob("*.flac")):  # the workers are working
            assert run.poll() is None and time.monotonic() < deadline, (
                "prepare ended before the test could kill it"
            )
            time.sleep(0.01)
        workers = [pid for pid in _children(run.pid) if b"spawn_main" in _cmdline(pid)]
        assert len(workers) == 2
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in workers if _alive(pid)]
    for pid in alive:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, "pool workers outlived their killed parent"


def test_an_unreadable_sub_folder_is_recorded_in_rejected_json(tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    wav(src / "ok" / "h.wav", hit(0))
    wav(src / "locked" / "k.wav", hit(1))
    locked = src / "locked"
    if os.geteuid() == 0:  # root reads a chmod 000 folder: make listing it fail as it would for a user
        real = os.scandir

        def scandir(path="."):
            if isinstance(path, (str, os.PathLike)) and os.path.abspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    locked.chmod(0)
    try:
        code = main(["data", "prepare", str(src), "--out", str(out), "--length", LENGTH, "--workers", "1",
                     "--no-progress"])  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert code == 0 and "unreadable" in capsys.readouterr().out
    [record] = read_json(out / "rejected.json")["rejected"]
    assert record["reason"] == "unreadable" and record["path"] == "src/locked"
    assert "src/locked" in record["detail"] and "Permission denied" in record["detail"]
    assert len(read_json(out / "manifest.json")["items"]) == 1


def test_workers_are_capped_at_the_core_count(tmp_path, monkeypatch, capsys):
    from drumdiff.data import conditioning, preparing

    used = []
    real = conditioning.process_files

    def process_files(jobs, *, workers, progress):
        used.append(workers)
        return real(jobs, workers=1, progress=progress)

    monkeypatch.setattr(preparing, "process_files", process_files)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    src, out = tmp_path / "src", tmp_path / "out"
    wav(src / "k" / "h.wav", hit(0))
    code = main(["data", "prepare", str(src), "--out", str(out), "--length", LENGTH, "--workers", "1000",
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and used == [3]
    assert err == ["note: --workers 1000 is more than the 3 CPU cores; using 3"]


def test_progress_in_a_log_is_plain_lines(tmp_path, capsys):
    from drumdiff.data import PreparedDataset

    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(3):
        wav(src / "k" / f"h{i}.wav", hit(i))
    assert main(["data", "prepare", str(src), "--out", str(out), "--length", LENGTH, "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines() == ["prepare: 3/3 files (100%)"]
    dataset = PreparedDataset(out, split="all", progress=True)  # what `drumdiff train` builds first
    err = capsys.readouterr().err
    assert len(dataset) == 3 and "\r" not in err and err.splitlines() == ["cache all: 3/3 clips (100%)"]


def test_data_help_gives_every_default_and_a_description(capsys):
    import argparse

    from drumdiff.cli import build_parser
    from drumdiff.data import PrepareSettings
    from drumdiff.data.conditioning import LUFS_RANGE

    def subparsers(parser):
        [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return action.choices

    data = subparsers(build_parser())["data"]
    verbs = subparsers(data)
    assert data.description and set(verbs) == {"prepare", "inspect"}
    for name, verb in verbs.items():
        assert verb.description, name
        for action in verb._actions:
            if action.option_strings and action.dest != "help":
                assert ("required" if action.required else "default:") in action.help, (
                    f"data {name} {action.option_strings[0]}: {action.help}"
                )
    helps = {a.dest: a.help for a in verbs["prepare"]._actions}
    defaults = PrepareSettings()
    assert (
        f"default: {defaults.peak_db:g})" in helps["peak_db"]
        and f"above {defaults.silence_db:g}" in helps["peak_db"]
    )
    assert (
        f"default: {defaults.lufs:g})" in helps["lufs"]
        and f"{LUFS_RANGE[0]:g} to {LUFS_RANGE[1]:g}" in helps["lufs"]
    )
    assert f"default: {defaults.length})" in helps["length"]
    assert f"default: {defaults.sample_rate})" in helps["sample_rate"]
    with pytest.raises(SystemExit) as exit_:
        main(["data", "inspect", "--help"])
    assert exit_.value.code == 0 and "default: 4" in capsys.readouterr().out
