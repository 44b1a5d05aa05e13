"""The `drumdiff generate | vary | interpolate | inpaint | models` commands, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from drumdiff.cli import main
from drumdiff.sampling import SAMPLERS
from tests.helpers import drum, tiny_model_file


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", class_names=["kick"])


@pytest.fixture(scope="module")
def input_wav(tmp_path_factory) -> Path:
    """A 48 kHz mono clip of another length: every input conversion is needed."""
    path = tmp_path_factory.mktemp("in") / "my kick.wav"
    sf.write(path, drum(6000, sample_rate=48000)[0].numpy(), 48000, subtype="PCM_24")
    return path


def run(*args: str) -> int:
    return main([str(a) for a in args])


def test_cli_sampler_names_match_the_registry() -> None:
    from drumdiff.commands.generate import SAMPLER_NAMES, SCHEDULE_NAMES
    from drumdiff.sampling import SCHEDULES

    assert set(SAMPLER_NAMES) == set(SAMPLERS)
    assert set(SCHEDULE_NAMES) == set(SCHEDULES)
    from drumdiff.audio import WRITE_FORMATS
    from drumdiff.commands.generate import FORMATS
    from drumdiff.outputs import FORMAT_SUFFIX

    assert set(FORMATS) == set(FORMAT_SUFFIX) == set(WRITE_FORMATS)
    from drumdiff.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
    from drumdiff.commands.session import MAX_RATE, MIN_RATE

    assert (MIN_RATE, MAX_RATE) == (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)


def test_generate_writes_files_records_and_never_overwrites(model_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = [
        "generate",
        "--model",
        model_path,
        "-n",
        3,
        "--steps",
        2,
        "--seed",
        10,
        "--out",
        out,
        "--batch-size",
        2,
    ]
    assert run(*args, "--plot") == 0
    printed = capsys.readouterr().out.split()
    wavs = sorted(out.glob("*.wav"))
    assert [p.name for p in wavs] == ["kick_seed10_000.wav", "kick_seed11_001.wav", "kick_seed12_002.wav"]
    assert all(str(p) in printed for p in wavs)
    assert len(list(out.glob("*.png"))) == 1
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, 4096, "PCM_24")
    record = json.loads(wavs[1].with_suffix(".json").read_text())
    assert record["seed"] == 11 and record["request_seed"] == 10 and record["steps"] == 2
    assert len(record["model"]["sha256"]) == 64 and record["file"] == "kick_seed11_001.wav"

    assert run(*args) == 0  # same request again: new names, old files untouched
    assert len(list(out.glob("*.wav"))) == 6
    assert (out / "kick_seed10_000-1.wav").exists()
    lines = (out / "generation.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[3])["file"] == "kick_seed10_000-1.wav"
    # Same command, same machine: byte-identical audio; records differ only in timing.
    assert (out / "kick_seed10_000.wav").read_bytes() == (out / "kick_seed10_000-1.wav").read_bytes()
    first, again = json.loads(lines[0]), json.loads(lines[3])
    for record in (first, again):
        record.pop("timing"), record.pop("file")
    assert first == again


def test_generate_formats_and_sample_rate(model_path, tmp_path) -> None:
    out = tmp_path / "o"
    assert (
        run(
            "generate",
            "--model",
            model_path,
            "-n",
            1,
            "--steps",
            1,
            "--seed",
            0,
            "--out",
            out,
            "--format",
            "flac",
            "--sample-rate",
            "48000",
        )
        == 0
    )
    info = sf.info(next(out.glob("*.flac")))
    assert info.samplerate == 48000 and info.frames == round(4096 * 48000 / 44100)


def test_vary_inpaint_interpolate(model_path, input_wav, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    common = ["--model", model_path, "--out", out]
    assert run("vary", input_wav, "--strength", 0.3, "--steps", 4, "-n", 2, "--seed", 1, *common) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "48000 -> 44100" in warnings[0] and "1 -> 2 channels" in warnings[0]
    assert len(list(out.glob("my-kick_vary0.3_*.wav"))) == 2

    assert run("inpaint", input_wav, "--keep-ms", 20, "--steps", 2, "--seed", 1, *common) == 0
    assert len(list(out.glob("my-kick_inpaint_*.wav"))) == 1

    assert run("interpolate", input_wav, input_wav, "--frames", 3, "--steps", 3, *common) == 0
    frames = sorted(out.glob("my-kick_to_my-kick_*.wav"))
    assert len(frames) == 3
    record = json.loads(frames[1].with_suffix(".json").read_text())
    assert record["weight"] == 0.5 and "request_seed" not in record  # deterministic: no seed to record


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--steps", "0"], "steps must be a whole number of at least 1"),
        (["generate", "--sampler", "euler"], "unknown sampler 'euler'"),
        (["generate", "cowbell"], "unknown class 'cowbell'"),
        (["generate", "-n", "0"], "-n must be from 1 to"),
        (["generate", "--batch-size", "0"], "batch size must be a whole number of at least 1"),
        (["generate", "--guidance", "nan"], "guidance must be a finite number"),
        (["inpaint", "{input}", "--keep-ms", "nan"], "--keep-ms must be a positive number"),
        (["inpaint", "{input}", "--keep-ms", "inf"], "--keep-ms must be a positive number"),
        (["vary", "missing.wav"], "missing.wav"),
        (["vary", "{notaudio}"], "notaudio.wav"),
        (["vary", "{input}", "--strength", "1.5"], "--strength must be in (0, 1]"),
        (["interpolate", "{input}", "{input}", "--frames", "1"], "--frames must be from 2 to"),
        (["generate", "--out", "{file}/sub"], "not writable"),
        (["generate", "--model", "{future}"], "format version 99"),
        (["generate", "--seed", "-1"], "--seed must be a whole number from 0 to"),
        (["generate", "--seed", str(2**64)], "--seed must be a whole number from 0 to"),
        (["generate", "-n", "2", "--seed", str(2**64 - 1)], "for 2 clips (clip i uses --seed + i)"),
        (["generate", "--sample-rate", "1000000000"], "--sample-rate must be from 8000 to 192000 Hz"),
        (["generate", "--sample-rate", "7999"], "--sample-rate must be from 8000 to 192000 Hz"),
        (["generate", "--steps", "100001"], "--steps must be from 1 to 100000"),
        (["generate", "--threads", "100000"], "--threads must be from 1 to"),
        (["generate", "--model", "{missing_model}"], "model file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, model_path, input_wav, tmp_path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    notaudio = tmp_path / "notaudio.wav"
    notaudio.write_text("hello, I am text")
    afile = tmp_path / "file"
    afile.write_text("x")
    future = tmp_path / "future.safetensors"
    save_file(
        load_file(str(model_path)), str(future), metadata={"format": "drumdiff-model", "format_version": "99"}
    )
    subs = {"{notaudio}": notaudio, "{input}": input_wav, "{file}/sub": afile / "sub", "{future}": future}
    subs["{missing_model}"] = tmp_path / "missing.safetensors"
    argv = [str(subs.get(a, a)) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(model_path)]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()  # nothing written, not even the folder (the README's promise)


def test_no_model_says_so(tmp_path, monkeypatch, capsys) -> None:
    import drumdiff.modelfile as modelfile

    monkeypatch.setattr(modelfile, "SHIPPED_DIR", tmp_path / "none")
    assert run("generate", "--out", tmp_path / "o") == 2
    assert "no shipped model" in capsys.readouterr().err


def test_models_lists_user_models(model_path, tmp_path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "mine.safetensors").write_bytes(model_path.read_bytes())
    (home / "models" / "broken.safetensors").write_bytes(b"junk")
    monkeypatch.setenv("DRUMDIFF_HOME", str(home))
    assert run("models") == 0
    captured = capsys.readouterr()
    assert "mine" in captured.out
    assert "broken.safetensors: unreadable" in captured.err
    out = tmp_path / "o"
    assert run("generate", "--model", "mine", "-n", 1, "--steps", 1, "--seed", 0, "--out", out) == 0


def test_generate_subprocess_is_deterministic_and_light(model_path, tmp_path) -> None:
    """Two runs of the real command give byte-identical WAVs, and generate never imports Lightning/Gradio."""
    script = (
        "import sys; from drumdiff.cli import main; code = main(sys.argv[1:]); "
        "heavy = [m for m in ('lightning', 'pytorch_lightning', 'gradio') if m in sys.modules]; "
        "assert not heavy, heavy; sys.exit(code)"
    )
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        cmd = [
            sys.executable,
            "-c",
            script,
            "generate",
            "--model",
            str(model_path),
            "-n",
            "2",
            "--steps",
            "2",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        outs.append(sorted(out.glob("*.wav")))
    assert [p.read_bytes() for p in outs[0]] == [p.read_bytes() for p in outs[1]]


def test_gate_runs_on_what_is_written_and_is_recorded(model_path, tmp_path, monkeypatch) -> None:
    import torch

    import drumdiff.postprocess as postprocess

    seen = []

    def silence_the_tail(clips, sample_rate, **kwargs):  # stands in for the gate: the wiring is under test
        seen.append((tuple(clips.shape), sample_rate))
        gated = clips.clone()
        gated[..., 2048:] = 0
        return gated

    monkeypatch.setattr(postprocess, "gate_tail", silence_the_tail)
    common = ["generate", "--model", model_path, "-n", 2, "--steps", 1, "--seed", 5, "--no-progress"]
    assert run(*common, "--gate", "--out", tmp_path / "gated") == 0
    assert run(*common, "--out", tmp_path / "raw") == 0
    assert seen == [((2, 2, 4096), 44100)]  # once, on the batch, at the model's rate; not without --gate
    gated, raw = (sorted((tmp_path / name).glob("*.wav")) for name in ("gated", "raw"))
    for path, plain in zip(gated, raw, strict=True):
        audio, _ = sf.read(path, always_2d=True)
        before, _ = sf.read(plain, always_2d=True)
        assert not audio[2048:].any() and before[2048:].any()
        assert torch.equal(torch.from_numpy(audio[:2048]), torch.from_numpy(before[:2048]))
        assert json.loads(path.with_suffix(".json").read_text())["gate"] is True
        assert json.loads(plain.with_suffix(".json").read_text())["gate"] is False
