"""The lent-GPU run (scripts/gpu_pack.py, gpu_train.sh, gpu_join.py) on the CPU: pack, unpack, split, join.

A prepared dataset of short synthetic clips (train, val and a held-out test source), a tiny model file as
the init model, a git checkout made in tmp_path; no network (`--no-wheels`). The last test runs
gpu_train.sh itself, as the device would, for about 10 s of the tiny model (about 25 s in all).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff import audio as audio_io
from drumdiff.cli import main as drumdiff_main
from drumdiff.errors import DrumdiffError
from drumdiff.modelfile import load_model_file
from tests.conftest import ROOT, require
from tests.helpers import tiny_model_file

LENGTH = 4096  # tests.helpers.TEST_LENGTH: the tiny model's length


if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))  # the scripts import gpu_bundle from beside themselves

import gpu_bundle as bundle  # noqa: E402
import gpu_join  # noqa: E402
import gpu_pack  # noqa: E402
import gpu_parts  # noqa: E402


def _write_clips(folder: Path, classes: tuple[str, ...], *, kits: int, seed: int) -> Path:
    """Decaying noise bursts shorter than LENGTH (so that `prepare` pads them with silence), two per kit
    folder `CLASS/kitNN/` (a kit is a group: the split rule sends some to val)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        for j in range(kits):
            (folder / name / f"kit{j:02d}").mkdir(parents=True, exist_ok=True)
            for i in range(2):
                n = int(rng.integers(900, 2500))
                env = np.exp(-np.arange(n) / (120 + 150 * k))
                noise = rng.standard_normal((n, 2))
                clip = 0.6 * env[:, None] * noise / np.abs(noise).max()
                sf.write(folder / name / f"kit{j:02d}" / f"{name}_{i}.wav", clip.astype(np.float32), 44100)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared two-class folder with train, val and test clips (24-bit FLAC, LENGTH samples)."""
    tmp = tmp_path_factory.mktemp("gpu-data")
    src = _write_clips(tmp / "src", ("kick", "snare"), kits=6, seed=0)  # snare kit00, kit04: val
    held_out = _write_clips(tmp / "held-out", ("kick", "snare"), kits=1, seed=1)
    out = tmp / "data"
    args = ["data", "prepare", str(src), "--test-source", str(held_out), "--out", str(out)]
    args += ["--classes", "folders", "--length", str(LENGTH), "--workers", "1", "--no-progress"]
    assert drumdiff_main(args) == 0
    splits = {item["split"] for item in json.loads((out / "manifest.json").read_text())["items"]}
    assert splits == {"train", "val", "test"}, splits
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout that ignores .gpu/, with one tracked file."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/.gpu/\n")
    (root / "README").write_text("x" * 1000)
    return root


@pytest.fixture(scope="module")
def init_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpu-init") / "init.safetensors"
    return tiny_model_file(path, num_classes=2, class_names=["kick", "snare"])


def _pack(data: Path, folder: Path, init: Path | None, *extra: str) -> int:
    args = [str(data), "--out", str(folder), "--no-wheels", "--workers", "2", *extra]
    return gpu_pack.main([*args, "--init", str(init)] if init else args)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_pack_shrinks_and_unpack_gives_the_clips_back(
    data: Path, repo: Path, init_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = repo / ".gpu"
    assert _pack(data, folder, init_model) == 0
    printed = capsys.readouterr().out
    assert "total sent by a device call" in printed and "of 64.00 MiB" in printed
    record = json.loads((folder / "pack.json").read_text())
    original = json.loads((data / "manifest.json").read_text())
    kept = [item for item in original["items"] if item["split"] in ("train", "val")]
    assert record["clips"]["count"] == len(kept)
    assert record["clips"]["left_out"] == {"test": 4}
    assert record["clips"]["frames_kept"] < record["clips"]["frames_full"] // 2  # the silence is cut
    assert record["init"]["converted_to_fp16"]  # the helper's model file is fp32: half the bytes to carry
    carried = load_model_file(folder / "init.safetensors")
    assert carried.metadata["dtype"] == "float16" and carried.class_names == ["kick", "snare"]
    for name, weight in load_model_file(init_model).net.state_dict().items():
        assert torch.equal(carried.net.state_dict()[name], weight.half().float()), name
    assert record["wheels"] == [] and not (folder / "wheels").exists()
    packed = sum((folder / "clips" / item["path"]).stat().st_size for item in kept)
    assert packed < 0.6 * sum((data / item["path"]).stat().st_size for item in kept)

    # Deterministic: packing again gives the same bytes.
    first = _digests(folder)
    assert _pack(data, folder, init_model) == 0
    assert _digests(folder) == first

    out = tmp_path / "unpacked"
    assert bundle.main([str(folder), str(out)]) == 0
    unpacked = json.loads((out / "manifest.json").read_text())
    assert unpacked == {**original, "items": kept}
    for item in kept:
        clip, rate = audio_io.read(out / item["path"])
        source, _ = audio_io.read(data / item["path"])
        assert rate == 44100 and clip.shape == source.shape == (2, LENGTH)
        assert sf.info(str(out / item["path"])).subtype == "PCM_24"
        # exactly the 16-bit quantisation of the prepared clip, at full length again
        assert torch.equal(clip, torch.from_numpy(bundle.quantize16(source).T / 32768.0).float())
        assert float((clip - source).abs().max()) <= 0.5 / 32768 + 1e-7
    assert bundle.main([str(folder), str(out)]) == 2  # never into a folder with files


def test_an_fp16_init_that_travels_with_the_checkout_is_named_not_copied(
    data: Path, repo: Path, init_model: Path, tmp_path: Path
) -> None:
    from drumdiff.modelfile import save_model_file

    loaded = load_model_file(init_model)
    tracked = repo / "checkpoints" / "wip.safetensors"
    tracked.parent.mkdir()
    save_model_file(tracked, state_dict=loaded.net.state_dict(), config=loaded.config,
                    class_names=loaded.class_names, provenance={}, fp16=True)  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "add", "checkpoints/wip.safetensors"], check=True)
    folder = repo / ".gpu"
    assert _pack(data, folder, tracked) == 0
    record = json.loads((folder / "pack.json").read_text())["init"]
    assert (
        record["file"] == "../checkpoints/wip.safetensors" and record["in_checkout"] and record["bytes"] == 0
    )
    assert not (folder / "init.safetensors").exists() and (folder / record["file"]).resolve() == tracked
    untracked = tmp_path / "elsewhere.safetensors"  # outside the checkout: copied as before
    shutil.copy(tracked, untracked)
    assert _pack(data, folder, untracked) == 0
    record = json.loads((folder / "pack.json").read_text())["init"]
    assert (
        record["file"] == "init.safetensors"
        and record["bytes"] == (folder / "init.safetensors").stat().st_size
    )


def test_split_and_join_check_every_part(tmp_path: Path, init_model: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(np.random.default_rng(0).bytes(10_000))
    small = tmp_path / "small.json"
    small.write_text("{}")
    out = tmp_path / "out"
    gpu_parts.split_files([blob, small, init_model], out, part_bytes=4096)
    listing = json.loads((out / "parts.json").read_text())["files"]
    assert [p["name"] for p in listing["blob.bin"]["parts"]] == [f"blob.bin.part{k}" for k in range(3)]
    assert [p["name"] for p in listing["small.json"]["parts"]] == ["small.json"]  # small files stay whole
    assert all(p.stat().st_size <= 4096 for p in out.iterdir() if p.name != "parts.json")
    joined = gpu_parts.join_file(out, tmp_path / "blob.joined", name="blob.bin", check_model=False)
    assert joined.read_bytes() == blob.read_bytes()

    model = tmp_path / "joined" / "model.safetensors"
    assert gpu_join.main([str(out), "--out", str(model)]) == 0  # the one .safetensors of parts.json
    assert model.read_bytes() == init_model.read_bytes()
    assert load_model_file(model).class_names == ["kick", "snare"]
    assert gpu_join.main([str(out), "--out", str(model)]) == 2  # no silent overwrite

    part = out / f"{init_model.name}.part1"
    damaged = bytearray(part.read_bytes())
    damaged[100] ^= 1
    part.write_bytes(bytes(damaged))
    with pytest.raises(DrumdiffError, match="part1 is damaged"):
        gpu_parts.join_file(out, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    part.unlink()
    with pytest.raises(DrumdiffError, match="part1 is missing"):
        gpu_parts.join_file(out, tmp_path / "bad.safetensors")
    assert not list(tmp_path.glob(".bad.safetensors*"))  # no temporary file left


def test_pack_is_refused_when_it_cannot_travel(
    data: Path, repo: Path, init_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = repo / ".gpu"
    assert _pack(data, folder, init_model, "--limit-mib", "0.05") == 2
    assert "too big to travel" in capsys.readouterr().err
    assert not folder.exists()

    other = repo / "pack"  # not ignored: it would travel twice
    assert _pack(data, other, None) == 2
    assert "git does not ignore" in capsys.readouterr().err and not other.exists()

    foreign = repo / ".gpu"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert _pack(data, foreign, None) == 2
    assert "other files than a pack" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_travelling_bytes_counts_tracked_and_unignored_files(repo: Path) -> None:
    (repo / "untracked.bin").write_bytes(b"y" * 500)
    (repo / ".gpu").mkdir()
    (repo / ".gpu" / "big.bin").write_bytes(b"z" * 5000)  # ignored: travels only when carried
    subprocess.run(["git", "-C", str(repo), "add", "README"], check=True)
    expected = sum((repo / n).stat().st_size for n in ("README", ".gitignore", "untracked.bin"))
    assert bundle.travelling_bytes(repo) == expected


def _gpu_train(folder: Path, tmp_path: Path, minutes: str, *flags: str) -> tuple[Path, str]:
    """Run scripts/gpu_train.sh as the device would (here with the venv's Python); returns ($OUT, log)."""
    require("lightning")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_train.sh"), str(folder), minutes, *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    log = (out / "log.txt").read_text()
    assert result.returncode == 0, log[-3000:]
    print(f"gpu_train.sh {minutes} {' '.join(flags)} on the CPU took {time.monotonic() - started:.1f} s")
    return out, log


def test_gpu_train_sh_runs_on_the_cpu_and_stops_at_its_minutes(
    data: Path, repo: Path, init_model: Path, tmp_path: Path
) -> None:
    """The device script end to end on the tiny model in fp32: unpack, train, then the device's way to stop:
    Ctrl-C (SIGINT) at MINUTES, drumdiff finishes its step and checkpoints (exit 130), and the script exports
    that checkpoint and splits it. 0.3 minutes: about 10 s of training."""
    folder = repo / ".gpu"
    assert _pack(data, folder, init_model) == 0
    flags = ["--batch-size", "2", "--precision", "32", "--checkpoint-every", "1000000"]  # Ctrl-C's only
    out, log = _gpu_train(folder, tmp_path, "0.3", *flags)
    assert "unpacked 24 clips" in log and "train exit code 130" in log, log[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "drums.safetensors", "log.txt", "metrics.csv", "parts.json"], names
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"] == str(folder / "init.safetensors")
    train = config["train"]
    assert train["batch_size"] == 2 and train["augment"] and train["lr"] == 4e-4
    assert train["max_steps"] == 1_000_000 and train["preview_every"] == -1 and train["logger"] == "csv"
    loaded = load_model_file(gpu_parts.join_file(out, tmp_path / "back.safetensors"))
    step = loaded.metadata["provenance"]["step"]
    assert loaded.metadata["dtype"] == "float16" and loaded.class_names == ["kick", "snare"]
    assert step > 0 and f"interrupted at step {step}, checkpoint written" in log
