"""scripts/denoise_check.py: the per-noise-level error of a model's x0 estimate, sound and silent tail apart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from drumdiff import audio, data, synth
from tests.helpers import TEST_LENGTH, tiny_model_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "denoise_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("denoise_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_for_every_noise_level_with_sound_and_tail_apart(tmp_path, capsys) -> None:
    lib = tmp_path / "lib"
    for class_name in ("kick", "snare"):
        (lib / class_name).mkdir(parents=True)
        for seed in range(3):  # hits of half a clip: prepare pads them with digital silence
            clip = synth.make(class_name, seed=seed, length=TEST_LENGTH // 2)
            audio.write(lib / class_name / f"{class_name}{seed}.wav", clip, 44100)
    prepared = tmp_path / "data"
    data.prepare([lib], prepared, classes="folders", settings=data.PrepareSettings(length=TEST_LENGTH),
                 progress=False)  # fmt: skip
    model = tiny_model_file(tmp_path / "m.safetensors", num_classes=2, class_names=["kick", "snare"])
    module = _script()
    assert module.main([str(model), str(prepared), "--split", "train", "--clips", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 2 and [r["t"] for r in report["rows"]] == list(module.TIMES)
    for row in report["rows"]:
        assert row["sound_error_db"] is not None and row["tail_error_db"] is not None
    noise = [r["noise_db"] for r in report["rows"]]
    assert noise == sorted(noise) and noise[0] < -25 < 10 < noise[-1]  # sigma / alpha grows with t
    again = module.denoise_check(str(model), prepared, split="train", clips=2)
    assert again["rows"] == report["rows"]  # fixed noise: the same numbers
