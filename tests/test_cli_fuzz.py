"""Every verb against the edges of its arguments: exit 0 or 2, never a traceback, never a half-written file.

A table, not random draws: each row is one command line with placeholders for the fixtures. The rows take
every numeric flag to its edges (negative, zero, beyond 2^64, NaN, Inf, a tiny positive, absurdly large),
give every path argument something it is not (missing, empty, text, JSON, truncated, a folder, the wrong
drumdiff file) and every name argument a name nobody knows. After each row: the exit code is 0 or 2 (argparse
exits 2 too), stderr holds no traceback, and every output folder holds only whole clips, each with its
sidecar and its one line in generation.jsonl, no temporary file and, after a refused request, no new folder.

`data prepare` and `data inspect` are not in the table yet (their checks are being changed in src/drumdiff/data).
"""

from __future__ import annotations

import json
import math
import os
import traceback
from pathlib import Path

import pytest
import soundfile as sf
import torch

from drumdiff.cli import main
from tests.helpers import TEST_LENGTH, drum, tiny_config, tiny_model_file, training_checkpoint

BIG = str(2**64)  # one past the largest seed
HUGE = str(10**12)
FLOATS = ("nan", "inf", "-inf", "-1", "0", "1e-9", "1e308")
SAMPLING = ["--model", "{model}", "--out", "{out}", "--steps", "1", "--no-progress", "--threads", "1"]


def _rows() -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []

    def add(name: str, *argv: str) -> None:
        rows.append((name, list(argv)))

    # generate: every flag at its edges
    for value in ("-1", "0", "1", HUGE, str(2**63), "x"):
        add(f"generate -n {value}", "generate", *SAMPLING, "-n", value)
    for value in ("-1", "0", HUGE, str(2**63)):
        add(f"generate --steps {value}", "generate", *SAMPLING, "--steps", value)
    for value in ("-1", "0", BIG, str(2**64 - 1), str(2**64 - 2), str(2**70), "1.5"):
        add(f"generate --seed {value}", "generate", *SAMPLING, "-n", "2", "--seed", value)
    for value in FLOATS:
        add(f"generate --guidance {value}", "generate", *SAMPLING, "-n", "1", "--guidance", value)
        add(f"generate CLASS --guidance {value}", "generate", "b", *SAMPLING, "--model", "{classes}",
            "-n", "1", "--guidance", value)  # fmt: skip
    for value in ("-1", "0", "7999", "8000", "192001", "1000000000", str(2**63)):
        add(f"generate --sample-rate {value}", "generate", *SAMPLING, "-n", "1", "--sample-rate", value)
    for fmt in ("wav16", "float32", "flac", "mp3"):
        add(f"generate --format {fmt} at 192 kHz", "generate", *SAMPLING, "-n", "1", "--format", fmt,
            "--sample-rate", "192000")  # fmt: skip
    for value in ("-1", "0", HUGE):
        add(f"generate --batch-size {value}", "generate", *SAMPLING, "-n", "1", "--batch-size", value)
        add(f"generate --threads {value}", "generate", *SAMPLING, "-n", "1", "--threads", value)
    for value in ("cuda", "cuda:-1", "cuda:99", "mps", "meta", "", "cpu:0", "x"):
        add(f"generate --device {value!r}", "generate", *SAMPLING, "-n", "1", "--device", value)
    for flag, value in (("--sampler", ""), ("--sampler", "euler"), ("--schedule", "cosine")):
        add(f"generate {flag} {value!r}", "generate", *SAMPLING, flag, value)
    for value in ("", "nope", "A", "a b", "../x"):
        add(f"generate class {value!r}", "generate", value, *SAMPLING, "--model", "{classes}", "-n", "1")
    for value in ("", "{missing}", "{folder}", "{text}", "{empty}", "{cut_model}", "{checkpoint}"):
        add(f"generate --model {value}", "generate", *SAMPLING, "--model", value)
    add("generate --out a file", "generate", *SAMPLING, "--out", "{text}")
    add("generate --out under a file", "generate", *SAMPLING, "--out", "{text}/sub")
    add("generate --out ''", "generate", *SAMPLING, "-n", "1", "--out", "")

    # vary, inpaint, interpolate
    for value in (*FLOATS, "1", "1.0000001", "2"):
        add(f"vary --strength {value}", "vary", "{clip}", *SAMPLING, "--strength", value)
    for value in ("{missing}", "{folder}", "{text}", "{empty}", "{json}"):
        add(f"vary {value}", "vary", value, *SAMPLING)
    for value in (*FLOATS, "0.01", "1e9", "92.8", "92.9"):
        add(f"inpaint --keep-ms {value}", "inpaint", "{clip}", *SAMPLING, "--keep-ms", value)
    for value in ("-1", "0", "1", "2", "1001", str(2**63)):
        add(f"interpolate --frames {value}", "interpolate", "{clip}", "{clip}", *SAMPLING, "--frames", value)
    add("interpolate -n", "interpolate", "{clip}", "{clip}", *SAMPLING, "-n", "3")
    add("interpolate --steps 0", "interpolate", "{clip}", "{clip}", *SAMPLING, "--steps", "0")
    add("interpolate a missing B", "interpolate", "{clip}", "{missing}", *SAMPLING)
    add("models", "models")

    # convert and export
    for value in (
        "{missing}",
        "{folder}",
        "{empty}",
        "{text}",
        "{json}",
        "{cut_model}",
        "{model}",
        "{checkpoint}",
    ):
        add(f"convert {value}", "convert", value, "{out}/m.safetensors")
    add("convert onto an existing file", "convert", "{original}", "{existing}")
    add("convert onto itself", "convert", "{original}", "{original}", "--force")
    add("convert to .pt", "convert", "{original}", "{out}/m.pt")
    add("convert into a folder", "convert", "{original}", "{folder}")
    for value in ("{missing}", "{folder}", "{empty}", "{text}", "{model}", "{original}"):
        add(f"export {value}", "export", value, "{out}/m.safetensors")
    add("export onto an existing file", "export", "{checkpoint}", "{existing}")
    add("export to .pt", "export", "{checkpoint}", "{out}/m.pt")
    add("export poisoned weights", "export", "{poisoned}", "{out}/m.safetensors")
    add("export --fp16", "export", "{checkpoint}", "{out}/m.safetensors", "--fp16")
    for value in ("{missing}", "{folder}", "{empty}", "{text}", "{json}", "{cut_model}", "{checkpoint}"):
        add(f"average {value}", "average", "{model}", value, "--out", "{out}/m.safetensors")
    for value in ("", "nan", "inf", "-1,1", "0,0", "1,2,3", "1;2"):
        add(
            f"average --weights {value!r}",
            "average",
            "{model}",
            "{model}",
            "-o",
            "{out}/m.safetensors",
            "--weights",
            value,
        )
    add("average one model", "average", "{model}", "--out", "{out}/m.safetensors")
    add("average onto an existing file", "average", "{model}", "{model}", "--out", "{existing}")
    add("average to .pt", "average", "{model}", "{model}", "--out", "{out}/m.pt")
    add("average into a folder", "average", "{model}", "{model}", "--out", "{folder}")
    add("average --fp16", "average", "{model}", "{model}", "--out", "{out}/m.safetensors", "--fp16")

    # evaluate
    add("evaluate a missing GEN_DIR", "evaluate", "{missing}", "{folder}", "--no-progress")
    add("evaluate an empty GEN_DIR", "evaluate", "{folder}", "{dataset}", "--no-progress")
    add("evaluate --ref-split val of no val", "evaluate", "{clips}", "{dataset}", "--ref-split", "val")
    add("evaluate --plot under a file", "evaluate", "{clips}", "{dataset}", "--plot", "{text}/x.png")

    # train: values refused before any training starts
    train = ["train", "{dataset}", "--run-dir", "{out}/run", "--preset", "tiny", "--logger", "none"]
    for flag, values in {
        "--seed": ("-1", BIG),
        "--lr": ("nan", "inf", "-inf", "-1"),
        "--batch-size": ("-1", "0", HUGE),
        "--max-steps": ("-1", "0"),
        "--accumulate": ("0",),
        "--checkpoint-every": ("-1",),
        "--preview-every": ("-2",),
        "--min-snr-gamma": ("nan", "0", "-1"),
        "--log-snr-shift": ("nan", "inf"),
        "--crop-length": ("-1", "1000"),
        "--devices": ("0", "-1"),
        "--num-nodes": ("0",),
        "--memory-budget": ("lots", "0", "-1GB", "nan"),
        "--preset": ("nope", "{text}"),
        "--init-from": ("{missing}", "{text}", "{folder}"),
    }.items():
        for value in values:
            add(f"train {flag} {value}", *train, flag, value)
    add("train a missing DATA_DIR", "train", "{missing}", "--run-dir", "{out}/run")
    add("train --resume of nothing", *train, "--resume")
    add("train --resume --overwrite", *train, "--resume", "--overwrite")
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every placeholder of the table, made once."""
    from drumdiff.convert import ORIGINAL_ALIASES, original_key_map
    from drumdiff.nn.unet1d import UNet1d

    root = tmp_path_factory.mktemp("fuzz")
    made = {
        "model": tiny_model_file(root / "tiny.safetensors", class_names=["kick"]),
        "classes": tiny_model_file(root / "ab.safetensors", num_classes=2, class_names=["a", "b"]),
        "missing": root / "missing.wav",
        "folder": root / "folder",
        "text": root / "notes.txt",
        "json": root / "data.json",
        "empty": root / "empty.safetensors",
        "cut_model": root / "cut.safetensors",
        "clip": root / "hit.wav",
        "existing": root / "existing.safetensors",
    }
    made["folder"].mkdir()
    made["text"].write_text("just text\n")
    made["json"].write_text('{"a": 1}\n')
    made["empty"].write_bytes(b"")
    model_bytes = made["model"].read_bytes()
    made["cut_model"].write_bytes(model_bytes[: len(model_bytes) // 2])
    made["existing"].write_bytes(b"keep me")
    sf.write(made["clip"], drum(TEST_LENGTH).T.numpy() * 0.5, 44100, subtype="PCM_24")
    config = tiny_config()
    ours = UNet1d(config).state_dict()
    original = {name: ours[key] for key, name in original_key_map(config).items()}
    original.update({alias: original[name] for alias, name in ORIGINAL_ALIASES.items()})
    made["original"] = root / "original.ckpt"
    torch.save(original, made["original"])
    made["checkpoint"] = training_checkpoint(root / "checkpoint.ckpt", step=3)
    made["poisoned"] = training_checkpoint(root / "poisoned.ckpt", poison=math.nan, step=3)
    # a prepared dataset without val clips, and a folder of generated-looking clips
    dataset, clips = root / "dataset", root / "clips"
    (dataset / "kick").mkdir(parents=True)
    clips.mkdir()
    items = []
    for k in range(4):
        audio = drum(TEST_LENGTH, seed=k).T.numpy() * 0.5
        sf.write(dataset / "kick" / f"k{k}.flac", audio, 44100, subtype="PCM_24")
        sf.write(clips / f"c{k}.wav", audio, 44100, subtype="PCM_24")
        items.append({"path": f"kick/k{k}.flac", "class": "kick", "group": f"kit{k}", "split": "train"})
    manifest = {
        "format": "drumdiff-dataset",
        "version": 1,
        "sample_rate": 44100,
        "length": TEST_LENGTH,
        "channels": 2,
        "classes": ["kick"],
        "items": items,
    }
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    made["dataset"], made["clips"] = dataset, clips
    return made


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _check_outputs(folder: Path) -> None:
    """Only whole clips, each with its sidecar and one line in generation.jsonl; no temporary files."""
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        hidden = [p.name for p in sub.iterdir() if p.name.startswith(".") and p.name != ".drumdiff.lock"]
        assert not hidden, f"temporary files left in {sub}: {hidden}"
    audio = sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac"))
    log = folder / "generation.jsonl"
    listed = [json.loads(line)["file"] for line in log.read_text().splitlines()] if log.exists() else []
    assert sorted(listed) == [p.name for p in audio]
    for path in audio:
        assert sf.info(path).frames > 0 and path.with_suffix(".json").is_file()


@pytest.mark.parametrize(("name", "argv"), ROWS, ids=[name for name, _ in ROWS])
def test_exit_0_or_2_no_traceback_nothing_half_written(
    name, argv, files, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)  # `--out ''` writes into the current folder
    monkeypatch.setenv("DRUMDIFF_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)
    out = tmp_path / "out"
    subs = {f"{{{key}}}": str(path) for key, path in files.items()} | {"{out}": str(out)}
    args = []
    for arg in argv:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        args.append(arg)
    before = _snapshot(files["folder"].parent)
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse: a value it cannot parse, a missing argument
        code = exit_.code
    except BaseException:  # noqa: BLE001 - the point of the test
        pytest.fail(f"drumdiff {' '.join(args)} raised:\n{traceback.format_exc()}")
    err = capsys.readouterr().err
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 2:
        assert err.strip().splitlines()[-1].startswith(("drumdiff", "usage:")), err
    assert _snapshot(files["folder"].parent) == before, "an input or an existing file was changed"
    if out.exists():
        _check_outputs(out)
    elif code == 0 and argv[0] in ("generate", "vary", "inpaint", "interpolate"):
        _check_outputs(Path.cwd())
    produced = [p for p in tmp_path.iterdir() if p.name not in ("home",)]
    if code == 2 and argv[0] in ("generate", "vary", "inpaint", "interpolate"):
        assert not produced, f"a refused request left {produced}"
    assert os.listdir(files["folder"]) == []
