"""The label check of `drumdiff data inspect`: a hi-hat filed under snare is listed, true labels are not."""

from __future__ import annotations

import json

import pytest

from drumdiff import audio, data, synth
from drumdiff.cli import main
from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.labels import check_labels


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory):
    """A prepared folder of synthetic snares and hi-hats (the shipped classifier is sure of both), with one
    hi-hat filed under snare/ and two clips of a class the classifier does not know."""
    root = tmp_path_factory.mktemp("labels")
    lib = root / "lib"
    for class_name in ("snare", "hihat", "cowbell"):
        (lib / class_name).mkdir(parents=True)
    for seed in range(3):
        audio.write(lib / "snare" / f"snare{seed}.wav", synth.snare(seed=seed), 44100)
        audio.write(lib / "hihat" / f"hat{seed}.wav", synth.hihat(seed=seed), 44100)
    audio.write(lib / "snare" / "actually-a-hat.wav", synth.hihat(seed=10), 44100)
    for seed in range(2):
        audio.write(lib / "cowbell" / f"bell{seed}.wav", synth.snare(seed=20 + seed), 44100)
    out = root / "out"
    data.prepare([lib], out, classes="folders", progress=False)
    return out


def test_the_misfiled_clip_is_listed_and_nothing_else(mislabelled):
    result = check_labels(mislabelled)
    assert [(s.label, s.predicted) for s in result.suspects] == [("snare", "hihat")]
    suspect = result.suspects[0]
    assert "actually-a-hat" in suspect.path and "actually-a-hat" in suspect.source
    assert suspect.probability >= 0.9 > suspect.label_probability
    assert result.checked == 7 and result.unchecked == {"cowbell": 2}


def test_cli_prints_the_table_and_json(mislabelled, capsys):
    assert main(["data", "inspect", str(mislabelled), "--examples", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "label check: 1 of 7 clips sound like another class (p >= 0.9), 2 cowbell not checked" in out
    assert "snare       hihat" in out and "actually-a-hat" in out
    assert main(["data", "inspect", str(mislabelled), "--examples", "0", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["predicted"] for s in report["label_check"]["suspects"]] == ["hihat"]
    assert main(["data", "inspect", str(mislabelled), "--examples", "0", "--no-label-check"]) == 0
    assert "label check" not in capsys.readouterr().out


@pytest.mark.parametrize("confidence", [0.3, 1.0, float("nan")])
def test_a_confidence_outside_its_range_is_refused(mislabelled, confidence, capsys):
    with pytest.raises(DrumdiffError, match="--confidence must be from 0.5"):
        check_labels(mislabelled, confidence=confidence)
    argv = ["data", "inspect", str(mislabelled), "--examples", "0", "--confidence", str(confidence)]
    assert main(argv) == 2
    assert "--confidence must be from 0.5" in capsys.readouterr().err


def test_a_missing_classifier_file_is_named(mislabelled, tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    argv = ["data", "inspect", str(mislabelled), "--examples", "0", "--classifier", str(missing)]
    assert main(argv) == 2
    assert str(missing) in capsys.readouterr().err
