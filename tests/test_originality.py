"""The originality check: an index of a known training set (synthetic drums prepared inside the test) catches a
near-copy and passes a fresh clip; the index file round-trips and refuses damage and another classifier;
`generate --max-similarity` re-draws a flagged clip with a recorded, deterministic seed through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drumdiff import audio, data, synth
from drumdiff.cli import main
from drumdiff.errors import DrumdiffError
from drumdiff.evaluation.classifier import ClassifierConfig, DrumClassifier, load_classifier, save_classifier
from drumdiff.evaluation.originality import (
    DEFAULT_MAX_SIMILARITY,
    INDEX_SUFFIX,
    build_index,
    check_originality,
    find_index,
    index_from_clips,
    index_path_for,
    load_index,
    open_check,
    open_for_model,
    save_index,
    similarity_of,
)
from drumdiff.evaluation.originality import main as index_main
from drumdiff.files import stable_seed
from drumdiff.pipeline import load_model
from tests.helpers import drum, tiny_model_file

RATE = 44100
CLASSES = ("kick", "hihat")  # the training set; a snare is something it never saw


def _group(split: str, taken: set[str]) -> str:
    """A kit folder name that `data prepare` puts in `split` (the group is 'lib/<class>/<kit>')."""
    for i in range(500):
        name = f"kit{i}"
        if name not in taken and all(data.split_for_group(f"lib/{c}/{name}") == split for c in CLASSES):
            return name
    raise AssertionError(f"no kit name for {split}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A prepared dataset: kicks and hi-hats of two training kits and one val kit (synthetic drums)."""
    root = tmp_path_factory.mktemp("originality")
    kits: list[str] = []
    for split in ("train", "train", "val"):
        kits.append(_group(split, set(kits)))
    for k, kit in enumerate(kits):
        for c, name in enumerate(CLASSES):
            for i in range(3):
                clip = synth.make(name, seed=100 * k + 10 * c + i)
                (root / "lib" / name / kit).mkdir(parents=True, exist_ok=True)
                audio.write(root / "lib" / name / kit / f"{name}{i}.wav", clip, RATE, format="wav24")
    out = root / "data"
    data.prepare([root / "lib"], out, classes="folders", progress=False)
    return out


@pytest.fixture(scope="module")
def index(dataset):
    return build_index(dataset, progress=False)


def _training_clip(dataset: Path, index) -> tuple[torch.Tensor, str]:
    path = index.clips[0]["path"]
    clip, rate = audio.read(dataset / path)
    assert rate == RATE
    return clip, path


def test_a_near_copy_is_caught_and_a_fresh_clip_passes(dataset, index) -> None:
    classifier = load_classifier()
    assert len(index) == 12 and {c["class"] for c in index.clips} == set(CLASSES)  # train split only
    clip, path = _training_clip(dataset, index)
    gen = torch.Generator().manual_seed(0)
    near = torch.nn.functional.pad(clip, (3, 0))[:, : clip.shape[1]]  # 3 samples later,
    near = -near * 10 ** (-1 / 20)  # reversed polarity, 1 dB quieter,
    near = near + clip.abs().max() * 1e-3 * torch.randn(near.shape, generator=gen)  # noise 60 dB down,
    near = near.half().float()  # and an fp16 round trip
    fresh_kick = drum(clip.shape[1], sample_rate=RATE, pitch=60.0)  # another maker's kick
    snare = synth.make("snare", seed=7)  # a class the training set does not have
    clips = torch.stack([clip, near, fresh_kick, snare])
    sims, rows = similarity_of(clips, RATE, index=index, classifier=classifier)
    assert sims[0] > 0.999 and index.clips[int(rows[0])]["path"] == path  # the clip itself
    assert sims[1] > DEFAULT_MAX_SIMILARITY and index.clips[int(rows[1])]["path"] == path  # caught, and found
    assert sims[2] < DEFAULT_MAX_SIMILARITY and sims[3] < DEFAULT_MAX_SIMILARITY  # fresh clips pass
    records = check_originality(clips, RATE, index=index, classifier=classifier)
    assert records[1]["clip"] == path and records[1]["class"] == index.clips[0]["class"]
    assert records[1]["group"] == index.clips[0]["group"] and records[1]["similarity"] == round(
        float(sims[1]), 4
    )
    # other rates and lengths are fitted to the classifier's: the copy at 48 kHz is still caught
    at48 = audio.resample(near, RATE, 48000)[None]
    assert similarity_of(at48, 48000, index=index, classifier=classifier)[0][0] > DEFAULT_MAX_SIMILARITY


def test_build_records_the_yardstick_and_near_copies(dataset, index) -> None:
    info = index.info
    assert info["split"] == "train" and len(info["dataset_manifest_sha256"]) == 64
    yard = info["yardstick"]
    assert yard["train_leave_kit_out"]["n"] + yard["train_leave_kit_out"]["shared_recordings"] == 12
    assert yard["val"]["n"] + yard["val"]["shared_recordings"] == 6 and yard["test"]["n"] == 0
    assert {"p50", "p95", "p99", "max", "above_default", "false_alarm_rate"} <= set(yard["all"])
    near = info["near_copies"]
    assert near["clips"] == 12
    for change in ("gain +1 dB", "noise -60 dB", "shift 3 samples", "resample via 48 kHz", "polarity"):
        assert near[change]["min"] > DEFAULT_MAX_SIMILARITY and near[change]["caught_at_default"] == 1.0


def test_save_load_round_trip_and_the_index_beside_a_model(tmp_path, index) -> None:
    path = save_index(tmp_path / "drums.index.safetensors", index)
    assert path.stat().st_size < 64 * 1024  # 12 clips: float16 vectors and the ids
    back = load_index(path, classifier_sha256=index.classifier_sha256)
    assert torch.equal(back.vectors, index.vectors) and back.vectors.dtype == torch.float16
    assert back.clips == index.clips and back.info == index.info and back.measure == index.measure
    assert index_path_for(tmp_path / "drums.safetensors") == path and INDEX_SUFFIX == ".index.safetensors"
    check = open_check(path)
    clip = index.vectors[:3].float()
    assert torch.equal(back.nearest(clip)[1], torch.arange(3)) and check.index.clips == index.clips
    with pytest.raises(DrumdiffError, match="do not fit"):
        back.nearest(torch.zeros(1, 7))
    # what `drumdiff kit` calls: the index beside a model file, or the one given, or None
    assert open_for_model(tmp_path / "drums.safetensors").index.clips == index.clips
    assert open_for_model(tmp_path / "other.safetensors") is None
    assert find_index(tmp_path / "other.safetensors", path) == path
    with pytest.raises(DrumdiffError, match="no such originality index"):
        find_index(tmp_path / "drums.safetensors", tmp_path / "missing.index.safetensors")


def test_a_damaged_or_foreign_file_and_another_classifier_are_refused(tmp_path, index) -> None:
    good = save_index(tmp_path / "good.index.safetensors", index)
    junk = tmp_path / "junk.index.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    cut = tmp_path / "cut.index.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    model = tiny_model_file(tmp_path / "model.safetensors")
    for bad, why in [
        (junk, "not a readable drumdiff originality index"),
        (cut, "not a readable drumdiff originality index"),
        (model, "not a drumdiff originality index"),
        (tmp_path / "missing.index.safetensors", "no such originality index"),
    ]:
        with pytest.raises(DrumdiffError, match=why) as caught:
            load_index(bad)
        assert str(bad) in str(caught.value)
    other = tmp_path / "other_classifier.safetensors"
    save_classifier(other, DrumClassifier(ClassifierConfig()), provenance={"made_by": "tests"})
    with pytest.raises(DrumdiffError, match="another classifier") as caught:
        open_check(good, classifier=other)
    assert str(good) in str(caught.value) and "python -m drumdiff.evaluation.originality" in str(caught.value)


def test_the_build_command(tmp_path, dataset, capsys) -> None:
    out = tmp_path / "m.index.safetensors"
    assert index_main([str(dataset), "--out", str(out), "--no-progress"]) == 0
    assert "12 clips" in capsys.readouterr().out and load_index(out).clips
    assert index_main([str(tmp_path), "--out", str(out)]) == 2  # not a prepared dataset
    assert "not a prepared dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        index_main(["--help"])
    assert done.value.code == 0


# ------------------------------------------------------------------------------------------- generate


STEPS = ["--steps", "4", "--no-progress"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny model whose index holds its own first clip for seed 5: that draw is a copy."""
    folder = tmp_path_factory.mktemp("tiny")
    path = tiny_model_file(folder / "tiny.safetensors", class_names=["kick"])
    model = load_model(path, device="cpu")
    first = model.generate(n=1, seed=5, steps=4)
    ids = [{"path": "kick/seed5.flac", "group": "tiny", "class": "kick"}]
    save_index(index_path_for(path), index_from_clips(first, model.sample_rate, ids=ids))
    return path


def _records(folder: Path) -> list[dict]:
    lines = (folder / "generation.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["index"])


def test_generate_redraws_a_near_copy_with_a_recorded_deterministic_seed(tiny, tmp_path, capsys) -> None:
    args = ["generate", "--model", tiny, "-n", "2", "--seed", "5", "--max-similarity", "0.999", *STEPS]
    assert main([str(a) for a in [*args, "--out", tmp_path / "a"]]) == 0
    err = capsys.readouterr().err
    assert "re-drawing it with seed" in err and "1 re-drawn" in err and "nearest training clip" in err
    first, second = _records(tmp_path / "a")
    new_seed = stable_seed(5, 0, 1)
    assert first["seed"] == new_seed and first["redrawn_from_seeds"] == [5] and first["request_seed"] == 5
    assert first["file"] == f"kick_seed{new_seed}_000.wav" and first["max_similarity"] == 0.999
    assert first["nearest_training_clip"]["clip"] == "kick/seed5.flac"
    assert first["nearest_training_clip"]["similarity"] <= 0.999
    assert second["seed"] == 6 and "redrawn_from_seeds" not in second
    assert first["originality_index"]["path"] == str(index_path_for(tiny))
    # the same request again: the same seeds, the same audio
    assert main([str(a) for a in [*args, "--out", tmp_path / "b"]]) == 0
    again = _records(tmp_path / "b")
    for a, b in zip([first, second], again, strict=True):
        assert (a["file"], a["seed"], a["nearest_training_clip"]) == (
            b["file"],
            b["seed"],
            b["nearest_training_clip"],
        )
        x, _ = audio.read(tmp_path / "a" / a["file"])
        y, _ = audio.read(tmp_path / "b" / b["file"])
        assert torch.equal(x, y)


def test_generate_keeps_the_least_similar_draw_when_every_draw_is_too_close(tiny, tmp_path, capsys) -> None:
    # The random tiny model's clips all look alike (about 0.996): nothing gets under 0.5.
    args = ["generate", "--model", tiny, "-n", "1", "--seed", "5", "--max-similarity", "0.5", *STEPS]
    assert main([str(a) for a in [*args, "--out", tmp_path]]) == 0
    assert "kept the least similar" in capsys.readouterr().err
    (record,) = _records(tmp_path)
    seeds = [*record["redrawn_from_seeds"], record["seed"]]  # every draw, the kept one last
    assert sorted(seeds) == sorted([5, *(stable_seed(5, 0, attempt) for attempt in range(1, 6))])
    assert record["nearest_training_clip"]["similarity"] < 1.0  # not the copy itself


def test_generate_reports_near_copies_without_redrawing(tiny, tmp_path, capsys) -> None:
    assert (
        main(
            [
                str(a)
                for a in ["generate", "--model", tiny, "-n", "1", "--seed", "5", *STEPS, "--out", tmp_path]
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "may be near-copies of training clips" in err and "max similarity 1.0000" in err
    (record,) = _records(tmp_path)
    assert record["seed"] == 5 and record["nearest_training_clip"]["similarity"] > 0.999
    assert "max_similarity" not in record


def test_generate_without_an_index_is_unchanged_and_max_similarity_needs_one(tmp_path, capsys) -> None:
    model = tiny_model_file(tmp_path / "plain.safetensors", class_names=["kick"])
    out = tmp_path / "out"
    assert (
        main([str(a) for a in ["generate", "--model", model, "-n", "1", "--seed", "1", *STEPS, "--out", out]])
        == 0
    )
    assert "nearest training clip" not in capsys.readouterr().err
    (record,) = _records(out)
    assert not {"nearest_training_clip", "originality_index", "max_similarity"} & set(record)
    for extra, message in [
        (["--max-similarity", "0.99"], "none was found for"),
        (["--max-similarity", "0"], "must be in (0, 1]"),
        (["--max-similarity", "nan"], "must be in (0, 1]"),
        (["--index", tmp_path / "nope.index.safetensors"], "no such file"),
    ]:
        assert (
            main([str(a) for a in ["generate", "--model", model, *extra, *STEPS, "--out", tmp_path / "x"]])
            == 2
        )
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_broken_index_beside_the_model_is_a_warning_unless_needed(tmp_path, capsys) -> None:
    model = tiny_model_file(tmp_path / "m.safetensors", class_names=["kick"])
    index_path_for(model).write_bytes(b"\0" * 40)
    base = ["generate", "--model", model, "-n", "1", "--seed", "1", *STEPS]
    assert main([str(a) for a in [*base, "--out", tmp_path / "ok"]]) == 0
    assert (
        "warning" in capsys.readouterr().err and "nearest_training_clip" not in _records(tmp_path / "ok")[0]
    )
    assert main([str(a) for a in [*base, "--max-similarity", "0.99", "--out", tmp_path / "no"]]) == 2
    assert str(index_path_for(model)) in capsys.readouterr().err


def test_constants_kept_in_step() -> None:
    from drumdiff.commands import session

    assert session.INDEX_SUFFIX == INDEX_SUFFIX and session.NEAR_COPY == DEFAULT_MAX_SIMILARITY
