"""Issue 16: nothing lost, no traceback, every message names the real cause, through the real CLI.

Tiny models from tests/helpers.py, CPU. Subprocesses only where a second process or a resource limit is the
point (concurrent writers, a file-size limit, an import check); everything else runs `drumdiff.cli.main`
in-process, with the sampler or a low-level writer replaced to interrupt or fail at a chosen moment.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from drumdiff.cli import main
from tests.helpers import TEST_LENGTH, drum, tiny_config, tiny_model_file, training_checkpoint

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", class_names=["kick"])


@pytest.fixture(scope="module")
def classes_path(tmp_path_factory) -> Path:
    """A conditional model whose classes came from `Kicks/` and `Snares/` folders."""
    path = tmp_path_factory.mktemp("model") / "kits.safetensors"
    return tiny_model_file(path, num_classes=2, class_names=["Kicks", "Snares"])


@pytest.fixture(scope="module")
def clip_wav(tmp_path_factory) -> Path:
    """A clip already in the tiny model's format (44.1 kHz stereo, TEST_LENGTH samples, 24-bit)."""
    path = tmp_path_factory.mktemp("in") / "hit.wav"
    sf.write(path, drum(TEST_LENGTH).T.numpy() * 0.5, 44100, subtype="PCM_24")
    return path


def run(*args: object) -> int:
    return main([str(a) for a in args])


def last_error(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def assert_consistent(out: Path, count: int) -> list[dict]:
    """Exactly `count` clips, each readable, with its sidecar and one line in generation.jsonl; no temp files."""
    audio = sorted(p for p in out.iterdir() if p.suffix in (".wav", ".flac") and not p.name.startswith("."))
    assert len(audio) == count, [p.name for p in audio]
    lines = (out / "generation.jsonl").read_text().splitlines() if count else []
    records = [json.loads(line) for line in lines]
    assert sorted(r["file"] for r in records) == [p.name for p in audio]  # each clip listed exactly once
    for path in audio:
        assert sf.info(path).frames > 0
        assert json.loads(path.with_suffix(".json").read_text())["file"] == path.name
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".drumdiff.lock"]
    assert not hidden, hidden
    return records


def interrupt_on_call(monkeypatch: pytest.MonkeyPatch, call: int, error: BaseException) -> None:
    """Make the `call`-th sampler call (one per batch) raise `error`, as Ctrl-C would mid-request."""
    import drumdiff.pipeline as pipeline

    real, calls = pipeline.get_sampler, [0]

    def get_sampler(name: str):
        sample = real(name)

        def counting(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call:
                raise error
            return sample(*args, **kwargs)

        return counting

    monkeypatch.setattr(pipeline, "get_sampler", get_sampler)


# ---------------------------------------------------------------------------------------------- data loss

WRITER = """
import sys, time, pathlib
from drumdiff.cli import main
ready, go, rounds, *argv = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
sys.exit(max(main(argv) for _ in range(int(rounds))))
"""


def test_concurrent_generate_into_one_folder_loses_nothing(model_path, tmp_path) -> None:
    """Two processes, same seeds, one --out, several rounds at once: every clip and every record survives."""
    out, rounds = tmp_path / "out", 6
    procs = []
    for k in range(2):
        argv = ["generate", "--model", model_path, "-n", 2, "--batch-size", 1, "--steps", 1 + k, "--seed", 0]
        argv += ["--out", out, "--no-progress", "--threads", 1]
        cmd = [sys.executable, "-c", WRITER, tmp_path / f"ready{k}", tmp_path / "go", rounds, *argv]
        procs.append(subprocess.Popen([str(c) for c in cmd], env=ENV, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)) and time.monotonic() < deadline:
        time.sleep(0.02)
    (tmp_path / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    records = assert_consistent(out, 2 * rounds * 2)
    assert {r["steps"] for r in records} == {1, 2}  # both writers' clips are there, none overwritten


def test_ctrl_c_keeps_the_finished_batches(model_path, tmp_path, monkeypatch, capsys) -> None:
    interrupt_on_call(monkeypatch, 3, KeyboardInterrupt())
    out = tmp_path / "out"
    args = ["generate", "--model", model_path, "-n", 10, "--batch-size", 2, "--steps", 1, "--seed", 0]
    assert run(*args, "--out", out, "--no-progress") == 130
    err = last_error(capsys)
    assert err[-1] == f"drumdiff generate: interrupted: 4 of 10 clip(s) written to {out}"
    records = assert_consistent(out, 4)
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3]


def test_a_failing_log_write_keeps_every_clip_on_disk_recorded(
    model_path, tmp_path, monkeypatch, capsys
) -> None:
    """A full disk while appending generation.jsonl: that batch is taken back, the earlier ones stay."""
    import drumdiff.outputs as outputs

    real, calls = outputs._write_log, [0]

    def fill_disk(handle, data: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:
            handle.write(data[:10])  # half a line, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, data)

    monkeypatch.setattr(outputs, "_write_log", fill_disk)
    out = tmp_path / "out"
    args = ["generate", "--model", model_path, "-n", 6, "--batch-size", 2, "--steps", 1, "--seed", 0]
    assert run(*args, "--out", out, "--no-progress") == 2
    err = last_error(capsys)
    assert len(err) == 1 and "generation.jsonl: the disk is full" in err[0], err
    assert "the 2 clip(s) written before are kept" in err[0]
    assert_consistent(out, 2)
    assert (out / "generation.jsonl").read_text().endswith("\n")  # the half line was cut back


LIMITED = """
import resource, signal, sys
from drumdiff.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(not hasattr(os, "setpgid"), reason="POSIX resource limits")
def test_a_real_failing_audio_write_is_one_line_and_leaves_nothing(model_path, tmp_path) -> None:
    """libsndfile fails part-way (a 20 kB file-size limit; a float32 clip is 32 kB): one line, nothing left."""
    out = tmp_path / "out"
    args = ["generate", "--model", model_path, "-n", 2, "--steps", 1, "--seed", 0, "--format", "float32"]
    cmd = [sys.executable, "-c", LIMITED, "20000", *map(str, args), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and f"cannot write {out}/kick_seed0_000.wav: libsndfile" in err[0], err
    assert not out.exists()  # nothing was written, so the folder it made is gone too


def test_huge_counts_are_refused_with_a_clear_message(model_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert run("generate", "--model", model_path, "-n", 10**11, "--out", out) == 2
    err = last_error(capsys)
    assert len(err) == 1 and "-n must be from 1 to 100000" in err[0] and "several requests" in err[0]
    assert not out.exists()


def test_a_wav_never_outgrows_its_4gb_header(tmp_path) -> None:
    from drumdiff import audio as audio_io
    from drumdiff.errors import AudioError

    huge = torch.zeros(1, 1).expand(2, 800_000_000)  # 4.8 GB as 24-bit WAV; a view, nothing allocated
    with pytest.raises(AudioError, match="more than a WAV file can hold"):
        audio_io.write(tmp_path / "big.wav", huge, 44100, format="wav24")
    assert not list(tmp_path.iterdir())
    assert audio_io.format_limit("flac", channels=2, frames=800_000_000, sample_rate=44100) is None


# ---------------------------------------------------------------------------------------------- one line, exit 2


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "meta", "tpu"])
def test_a_device_this_torch_lacks_is_one_line(device, model_path, tmp_path, capsys) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = tmp_path / "out"
    assert run("generate", "--model", model_path, "--device", device, "--out", out) == 2
    err = last_error(capsys)
    assert len(err) == 1 and f"device {device!r}" in err[0] and "cpu" in err[0], err
    assert not out.exists()


def _model_with(path: Path, source: Path, *, meta: dict | None = None, poison: bool = False) -> Path:
    """A copy of a model file with some metadata replaced, or with one weight tensor set to NaN."""
    from safetensors import safe_open

    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
    if poison:
        name = sorted(tensors)[0]
        tensors[name] = torch.full_like(tensors[name], float("nan"))
    for key, value in (meta or {}).items():
        metadata[key] = json.dumps(value)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nan", "hold NaN or Inf; the file is damaged or its training diverged"),
        ("rate0", "sample_rate 0 is impossible"),
        ("names", "class embedding of 2 classes but 3 class names"),
    ],
)
def test_a_broken_model_is_blamed_at_load(case, message, classes_path, tmp_path, capsys) -> None:
    config = tiny_config(num_classes=2).to_dict()
    changes = {
        "nan": {"poison": True},
        "rate0": {"meta": {"config": {**config, "sample_rate": 0}}},
        "names": {"meta": {"class_names": ["Kicks", "Snares", "Hats"]}},
    }[case]
    broken = _model_with(tmp_path / f"{case}.safetensors", classes_path, **changes)
    out = tmp_path / "out"
    assert run("generate", "kick", "--model", broken, "--steps", 1, "--out", out, "--no-progress") == 2
    err = last_error(capsys)
    assert len(err) == 1 and str(broken) in err[0] and message in err[0], err
    assert not out.exists()


def test_huge_guidance_is_blamed_on_the_value_not_on_a_file(classes_path, tmp_path, capsys) -> None:
    out = tmp_path / "new" / "parents" / "out"  # a request that fails mid-way takes back the folders it made
    args = ["generate", "kick", "--model", classes_path, "--guidance", "1e30", "-n", 1, "--steps", 3]
    assert run(*args, "--out", out, "--no-progress") == 2
    err = last_error(capsys)
    assert len(err) == 1 and "--guidance 1e+30 is too large" in err[0], err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------- clear results


def test_vary_at_a_tiny_strength_and_inpaint_of_a_tiny_keep(model_path, clip_wav, tmp_path, capsys) -> None:
    """Values inside the documented ranges work: strength 1e-9 returns the input, 0.01 ms keeps one sample."""
    out = tmp_path / "out"
    common = ["--model", model_path, "--seed", 3, "--out", out, "--no-progress"]
    assert run("vary", clip_wav, "--strength", "1e-9", *common) == 0
    original, _ = sf.read(clip_wav)
    varied, _ = sf.read(next(out.glob("hit_vary1e-09_*.wav")))
    assert abs(varied - original).max() < 1e-4
    assert run("inpaint", clip_wav, "--keep-ms", "0.01", "--steps", 2, *common) == 0
    path = next(out.glob("hit_inpaint_*.wav"))
    inpainted, _ = sf.read(path)
    assert (inpainted[0] == original[0]).all() and not (inpainted[1:] == original[1:]).all()
    assert json.loads(path.with_suffix(".json").read_text())["keep_samples"] == 1


def test_interpolate_has_no_n(model_path, clip_wav, tmp_path, capsys) -> None:
    from drumdiff.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert not re.search(r"\s-n\s", subparsers.choices["interpolate"].format_help())
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit 2
        run("interpolate", clip_wav, clip_wav, "-n", 3, "--model", model_path)
    assert exit_.value.code == 2
    assert "unrecognized arguments: -n" in capsys.readouterr().err


def test_many_steps_warn_and_absurd_steps_are_refused(model_path, tmp_path, monkeypatch, capsys) -> None:
    import drumdiff.pipeline as pipeline

    monkeypatch.setattr(pipeline, "get_sampler", lambda name: lambda den, x, ts, **kw: x * 0)  # instant
    out = tmp_path / "out"
    assert (
        run("generate", "--model", model_path, "-n", 1, "--steps", 5000, "--out", out, "--no-progress") == 0
    )
    assert "warning: --steps 5000 is far more than the samplers need" in capsys.readouterr().err
    assert run("generate", "--model", model_path, "--steps", 10**6, "--out", tmp_path / "o2") == 2
    assert "--steps must be from 1 to 100000" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_errors_are_not_printed_through_the_progress_bar(model_path, tmp_path, monkeypatch) -> None:
    interrupt_on_call(monkeypatch, 2, KeyboardInterrupt())
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["generate", "--model", model_path, "-n", 4, "--batch-size", 1, "--steps", 2, "--seed", 0]
    assert run(*args, "--out", tmp_path / "out", "--progress") == 130
    last = terminal.getvalue().rstrip("\n").split("\n")[-1]
    assert last.split("\r")[-1].startswith("drumdiff generate: interrupted: 1 of 4"), repr(last)


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(model_path, tmp_path, capsys) -> None:
    args = ["generate", "--model", model_path, "-n", 2, "--batch-size", 1, "--steps", 2, "--seed", 0]
    assert run(*args, "--out", tmp_path / "out", "--progress") == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "generate: 4/4 steps (100%)" in err


def test_class_names_match_ignoring_case_and_plural(classes_path, tmp_path, capsys) -> None:
    """The README's `--classes folders` on Kicks/ then `generate kick`."""
    out = tmp_path / "out"
    args = ["--model", classes_path, "-n", 1, "--steps", 1, "--seed", 0, "--out", out, "--no-progress"]
    assert run("generate", "kick", *args) == 0
    record = json.loads(next(out.glob("Kicks_seed0_000.json")).read_text())
    assert record["class_name"] == "Kicks" and record["class_name_requested"] == "kick"
    assert run("generate", "SNARE", *args) == 0
    assert run("generate", "hat", *args) == 2
    assert "unknown class 'hat'; this model knows Kicks, Snares" in capsys.readouterr().err


def test_a_clip_depends_on_n_and_batch_size_only_by_rounding(model_path, tmp_path) -> None:
    """What the README says: same request, same bytes; other -n/--batch-size, the same clip to a few LSB."""
    clips = {}
    for name, extra in {
        "a": ["-n", 3, "--batch-size", 3],
        "b": ["-n", 3, "--batch-size", 3],
        "c": ["-n", 1],
    }.items():
        out = tmp_path / name
        assert run("generate", "--model", model_path, "--steps", 3, "--seed", 5, *extra, "--out", out) == 0
        clips[name] = sf.read(out / "kick_seed5_000.wav", dtype="int32")[0] >> 8  # 24-bit sample values
    assert (clips["a"] == clips["b"]).all()
    assert abs(clips["a"] - clips["c"]).max() <= 200


def test_models_lists_without_importing_torch(model_path, tmp_path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "mine.safetensors").write_bytes(model_path.read_bytes())
    script = "import sys; from drumdiff.cli import main; code = main(['models']); assert 'torch' not in sys.modules; sys.exit(code)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**ENV, "DRUMDIFF_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "mine" in done.stdout


def test_every_help_gives_its_defaults() -> None:
    from drumdiff.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for verb in (
        "generate",
        "vary",
        "interpolate",
        "inpaint",
        "train",
        "export",
        "average",
        "convert",
        "evaluate",
    ):
        parser = subparsers.choices[verb]
        assert parser.description, verb
        for action in parser._actions:
            if action.option_strings and action.help and action.dest != "help":
                assert "default" in action.help or "required" in action.help, (verb, action.option_strings)


def test_train_help_names_every_shipped_preset() -> None:
    from drumdiff.cli import build_parser
    from drumdiff.config import preset_names

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    preset = next(a for a in subparsers.choices["train"]._actions if a.dest == "preset")
    assert "small-edm-pos" in preset_names()
    for name in preset_names():
        assert name in preset.help, name


# ---------------------------------------------------------------------------------------------- convert, export


def _original_state_dict(path: Path) -> Path:
    """A tiny-audio-diffusion style UNetV0 state_dict, made from a drumdiff network through the key map."""
    from drumdiff.convert import ORIGINAL_ALIASES, original_key_map
    from drumdiff.nn.unet1d import UNet1d

    config = tiny_config()
    ours = UNet1d(config).state_dict()
    theirs = {name: ours[key] for key, name in original_key_map(config).items()}
    theirs.update({alias: theirs[name] for alias, name in ORIGINAL_ALIASES.items()})
    torch.save(theirs, path)
    return path


def test_convert_and_export_never_replace_a_file_without_force(tmp_path, capsys) -> None:
    source = _original_state_dict(tmp_path / "weights.pt")
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"precious")
    assert run("convert", source, out) == 2
    assert f"{out} already exists; pass --force" in last_error(capsys)[-1]
    assert out.read_bytes() == b"precious"
    assert run("convert", source, out, "--force") == 0
    printed = capsys.readouterr().out
    assert "ModelConfig(" not in printed and "4 levels of 8/16/32/64 channels" in printed
    ckpt = training_checkpoint(tmp_path / "last.ckpt")
    before = out.read_bytes()
    assert run("export", ckpt, out) == 2
    assert "already exists; pass --force" in last_error(capsys)[-1]
    assert out.read_bytes() == before
    assert run("export", ckpt, out, "--force") == 0 and out.read_bytes() != before


def test_export_refuses_non_finite_weights(tmp_path, capsys) -> None:
    ckpt = training_checkpoint(tmp_path / "last.ckpt", poison=math.inf)
    out = tmp_path / "model.safetensors"
    assert run("export", ckpt, out) == 2
    err = last_error(capsys)
    assert len(err) == 1 and "EMA weights of step 7 hold NaN or Inf" in err[0] and not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.safetensors", b"", "it is empty"),
        ("cut.safetensors", "model", "damaged or truncated .safetensors"),
        ("json.safetensors", b'{"weights": [1, 2]}', "it is a text file"),
        ("json.ckpt", b'{"weights": [1, 2]}\n', "it is a text file (JSON?)"),
        ("notes.ckpt", b"hello\n", "it is a text file"),
        ("model.safetensors", "model", "already a drumdiff model file; use it directly"),
        (
            "run.ckpt",
            "checkpoint",
            "drumdiff training checkpoint, not an original one; make a model file with",
        ),
    ],
)
def test_convert_says_what_a_file_is(name, content, message, model_path, tmp_path, capsys) -> None:
    source = tmp_path / name
    if content == "model":
        data = model_path.read_bytes()
        source.write_bytes(data if name == "model.safetensors" else data[: len(data) // 2])
    elif content == "checkpoint":
        training_checkpoint(source)
    else:
        source.write_bytes(content)
    assert run("convert", source, tmp_path / "out.safetensors") == 2
    err = last_error(capsys)
    assert len(err) == 1 and message in err[0] and str(source) in err[0], err
    assert not (tmp_path / "out.safetensors").exists()


# ---------------------------------------------------------------------------------------------- evaluate


def test_evaluate_ref_split_without_clips_says_so(tmp_path, capsys) -> None:
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    sf.write(gen / "g.wav", drum(8192).T.numpy() * 0.5, 44100)
    (ref / "kick").mkdir(parents=True)
    sf.write(ref / "kick" / "k.flac", drum(8192).T.numpy() * 0.5, 44100)
    item = {"path": "kick/k.flac", "class": "kick", "group": "kit", "split": "train"}
    manifest = {"format": "drumdiff-dataset", "version": 1, "classes": ["kick"], "items": [item]}
    (ref / "manifest.json").write_text(json.dumps(manifest))
    assert run("evaluate", gen, ref, "--ref-split", "val", "--no-progress") == 2
    err = last_error(capsys)
    assert len(err) == 1 and "has no val clips (1 train, 0 val, 0 test)" in err[0], err
