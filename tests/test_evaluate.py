"""Sanity tests for `drumdiff evaluate`: the metrics rank synthetic drums the way an ear would."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff import evaluation as ev
from drumdiff.cli import main
from drumdiff.evaluation.classifier import (
    DEFAULT_CLASSIFIER,
    ClassifierConfig,
    DrumClassifier,
    load_classifier,
    read_classifier_metadata,
    save_classifier,
)

SR = 44100
LENGTH = 32768
DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


# ----------------------------------------------------------------------------------------------------------
# Synthetic drums, made here


def _t() -> torch.Tensor:
    return torch.arange(LENGTH, dtype=torch.float64) / SR


def _highpass(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    spectrum = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR, dtype=torch.float64)
    return torch.fft.irfft(spectrum * (freqs > cutoff), n=x.shape[-1])


def _stereo(mono: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    peak = 0.5 + 0.4 * float(torch.rand((), generator=gen))
    mono = mono / mono.abs().max() * peak
    return torch.stack([mono, mono * (0.9 + 0.1 * float(torch.rand((), generator=gen)))]).float()  # (2, T)


def kick(seed: int) -> torch.Tensor:
    """A pitch-swept decaying sine: [2, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = _t()
    f_end = 45 + 20 * float(torch.rand((), generator=gen))
    f_start = 150 + 100 * float(torch.rand((), generator=gen))
    sweep = 25 + 15 * float(torch.rand((), generator=gen))
    freq = f_end + (f_start - f_end) * torch.exp(-t * sweep)
    phase = 2 * math.pi * torch.cumsum(freq, 0) / SR
    decay = 6 + 4 * float(torch.rand((), generator=gen))
    return _stereo(torch.sin(phase) * torch.exp(-t * decay), gen)


def snare(seed: int) -> torch.Tensor:
    """A tone + noise burst: [2, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = _t()
    tone = torch.sin(2 * math.pi * (170 + 60 * float(torch.rand((), generator=gen))) * t) * torch.exp(-t * 30)
    noise = _highpass(torch.randn(LENGTH, generator=gen, dtype=torch.float64), 1500) * torch.exp(-t * 18)
    return _stereo(0.6 * tone + noise, gen)


def hihat(seed: int) -> torch.Tensor:
    """High-passed noise with a short decay: [2, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = _t()
    decay = 40 + 30 * float(torch.rand((), generator=gen))
    noise = _highpass(
        torch.randn(LENGTH, generator=gen, dtype=torch.float64),
        7000 + 2000 * float(torch.rand((), generator=gen)),
    )
    return _stereo(noise * torch.exp(-t * decay), gen)


def white_noise(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return _stereo(torch.randn(LENGTH, generator=gen, dtype=torch.float64), gen)


def write(path: Path, audio: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T.numpy(), SR, subtype="PCM_24")
    return path


@pytest.fixture(scope="module")
def model():
    return load_classifier()


def embed(model, make, seeds) -> np.ndarray:
    audio = torch.stack([make(s) for s in seeds])
    return ev.compute_features(model, audio).embeddings


# ----------------------------------------------------------------------------------------------------------
# Distances


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3)) * np.array([1.0, 2.0, 3.0])
    b = rng.normal(size=(4000, 3)) * np.array([2.0, 2.0, 1.0]) + np.array([1.0, 0.0, 0.0])
    expected = 1.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # |dmu|^2 + sum (sqrt(var_a) - sqrt(var_b))^2
    assert ev.frechet_distance(a, b) == pytest.approx(expected, rel=0.08)
    assert ev.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_near_zero_for_two_samples_of_one_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
    kid, std, size = ev.kernel_inception_distance(a, b)
    far, _, _ = ev.kernel_inception_distance(a, rng.normal(size=(60, 16)) + 1.0)
    assert size == 30
    assert abs(kid) < 2 * std + 1e-3
    assert far > 20 * max(abs(kid), std)


def test_inception_score_bounds():
    assert ev.inception_score(np.full((10, 4), 0.25)) == pytest.approx(1.0)
    assert ev.inception_score(np.eye(4)[np.arange(40) % 4]) == pytest.approx(4.0, rel=1e-6)


def test_same_class_scores_closer_than_other_classes_and_noise(model):
    kicks_a = embed(model, kick, range(0, 12))
    kicks_b = embed(model, kick, range(100, 112))
    snares = embed(model, snare, range(200, 212))
    noise = embed(model, white_noise, range(300, 312))
    fd_same = ev.frechet_distance(kicks_a, kicks_b)
    kid_same = ev.kernel_inception_distance(kicks_a, kicks_b)[0]
    for other in (snares, noise):
        assert fd_same < ev.frechet_distance(kicks_a, other)
        assert kid_same < ev.kernel_inception_distance(kicks_a, other)[0]
    hats_a, hats_b = embed(model, hihat, range(400, 412)), embed(model, hihat, range(500, 512))
    assert ev.frechet_distance(hats_a, hats_b) < ev.frechet_distance(hats_a, kicks_a)


def test_kid_near_zero_for_disjoint_sets_of_one_class(model):
    a = embed(model, kick, range(0, 16))
    b = embed(model, kick, range(50, 66))
    kid, std, _ = ev.kernel_inception_distance(a, b)
    kid_other = ev.kernel_inception_distance(a, embed(model, snare, range(16)))[0]
    assert abs(kid) < max(3 * std, 0.05 * kid_other)


def test_classifier_embedding_is_gain_invariant_and_shaped(model):
    audio = torch.stack([kick(1), snare(2), hihat(3)])
    emb, logits = model.embed_and_logits(audio)
    assert emb.shape == (3, model.config.embed_dim)
    assert logits.shape == (3, len(model.class_names))
    quiet = model.embed(audio * 0.25)
    torch.testing.assert_close(quiet, emb, atol=1e-2, rtol=1e-2)


def test_shipped_classifier_metadata():
    meta = read_classifier_metadata()
    assert meta["format"] == "drumdiff-classifier"
    assert set(meta["class_names"]) >= {"kick", "snare", "hihat"}
    assert "val_macro_accuracy" in meta["provenance"]
    assert DEFAULT_CLASSIFIER.stat().st_size < 5_000_000


def test_classifier_pooling_options_save_and_load(tmp_path):
    old = ClassifierConfig.from_dict({"class_names": ["kick", "snare"], "channels": [4, 8, 8, 8]})
    assert old.pool == "global"  # files written before the option existed hold no `pool`
    with pytest.raises(ValueError, match="pool"):
        ClassifierConfig(pool="freq")
    config = ClassifierConfig(class_names=("kick", "snare"), channels=(4, 8, 8, 8), pool="time", embed_dim=8)
    assert config.pooled_dim == 2 * 8 * (64 // 16)  # mean and max per frequency row of the last block
    model = DrumClassifier(config).eval()
    audio = torch.stack([kick(1), snare(2)])
    path = tmp_path / "c.safetensors"
    save_classifier(path, model, provenance={}, fp16=False)
    loaded = load_classifier(path)
    assert loaded.config == config
    torch.testing.assert_close(loaded(audio), model(audio))


def _train_script():
    spec = importlib.util.spec_from_file_location("train_classifier", SCRIPTS / "train_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_classifier_script_cross_validates_and_ships(tmp_path, capsys):
    makers = {"hihat": hihat, "kick": kick, "snare": snare}
    items = []
    for k, kit in enumerate(["a", "b", "c", "v"]):
        for name, make in makers.items():
            rel = f"{name}/{kit}.flac"
            write(tmp_path / rel, make(10 * k + len(name)))
            split = "val" if kit == "v" else "train"
            instrument = "Hand Clap" if (name, kit) == ("snare", "b") else name.title()
            items.append({"path": rel, "class": name, "group": f"kit {kit}", "split": split,
                          "provenance": {"instrument": instrument}})  # fmt: skip
    manifest = {"format": "drumdiff-dataset", "version": 1, "classes": sorted(makers), "sample_rate": SR,
                "length": LENGTH, "channels": 2, "items": items}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    script = _train_script()
    assert script.kit_folds(["c", "a", "d", "b", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    labels, instruments = torch.tensor([0, 0, 0, 1]), ["k/a", "k/a", "k/b", "k/c"]
    assert script.sampling_weights(labels, instruments, "class").tolist() == pytest.approx([1 / 3] * 3 + [1])
    assert script.sampling_weights(labels, instruments, "instrument").tolist() == [0.25, 0.25, 0.5, 1.0]
    tiny = ["--epochs", "2", "--batch-size", "4", "--width", "2", "--embed-dim", "4", "--no-progress"]
    predictions = tmp_path / "cv.json"
    assert (
        script.main([str(tmp_path), "--cv", "3", "--pool", "time", "--predictions", str(predictions), *tiny])
        == 0
    )
    out = capsys.readouterr().out
    assert "cross-validation over 3 train kits (9 clips" in out and "pooled macro accuracy" in out
    assert {row["group"] for row in json.loads(predictions.read_text())} == {"kit a", "kit b", "kit c"}
    shipped = tmp_path / "c.safetensors"
    assert script.main([str(tmp_path), "--out", str(shipped), "--pool", "time", "--subclasses", *tiny]) == 0
    provenance = read_classifier_metadata(shipped)["provenance"]
    assert provenance["train_kits"] == ["kit a", "kit b", "kit c"] and provenance["val_kits"] == ["kit v"]
    assert provenance["subclasses"] == ["hihat", "kick", "snare", "snare/clap"]
    loaded = load_classifier(shipped)
    assert loaded.config.pool == "time" and loaded.config.subclass_of == (0, 1, 2, 2)
    probs = loaded(torch.stack([kick(1), snare(2)])).softmax(1)  # class probabilities: sums over sub-classes
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))


# ----------------------------------------------------------------------------------------------------------
# Artifacts


def test_hiss_worsens_tail_and_hiss_monotonically():
    clean = kick(7)
    gen = torch.Generator().manual_seed(0)
    hiss = _highpass(torch.randn(2, LENGTH, generator=gen, dtype=torch.float64), 10000).float()
    hiss = hiss / hiss.std()
    tails, hisses, levels = [], [], []
    for level_db in (None, -80, -60, -40, -20):
        audio = clean if level_db is None else clean + hiss * 10 ** (level_db / 20)
        metrics = ev.artifact_metrics(audio, SR)
        tails.append(metrics["tail_db"])
        hisses.append(metrics["hiss_db"])
        levels.append(metrics["hiss_level_db"])
    for series in (tails, hisses, levels):
        assert all(a < b for a, b in zip(series, series[1:], strict=False)), series
    assert tails[-1] > tails[0] + 20 and hisses[-1] > hisses[0] + 20 and levels[-1] > levels[0] + 20


def test_hiss_level_stays_when_only_the_decay_below_it_falls():
    """The same white floor under a body that decays further: the hiss share rises, the hiss level does not."""
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(LENGTH) / SR
    floor = torch.randn(2, LENGTH, generator=gen) * 10 ** (-50 / 20)  # white, -50 dB re full scale
    levels, shares = [], []
    for decay_s in (0.3, 0.1):  # a 100 Hz body held for 0.1 s (the loudest frames), then decaying
        body = 0.8 * torch.sin(2 * math.pi * 100 * t) * torch.exp(-(t - 0.1).clamp(min=0) / decay_s)
        metrics = ev.artifact_metrics(body.expand(2, -1) + floor, SR)
        levels.append(metrics["hiss_level_db"])
        shares.append(metrics["hiss_db"])
    assert shares[1] > shares[0] + 10, shares  # the ratio reads the faster decay as more hiss
    assert abs(levels[1] - levels[0]) < 0.5, levels  # the level of the hiss above 14 kHz is the same
    # white noise alone: about a third of its energy above 14 kHz, read against its own loudest frame
    alone = ev.artifact_metrics(floor, SR)
    assert alone["hiss_db"] == pytest.approx(10 * math.log10(1 - 14000 / 22050), abs=0.5)
    assert alone["hiss_level_db"] == pytest.approx(alone["hiss_db"], abs=1.0)
    assert ev.artifact_metrics(torch.zeros(2, LENGTH), SR)["hiss_level_db"] == ev.FLOOR_DB
    assert ev.artifact_metrics(floor, 22050)["hiss_level_db"] is None


def test_dc_clipping_and_silence():
    audio = kick(3)
    assert ev.artifact_metrics(audio + 0.05, SR)["dc_offset"] == pytest.approx(
        0.05 + float(audio.mean(1).abs().max()), abs=1e-3
    )
    loud = (audio * 4).clamp(-1, 1)
    assert ev.artifact_metrics(loud, SR)["clipped_samples"] > 10
    assert ev.artifact_metrics(audio, SR)["clipped_samples"] == 0
    single = torch.zeros(2, LENGTH)
    single[:, 100] = 1.0  # one full-scale sample (peak normalised to 0 dBFS) is not clipping
    assert ev.artifact_metrics(single, SR)["clipped_samples"] == 0
    quiet = ev.artifact_metrics(audio * 1e-4, SR)
    assert quiet["silent"] and not ev.artifact_metrics(audio, SR)["silent"]
    assert ev.artifact_metrics(torch.zeros(2, LENGTH), SR)["tail_db"] == ev.FLOOR_DB


# ----------------------------------------------------------------------------------------------------------
# Folders and the CLI


def _documented_keys() -> set[str]:
    return set(re.findall(r"`([a-z_][a-z0-9_]*)`", DOCS.read_text(encoding="utf-8")))


def _all_keys(
    value, out: set[str], *, skip_values_of: tuple[str, ...] = ("per_class", "predicted", "unknown_classes")
) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            out.add(key)
            if key in skip_values_of:  # keyed by class name
                for sub in item.values():
                    _all_keys(sub, out)
            else:
                _all_keys(item, out)
    elif isinstance(value, list):
        for item in value:
            _all_keys(item, out)
    return out


def test_cli_json_offline_with_classes_train_plot_and_bad_files(tmp_path, capsys):
    gen, ref, train = tmp_path / "gen", tmp_path / "ref", tmp_path / "train"
    for k in range(4):
        write(ref / "kick" / f"k{k}.wav", kick(10 + k))
        write(ref / "snare" / f"s{k}.wav", snare(20 + k))
        write(train / "kick" / f"k{k}.wav", kick(30 + k))
    copied = write(gen / "kick" / "copy.wav", kick(30))  # a memorised training clip
    for k in range(3):
        write(gen / "kick" / f"g{k}.wav", kick(40 + k))
    for k in range(3):  # flat folder: the class comes from the generate record
        path = write(gen / f"clip{k}.wav", snare(50 + k))
        path.with_suffix(".json").write_text(json.dumps({"file": path.name, "class_name": "snare"}))
    (gen / "kick" / "broken.wav").write_text("not audio at all")
    (gen / "empty.flac").write_bytes(b"")
    truncated = write(tmp_path / "whole.wav", kick(60)).read_bytes()
    (gen / "kick" / "truncated.wav").write_bytes(truncated[: len(truncated) // 2])
    png = tmp_path / "report.png"

    code = main(
        [
            "evaluate",
            str(gen),
            str(ref),
            "--json",
            "--classes",
            "--train",
            str(train),
            "--plot",
            str(png),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["num_gen"] == 7 and report["num_ref"] == 8
    skipped = {Path(s["file"]).name for s in report["skipped"]}
    assert skipped == {"broken.wav", "empty.flac", "truncated.wav"}
    assert "broken.wav" in captured.err
    assert report["classifier"]["sha256"] == ev_sha(DEFAULT_CLASSIFIER)
    assert report["fd"] > 0 and report["kid_std"] >= 0
    classes = report["classes"]
    assert classes["per_class"]["snare"]["num_gen"] == 3 and classes["per_class"]["kick"]["num_gen"] == 4
    assert classes["num_with_class"] == 7
    assert 1.0 <= classes["inception_score"] <= len(report["classifier"]["class_names"])
    assert report["train"]["memorised_files"] == [copied.relative_to(gen).as_posix()]
    assert png.stat().st_size > 10_000
    undocumented = _all_keys(report, set()) - _documented_keys()
    assert not undocumented, f"metric names missing from docs/evaluation.md: {sorted(undocumented)}"


def ev_sha(path: Path) -> str:
    from drumdiff.files import file_digest

    return file_digest(path)


def test_cli_summary_and_bad_input(tmp_path, capsys):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for k in range(3):
        write(gen / f"g{k}.wav", hihat(k))
        write(ref / f"r{k}.wav", hihat(10 + k))
    assert main(["evaluate", str(gen), str(ref), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FD" in out and "tail noise" in out
    assert main(["evaluate", str(tmp_path / "missing"), str(ref), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
    (tmp_path / "nothing").mkdir()
    assert main(["evaluate", str(tmp_path / "nothing"), str(ref), "--no-progress"]) == 2
    assert "no readable audio" in capsys.readouterr().err


def test_prepared_dataset_ref_split(tmp_path):
    items = []
    for k, split in enumerate(["train", "train", "val", "val", "val"]):
        rel = f"kick/k{k}.flac"
        write(tmp_path / rel, kick(k))
        items.append({"path": rel, "class": "kick", "group": f"kit{k}", "split": split})
    manifest = {"format": "drumdiff-dataset", "version": 1, "classes": ["kick"], "items": items}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert len(ev.list_clips(tmp_path)) == 5
    val = ev.list_clips(tmp_path, split="val")
    assert [rel for _, rel, _ in val] == ["kick/k2.flac", "kick/k3.flac", "kick/k4.flac"]
    assert {c for _, _, c in val} == {"kick"}


def test_evaluation_package_loads_its_modules_on_first_use() -> None:
    """`generate`'s originality check imports one evaluation module; that must not load datasets and reports
    (start-up time), while every name the package lists still resolves."""
    script = (
        "import sys; import drumdiff.evaluation.originality; "
        "loaded = [m for m in ('drumdiff.data', 'drumdiff.evaluation.report', 'drumdiff.evaluation.clips', "
        "'drumdiff.evaluation.plot') if m in sys.modules]; assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert all(callable(getattr(ev, name)) or name.isupper() for name in ev.__all__)
    assert ev.load_clips.__module__ == "drumdiff.evaluation.clips"
    with pytest.raises(AttributeError, match="no_such_name"):
        ev.no_such_name  # noqa: B018
