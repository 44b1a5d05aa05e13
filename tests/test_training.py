"""Training: the end-to-end run through the real CLI (kill, resume, export, generate) and each bad input.

Tiny preset, 2048-sample clips written to tmp_path, CPU. Subprocesses run `python -m drumdiff` (or a small
driver that patches `drumdiff.training.checkpoint` before calling the CLI, to kill the process at a chosen moment).
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff.cli import main
from tests.conftest import require

LENGTH = 2048
STEPS = 6
TRAIN_FLAGS = ["--preset", "tiny", "--batch-size", "2", "--checkpoint-every", "2", "--logger", "csv"]

# Patches drumdiff.training.checkpoint, then runs the CLI. argv: MODE KILL_STEP drumdiff-args...
# MODE "after": SIGKILL right after the checkpoint of step >= KILL_STEP is on disk;
# MODE "during": SIGKILL half-way through writing the checkpoint of step >= KILL_STEP.
DRIVER = """
import io, os, signal, sys
import drumdiff.training.checkpoint as checkpoint
from drumdiff.cli import main

mode, kill_step = sys.argv[1], int(sys.argv[2])
if mode == "after":
    write = checkpoint.write_checkpoint
    def write_then_die(path, state):
        write(path, state)
        if state["step"] >= kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.write_checkpoint = write_then_die
else:
    serialize = checkpoint._serialize
    def die_mid_write(obj, file):
        if obj["step"] >= kill_step:
            buffer = io.BytesIO()
            serialize(obj, buffer)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        serialize(obj, file)
    checkpoint._serialize = die_mid_write
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny models run fastest on one thread (and do not stall when other jobs share the cores)."""
    require("lightning")  # the [train] extra: fails in CI when missing, skips locally
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_clips(folder: Path, classes: dict[str, int], *, seed: int = 0) -> Path:
    """Decaying noise bursts, one folder per class (different colours so the classes differ)."""
    rng = np.random.default_rng(seed)
    for k, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            n = LENGTH + int(rng.integers(0, 500))
            env = np.exp(-np.arange(n) / (150 + 200 * k))
            noise = rng.standard_normal((n, 2)).cumsum(0) * 0.05 if k % 2 else rng.standard_normal((n, 2))
            clip = 0.5 * env[:, None] * noise / (np.abs(noise).max() + 1e-9)
            sf.write(folder / name / f"{name}_{i:02d}.wav", clip.astype(np.float32), 44100)
    return folder


def _prepare(tmp: Path, classes: dict[str, int], *, name: str = "data") -> Path:
    src = _write_clips(tmp / f"{name}-src", classes)
    out = tmp / name
    mode = "folders" if len(classes) > 1 else "none"
    args = ["data", "prepare", str(src), "--out", str(out), "--classes", mode, "--length", str(LENGTH)]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared two-class folder (kick, snare), shared by the tests of this module."""
    return _prepare(tmp_path_factory.mktemp("data2"), {"kick": 8, "snare": 8})


def _cli(
    *args: str, driver: tuple[str, int] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if driver is None:
        cmd = [sys.executable, "-m", "drumdiff", *args]
    else:
        cmd = [sys.executable, "-c", DRIVER, driver[0], str(driver[1]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    for key in state_a:
        for name in state_a[key]:
            assert torch.equal(state_a[key][name], state_b[key][name]), f"optimizer {key}.{name} differs"


def test_end_to_end_kill_resume_export_generate(tmp_path: Path, data2: Path) -> None:
    """prepare -> train; SIGKILL after a checkpoint and during one -> resume == uninterrupted -> export -> generate."""
    # The real `data prepare` command, as a user runs it.
    src = _write_clips(tmp_path / "src", {"kick": 6, "hat": 6}, seed=1)
    data = tmp_path / "data"
    done = _cli(
        "data",
        "prepare",
        str(src),
        "--out",
        str(data),
        "--classes",
        "folders",
        "--length",
        str(LENGTH),
        "--workers",
        "1",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    steps = ["--max-steps", str(STEPS)]
    done = _cli("train", str(data), "--run-dir", str(straight), *TRAIN_FLAGS, *steps, "--preview-every", "6")
    assert done.returncode == 0, done.stderr
    assert (straight / "config.json").is_file()
    assert sorted(p.name for p in (straight / "previews").glob("*.png")) == ["step-0000006.png"]
    assert len(list((straight / "previews" / "step-0000006").glob("*.wav"))) == 4

    # Killed right after the step-2 checkpoint landed.
    killed = _cli(
        "train",
        str(data),
        "--run-dir",
        str(broken),
        *TRAIN_FLAGS,
        *steps,
        "--preview-every",
        "-1",
        driver=("after", 2),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _ckpt(broken)["step"] == 2

    # Without --resume or --overwrite the run folder is refused.
    refused = _cli("train", str(data), "--run-dir", str(broken), *TRAIN_FLAGS, *steps)
    assert refused.returncode == 2
    assert "--resume" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    # Resumed, then killed half-way through writing the step-4 checkpoint: step 2 stays loadable.
    killed = _cli("train", str(data), "--run-dir", str(broken), "--resume", *steps, driver=("during", 4))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _ckpt(broken)["step"] == 2
    assert list((broken / "checkpoints").glob(".last.ckpt.*.tmp")), (
        "the half-written temp file should be left over"
    )

    done = _cli("train", str(data), "--run-dir", str(broken), "--resume", *steps, "--preview-every", "-1")
    assert done.returncode == 0, done.stderr
    assert not list((broken / "checkpoints").glob(".last.ckpt.*.tmp"))
    a, b = _ckpt(straight), _ckpt(broken)
    assert a["step"] == b["step"] == STEPS
    _assert_same_weights(a, b)
    assert [row[0] for row in b["val_history"]] == [0, 2, 4, 6]
    assert a["val_history"] == b["val_history"]

    model = tmp_path / "model.safetensors"
    done = _cli("export", str(broken), str(model), "--fp16")
    assert done.returncode == 0, done.stderr
    from drumdiff.modelfile import read_metadata

    meta = read_metadata(model)
    assert meta["class_names"] == ["hat", "kick"] and meta["provenance"]["step"] == STEPS
    assert meta["dtype"] == "float16"

    out = tmp_path / "gen"
    done = _cli(
        "generate",
        "kick",
        "--model",
        str(model),
        "-n",
        "2",
        "--steps",
        "4",
        "--seed",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--no-plot",
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 2
    audio, rate = sf.read(wavs[0])
    assert rate == 44100 and audio.shape == (LENGTH, 2) and np.isfinite(audio).all()


def _train(data: Path, run: Path, *extra: str, steps: int = 2) -> int:
    args = ["train", str(data), "--run-dir", str(run), *TRAIN_FLAGS, "--max-steps", str(steps)]
    return main([*args, "--preview-every", "-1", "--logger", "none", *extra])


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_empty_and_unprepared_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "run") == 2
    assert "empty" in _error(capsys)
    raw = _write_clips(tmp_path / "raw", {"kick": 2})
    assert _train(raw, tmp_path / "run") == 2
    message = _error(capsys)
    assert "data prepare" in message and str(raw) in message


def test_missing_data_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path / "nope", tmp_path / "run") == 2
    message = _error(capsys)
    assert str(tmp_path / "nope") in message and "does not exist" in message


def test_batch_larger_than_dataset(tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(data2, tmp_path / "run", "--batch-size", "500") == 2
    message = _error(capsys)
    assert "batch size 500" in message and "--batch-size" in message


def test_resume_without_checkpoint(tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(data2, tmp_path / "run", "--resume") == 2
    assert "last.ckpt does not exist" in _error(capsys)


def test_init_from_other_layout_is_refused(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drumdiff.config import load_preset
    from drumdiff.modelfile import save_model_file
    from drumdiff.nn.unet1d import UNet1d

    other = load_preset("tiny").replace(channels=(8, 16, 16, 48), length=LENGTH)
    path = tmp_path / "other.safetensors"
    save_model_file(path, state_dict=UNet1d(other).state_dict(), config=other, class_names=[], provenance={})
    assert _train(data2, tmp_path / "run", "--init-from", str(path)) == 2
    message = _error(capsys)
    assert "other.safetensors" in message and "levels.2" in message and "mismatching" in message


def test_init_from_unconditional_on_classes(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unconditional model fine-tunes on a two-class folder: its weights load, class embeddings start fresh."""
    from drumdiff.config import load_preset
    from drumdiff.modelfile import save_model_file
    from drumdiff.nn.unet1d import UNet1d

    plain = load_preset("tiny").replace(length=LENGTH)
    torch.manual_seed(3)
    source = UNet1d(plain).state_dict()
    path = tmp_path / "plain.safetensors"
    save_model_file(path, state_dict=source, config=plain, class_names=[], provenance={})
    run = tmp_path / "run"
    assert _train(data2, run, "--init-from", str(path), "--max-steps", "1", "--lr", "0") == 0
    assert "start fresh" in capsys.readouterr().err
    state = _ckpt(run)
    assert state["model_config"]["num_classes"] == 2
    for key, value in source.items():
        assert torch.equal(state["model"][key], value), key  # lr 0: still the file's weights


def test_a_sigma_data_preset_trains_and_a_plain_file_warm_starts_it(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A preset file may set sigma_data, skip_scale, output_skip and position_features; --init-from a plain model says
    it is a warm start, and the position projections it lacks start at zero."""
    from drumdiff.config import load_preset
    from drumdiff.modelfile import save_model_file
    from drumdiff.nn.unet1d import UNet1d

    plain = load_preset("tiny").replace(length=LENGTH, num_classes=2)
    path = tmp_path / "plain.safetensors"
    source = UNet1d(plain).state_dict()
    save_model_file(path, state_dict=source, config=plain, class_names=["a", "b"])
    fields = {k: v for k, v in load_preset("tiny").to_dict().items() if k not in ("length", "num_classes")}
    preset = tmp_path / "units.json"
    preset.write_text(
        json.dumps(
            {**fields, "sigma_data": 0.1, "skip_scale": 0.2, "output_skip": False, "position_features": 4}
        )
    )
    run = tmp_path / "run"
    assert _train(data2, run, "--preset", str(preset), "--init-from", str(path), "--max-steps", "2") == 0
    err = capsys.readouterr().err
    assert (
        "sigma_data 1.0 -> 0.1, skip_scale 1.0 -> 0.2, output_skip True -> False" in err
        and "warm start" in err
    )
    assert "clip-position projections start fresh" in err
    state = _ckpt(run)
    assert state["model_config"]["sigma_data"] == 0.1 and state["model_config"]["output_skip"] is False
    assert state["model_config"]["position_features"] == 4 and state["model_config"]["skip_scale"] == 0.2
    assert state["model"]["levels.0.position.weight"].abs().sum() > 0  # trained from zero
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not torch.equal(state["model"]["levels.0.downsample.weight"], source["levels.0.downsample.weight"])


def test_disk_full_during_checkpoint(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import drumdiff.training.checkpoint as checkpoint

    serialize = checkpoint._serialize

    def fill_disk(obj: dict, file) -> None:
        if obj["step"] >= 2:
            file.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        serialize(obj, file)

    monkeypatch.setattr(checkpoint, "_serialize", fill_disk)
    run = tmp_path / "run"
    assert _train(data2, run, "--checkpoint-every", "1", steps=3) == 2
    message = _error(capsys)
    assert "disk is full" in message and "last.ckpt" in message and "kept" in message
    assert checkpoint.load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]


def test_repeated_nan_loss_stops(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import drumdiff.training.step as step

    real = step.v_loss

    def poisoned(net, x0, noise, t, **options):
        loss = real(net, x0, noise, t, **options)
        return loss * math.nan if net.training else loss

    monkeypatch.setattr(step, "v_loss", poisoned)
    run = tmp_path / "run"
    assert _train(data2, run, "--checkpoint-every", "1", steps=20) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "non-finite" in err[-1] and "in a row" in err[-1]
    # each skipped step is one plain warning line, not Python's file:line and source line
    skipped = [line for line in err if "step skipped" in line]
    assert len(skipped) == 5 and all(line.startswith("warning: step ") for line in skipped)
    assert not any("warnings.warn" in line or ".py:" in line for line in err)


def test_stream_sampler_splits_one_global_order() -> None:
    """Two ranks at batch 2 see exactly the positions and clips of one process at batch 4."""
    from drumdiff.training.stream import StreamBatchSampler

    def take(sampler: StreamBatchSampler, n: int) -> list:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    one = take(StreamBatchSampler(10, batch_size=4, seed=5), 6)
    r0 = take(StreamBatchSampler(10, batch_size=2, seed=5, rank=0, world=2), 6)
    r1 = take(StreamBatchSampler(10, batch_size=2, seed=5, rank=1, world=2), 6)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one
    resumed = take(StreamBatchSampler(10, batch_size=4, seed=5, start_batch=3), 3)
    assert resumed == one[3:]
    for epoch in range(2):  # each epoch is a permutation
        assert sorted(i for batch in one for i, p in batch if p // 10 == epoch) == list(range(10))


def test_learning_rate_warms_up_stays_flat_and_decays_to_zero() -> None:
    """Warm-up-stable-decay: --decay-steps takes the lr linearly to 0 at --max-steps; bad values are refused."""
    from drumdiff.errors import DrumdiffError
    from drumdiff.training.config import TrainConfig

    plain = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=100)
    assert plain.learning_rate(0) == pytest.approx(1e-4) and plain.learning_rate(9) == 1e-3
    assert plain.learning_rate(99) == 1e-3  # no decay by default
    wsd = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=100, decay_steps=20)
    assert wsd.learning_rate(79) == 1e-3 and wsd.learning_rate(80) == 1e-3
    assert wsd.learning_rate(90) == pytest.approx(5e-4) and wsd.learning_rate(99) == pytest.approx(5e-5)
    assert wsd.learning_rate(100) == 0.0 and wsd.learning_rate(150) == 0.0
    lrs = [wsd.learning_rate(s) for s in range(80, 100)]
    assert lrs == sorted(lrs, reverse=True)
    assert TrainConfig(lr=1e-3, warmup_steps=10, max_steps=10, decay_steps=10).learning_rate(
        0
    ) == pytest.approx(1e-4)
    for bad in (-1, 101):
        with pytest.raises(DrumdiffError, match="--decay-steps"):
            TrainConfig(max_steps=100, decay_steps=bad).check()


def test_class_balance_draws_classes_evenly_and_keeps_one_order() -> None:
    """--class-balance 1: a rare class is drawn as often as a common one; ranks and resume keep one order."""
    from drumdiff.cli import build_parser
    from drumdiff.errors import DrumdiffError
    from drumdiff.training.config import TrainConfig
    from drumdiff.training.stream import StreamBatchSampler

    labels = [0] * 10 + [1] * 90  # 10% of class 0

    def share(balance: float) -> float:
        sampler = StreamBatchSampler(100, batch_size=100, seed=2, labels=labels, class_balance=balance)
        it = iter(sampler)
        drawn = [labels[i] for _ in range(20) for i, _ in next(it)]
        return drawn.count(0) / len(drawn)

    assert share(0.0) == 0.1  # off: every clip once an epoch
    assert abs(share(1.0) - 0.5) < 0.03  # 2000 draws: the binomial's sd is 0.011
    assert 0.2 < share(0.5) < 0.3  # sqrt weights: 10/sqrt(10) : 90/sqrt(90) = 0.25

    def take(sampler: StreamBatchSampler, n: int) -> list:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    def balanced(batch_size: int, **kw) -> StreamBatchSampler:
        return StreamBatchSampler(100, batch_size=batch_size, seed=5, labels=labels, class_balance=1, **kw)

    one = take(balanced(8), 30)
    r0, r1 = take(balanced(4, rank=0, world=2), 30), take(balanced(4, rank=1, world=2), 30)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one
    resumed = take(balanced(8, start_batch=20), 10)
    assert resumed == one[20:]
    with pytest.raises(ValueError, match="labels"):
        StreamBatchSampler(100, batch_size=8, seed=5, class_balance=1)
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(DrumdiffError, match="--class-balance"):
            TrainConfig(class_balance=bad).check()
    args = build_parser().parse_args(["train", "data", "--run-dir", "run", "--class-balance", "0.5"])
    assert args.class_balance == 0.5


def test_augmentation_is_per_position_and_leaves_noise_alone() -> None:
    """--augment changes the clip deterministically per stream position; noise, t and dropout stay the same."""
    from drumdiff.data import Augment
    from drumdiff.synth import make
    from drumdiff.training.stream import TrainItems

    clips = [(make("snare", seed=i, length=2048), 0) for i in range(2)]
    plain = TrainItems(clips, seed=3, cfg_dropout=0.1)
    augmented = TrainItems(clips, seed=3, cfg_dropout=0.1, augment=Augment(), sample_rate=44100)
    a, b, again = plain[(1, 7)], augmented[(1, 7)], augmented[(1, 7)]
    assert not torch.equal(a[0], b[0]) and torch.equal(b[0], again[0])
    assert b[0].shape == a[0].shape and torch.isfinite(b[0]).all()
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3]) and a[4] == b[4]
    assert not torch.equal(augmented[(1, 8)][0], b[0])  # another position, another augmentation
    from drumdiff.cli import build_parser

    args = build_parser().parse_args(["train", "data", "--run-dir", "run", "--augment"])
    assert args.augment is True


def test_parse_size() -> None:
    from drumdiff.errors import DrumdiffError
    from drumdiff.training.config import parse_size

    assert parse_size("2GB") == parse_size("2GiB") == 2 * 1024**3
    assert parse_size("800MB") == 800 * 1024**2 and parse_size("1024") == 1024
    with pytest.raises(DrumdiffError, match="lots"):
        parse_size("lots")


def test_memory_budget_probes_on_cpu(tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A generous budget keeps the target batch without checkpointing; the choice and its reason are printed."""
    run = tmp_path / "run"
    assert _train(data2, run, "--memory-budget", "64GB", "--batch-size", "4", steps=1) == 0
    err = capsys.readouterr().err
    assert "memory probe: batch 4" in err and "chose batch 4 x accumulate 1" in err
    record = json.loads((run / "config.json").read_text())
    assert record["train"]["batch_size"] == 4 and record["memory_choice"]["grad_checkpointing"] is False


def test_previews_reach_tensorboard(tmp_path: Path, data2: Path) -> None:
    """Preview WAVs + PNG land in RUN/previews and, with the default logger, in TensorBoard."""
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = [
        "train",
        str(data2),
        "--run-dir",
        str(run),
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
    ]
    assert main(args) == 0
    assert len(list((run / "previews" / "step-0000001").glob("*.wav"))) == 4
    events = EventAccumulator(str(run / "logs"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert "preview/0" in tags["audio"] and "preview/png" in tags["images"]
    assert {"loss", "val_loss", "val_loss_raw"} <= set(tags["scalars"])


def test_export_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder without checkpoints and a damaged checkpoint: one line each, exit 2, nothing written."""
    (tmp_path / "run").mkdir()
    out = tmp_path / "model.safetensors"
    assert main(["export", str(tmp_path / "run"), str(out)]) == 2
    assert "no checkpoints/last.ckpt" in _error(capsys)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["export", str(broken), str(out)]) == 2
    assert "broken.ckpt" in _error(capsys) and not out.exists()


def test_loss_recipes_weight_shift_and_crop() -> None:
    """min-snr weights each example by min(alpha^2, gamma sigma^2); a log-SNR shift moves t; crops cut the start."""
    from drumdiff.diffusion import alpha_sigma, log_snr, t_from_log_snr, v_loss
    from drumdiff.nn.unet1d import UNet1d
    from drumdiff.training.step import batch_loss, crop_batch
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    net = UNet1d(tiny_config(num_classes=2)).eval()
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(3, 2, 4096, generator=g) * 0.3
    noise = torch.randn(3, 2, 4096, generator=g)
    t = torch.tensor([0.05, 0.5, 0.95])
    batch = (audio, torch.tensor([0, 1, 0]), noise, t, torch.tensor([False, True, False]))
    class_id = torch.tensor([0, 2, 0])  # the dropped example gets the null class
    with torch.no_grad():
        plain = v_loss(net, audio, noise, t, class_id=class_id)
        assert torch.allclose(batch_loss(net, batch, num_classes=2), plain.mean())
        alpha, sigma = alpha_sigma(t)
        weights = torch.minimum(alpha**2, 5.0 * sigma**2)
        assert weights[0] < 5.0 * sigma[0] ** 2 + 1e-6 and torch.isclose(weights[2], alpha[2] ** 2)
        weighted = batch_loss(net, batch, num_classes=2, loss_weight="min-snr", min_snr_gamma=5.0)
        assert torch.allclose(weighted, (plain * weights).mean())
        shifted_t = t_from_log_snr(log_snr(t.double()) - 1.0).float()  # log(alpha/sigma) - 1: noisier
        assert (shifted_t > t).all()
        shifted = v_loss(net, audio, noise, shifted_t, class_id=class_id).mean()
        assert torch.allclose(batch_loss(net, batch, num_classes=2, log_snr_shift=-1.0), shifted, atol=1e-6)
    cropped = crop_batch(batch, 1024)
    assert cropped[0].shape == (3, 2, 1024) and torch.equal(cropped[2], noise[..., :1024])
    with pytest.raises(ValueError, match="min-snr"):
        batch_loss(net, batch, num_classes=2, loss_weight="snr")


def test_quiet_weights_follow_the_clean_envelope() -> None:
    """Weight 1 at the clip's loudest, (peak/envelope)^2 below it, capped; silence gets the cap, not inf."""
    from drumdiff.diffusion import QUIET_BLOCK, quiet_weights

    length = 16 * QUIET_BLOCK
    audio = torch.zeros(2, 2, length)
    audio[0, 0, :QUIET_BLOCK] = 0.8  # a burst, then a -20 dB stretch (one channel is enough), then silence
    audio[0, 1, 5 * QUIET_BLOCK : 8 * QUIET_BLOCK] = -0.08
    weight = quiet_weights(audio, 1000.0)
    assert weight.shape == (2, 1, length)
    per_block = weight[0, 0, ::QUIET_BLOCK]
    assert torch.equal(per_block[:3], torch.ones(3))  # the burst and its reach of 2 blocks
    assert torch.allclose(per_block[6], torch.tensor(100.0))  # 20 dB under the peak: (0.8 / 0.08)^2
    assert torch.equal(per_block[11:], torch.full((5,), 1000.0))  # digital silence: the cap
    assert torch.equal(weight[1], torch.ones(1, length))  # an all-zero clip: no emphasis, no NaN
    assert torch.allclose(quiet_weights(audio, 10.0)[0, 0, ::QUIET_BLOCK][6], torch.tensor(10.0))
    assert torch.equal(quiet_weights(audio * 0.1, 1000.0), weight)  # relative to the clip's own peak


def test_quiet_weight_scales_the_error_of_quiet_samples() -> None:
    """batch_loss with --quiet-weight is the v-MSE weighted per sample, normalised to mean 1 over the batch."""
    from drumdiff.diffusion import quiet_weights, v_loss
    from drumdiff.nn.unet1d import UNet1d
    from drumdiff.training.step import batch_loss
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    net = UNet1d(tiny_config(num_classes=2)).eval()
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(2, 2, 4096, generator=g) * torch.linspace(1, 0, 4096) ** 4  # decaying one-shots
    noise = torch.randn(2, 2, 4096, generator=g)
    t = torch.tensor([0.2, 0.6])
    batch = (audio, torch.tensor([0, 1]), noise, t, torch.tensor([False, False]))
    with torch.no_grad():
        weight = quiet_weights(audio, 100.0)
        expected = v_loss(net, audio, noise, t, class_id=torch.tensor([0, 1]), weight=weight / weight.mean())
        quiet = batch_loss(net, batch, num_classes=2, quiet_weight=100.0)
        plain = batch_loss(net, batch, num_classes=2)
    assert torch.allclose(quiet, expected.mean()) and not torch.allclose(quiet, plain)


def test_validation_loss_is_the_plain_v_error_whatever_the_models_units() -> None:
    """A sigma_data model's validation loss is the error of its x0 estimate / sigma: comparable across units."""
    from drumdiff.diffusion import add_noise, alpha_sigma, make_denoiser
    from drumdiff.files import stable_seed
    from drumdiff.nn.unet1d import UNet1d
    from drumdiff.training.config import VAL_SEED, VAL_T
    from drumdiff.training.step import batch_loss, validation_loss
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    net = UNet1d(tiny_config(num_classes=2).replace(sigma_data=0.1, output_skip=False)).eval()
    with torch.no_grad():
        for param in net.parameters():  # the zero-initialised class embedding would hide the classes
            param.add_(0.02 * torch.randn_like(param))
    g = torch.Generator().manual_seed(1)
    clips = [(0.1 * torch.randn(2, 4096, generator=g), k % 2) for k in range(3)]
    loss = validation_loss(
        net, clips, items=3, batch_size=2, conditional=True, device=torch.device("cpu"), sigma_data=0.1
    )
    expected = []
    with torch.no_grad():
        for i, (audio, k) in enumerate(clips):
            noise = torch.randn(
                audio.shape, generator=torch.Generator().manual_seed(stable_seed("val", VAL_SEED, i))
            )
            for t_value in VAL_T:
                t = torch.tensor([t_value])
                x_t = add_noise(audio[None], noise[None], t)
                x0 = make_denoiser(net, class_id=torch.tensor([k]), sigma_data=0.1)(x_t, t)
                expected.append(float((x0 - audio).pow(2).mean()) / float(alpha_sigma(t)[1]) ** 2)
        assert loss == pytest.approx(sum(expected) / len(expected), rel=1e-4)
        # Training is on the model's own v: another unit than the validation's, the same minimiser.
        batch = (
            torch.stack([c[0] for c in clips]),
            torch.tensor([0, 1, 0]),
            torch.randn(3, 2, 4096, generator=g),
            torch.tensor([0.1, 0.5, 0.9]),
            torch.tensor([False, False, False]),
        )
        assert batch_loss(net, batch, num_classes=2, sigma_data=0.1) != pytest.approx(
            float(batch_loss(net, batch, num_classes=2)), rel=1e-3
        )


def test_recipe_flags_train_and_are_checked(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    recipe = [
        "--loss-weight",
        "min-snr",
        "--log-snr-shift",
        "-1",
        "--crop-length",
        "1024",
        "--crop-steps",
        "1",
        "--quiet-weight",
        "100",
    ]
    assert _train(data2, run, *recipe, steps=2) == 0
    saved = _ckpt(run)["train_config"]
    assert saved["loss_weight"] == "min-snr" and saved["crop_length"] == 1024 and saved["log_snr_shift"] == -1
    assert saved["quiet_weight"] == 100
    assert _train(data2, tmp_path / "bad1", "--crop-length", "1000", "--crop-steps", "1") == 2
    assert "multiple of the layout's downsampling" in _error(capsys)
    assert _train(data2, tmp_path / "bad2", "--crop-length", "1024") == 2
    assert "--crop-length and --crop-steps go together" in _error(capsys)
    assert _train(data2, tmp_path / "bad3", "--lr", "nan") == 2
    assert "--lr must be a positive number" in _error(capsys)
    assert _train(data2, tmp_path / "bad4", "--quiet-weight", "0.5") == 2
    assert "--quiet-weight must be a number of at least 1" in _error(capsys)
    assert not (tmp_path / "bad3").exists()  # refused before the run folder is made


# ------------------------------------------------------------------------------------- issue 16: hardening


def _metrics(run: Path) -> dict[str, list[int]]:
    """Steps at which RUN/logs/metrics.csv holds each metric."""
    import csv

    with open(run / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [int(r["step"]) for r in rows if r.get(key)] for key in ("loss", "val_loss")}


def test_ctrl_c_stops_with_the_resume_command_and_resume_keeps_every_metric(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C once: the step finishes, a checkpoint is written, exit 130 with the --resume command. A hard
    interrupt (Ctrl-C twice) keeps the last checkpoint. --resume with --logger csv keeps the whole history."""
    from drumdiff.training.module import DiffusionTrainer

    real_after_step = DiffusionTrainer._after_step
    events: dict[int, str] = {}

    def after_step(self: DiffusionTrainer) -> None:
        real_after_step(self)
        what = events.pop(self.step, None)
        if what == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        elif what == "hard":
            raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionTrainer, "_after_step", after_step)
    run = tmp_path / "run"
    args = ["train", str(data2), "--run-dir", str(run), *TRAIN_FLAGS, "--preview-every", "-1"]
    events[1] = "sigint"
    assert main([*args, "--max-steps", "4"]) == 130
    err = capsys.readouterr().err
    command = f"drumdiff train {data2} --run-dir {run} --resume"
    assert err.strip().splitlines()[-1] == (
        f"drumdiff train: interrupted at step 2, checkpoint written; continue with: {command}"
    )
    assert _ckpt(run)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    for noise in ("GPU available", "TPU available", "Tip:", "Detected KeyboardInterrupt", "warnings.warn"):
        assert noise not in err, noise
    assert not [line for line in err.splitlines() if line.startswith("train:") and "\r" in line]

    events[3] = "hard"  # resumed at 2; step 3 is logged, never checkpointed (--checkpoint-every 2)
    assert main([*args, "--resume", "--max-steps", "4"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"drumdiff train: interrupted at step 3; its checkpoint of step 2 is kept; continue with: {command}"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning leaves it ignored

    assert main([*args, "--resume", "--max-steps", "4"]) == 0
    # Every step once: the first run's 1-2, step 3 of the interrupted run dropped and done again, then 4.
    assert _metrics(run) == {"loss": [1, 2, 3, 4], "val_loss": [0, 2, 4]}


def test_diverged_weights_are_never_checkpointed(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An lr past float32's range makes the weights Inf at once: refused at the checkpoint, not 'done'."""
    run = tmp_path / "run"
    assert _train(data2, run, "--lr", "1e41", "--checkpoint-every", "1", steps=2) == 2
    message = _error(capsys)
    assert "weights hold NaN or Inf (training diverged)" in message and "no checkpoint was written" in message
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_full_disk_in_torch_save_is_one_line(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save turns a failed write into a RuntimeError ("enforce fail ..."): still one line, exit 2."""
    import io

    import drumdiff.training.checkpoint as checkpoint

    class FullDisk(io.RawIOBase):
        def __init__(self, file, room: int) -> None:
            self.file, self.room = file, room

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(data)
            return self.file.write(data)

    serialize = checkpoint._serialize

    def fill_disk(obj: dict, file) -> None:
        serialize(obj, FullDisk(file, 10_000) if obj["step"] >= 2 else file)

    monkeypatch.setattr(checkpoint, "_serialize", fill_disk)
    run = tmp_path / "run"
    assert _train(data2, run, "--checkpoint-every", "1", steps=3) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"drumdiff train: error: cannot write checkpoint {run}"), err[-1]
    assert "the previous last.ckpt is kept" in err[-1] and not any("Traceback" in line for line in err)
    assert checkpoint.load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]


def test_resume_keeps_the_tensorboard_history_once(
    tmp_path: Path, data2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default logger: steps logged after the checkpoint by the interrupted run are purged, not doubled."""
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from drumdiff.training.module import DiffusionTrainer

    real_after_step, interrupted = DiffusionTrainer._after_step, []

    def after_step(self: DiffusionTrainer) -> None:
        real_after_step(self)
        if self.step == 3 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionTrainer, "_after_step", after_step)
    run = tmp_path / "run"
    args = ["train", str(data2), "--run-dir", str(run), "--preset", "tiny", "--batch-size", "2"]
    args += ["--checkpoint-every", "2", "--preview-every", "-1", "--max-steps", "4"]
    assert main(args) == 130
    assert main([*args, "--resume"]) == 0
    events = EventAccumulator(str(run / "logs"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val_loss")] == [0, 2, 4]


def test_resume_may_change_the_learning_rate_and_crops_and_keeps_the_rest(
    tmp_path: Path, data2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(data2, run, "--checkpoint-every", "1", steps=1) == 0
    capsys.readouterr()
    changes = ["--lr", "3e-4", "--seed", "9", "--crop-length", "1024", "--crop-steps", "3"]
    changes += ["--decay-steps", "2", "--class-balance", "1"]
    assert _train(data2, run, "--resume", *changes, "--checkpoint-every", "1", steps=2) == 0
    err = capsys.readouterr().err
    assert "ignoring --seed" in err and "--lr" not in err.split("ignoring", 1)[1].splitlines()[0]
    saved = _ckpt(run)
    assert saved["step"] == 2 and saved["train_config"]["lr"] == 3e-4 and saved["train_config"]["seed"] == 0
    assert saved["train_config"]["crop_length"] == 1024 and saved["train_config"]["crop_steps"] == 3
    assert saved["train_config"]["decay_steps"] == 2 and saved["train_config"]["class_balance"] == 1
