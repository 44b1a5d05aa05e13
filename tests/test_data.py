"""data prepare / inspect / PreparedDataset: every bad input of issue 4, made inside the test, on tiny clips."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff import audio, data
from drumdiff.cli import main
from drumdiff.config import ModelConfig
from drumdiff.data import conditioning
from drumdiff.errors import AudioError, DrumdiffError
from tests.helpers import locked_folder

SR = 44100
LENGTH = 2048  # short clips keep every test fast; the rules are the same at 32768
SETTINGS = data.PrepareSettings(length=LENGTH)


def hit(
    seed: int, *, frames: int = 3000, sr: int = SR, channels: int = 1, amplitude: float = 0.8
) -> np.ndarray:
    """A decaying noise burst, `(T, C)` as soundfile wants it; each seed sounds different."""
    rng = np.random.default_rng(seed)
    envelope = np.exp(-np.arange(frames) / (frames / 6))
    return (rng.uniform(-1, 1, (frames, channels)) * envelope[:, None] * amplitude).astype(np.float32)


def wav(path, samples: np.ndarray, *, sr: int = SR, subtype: str = "PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sr, subtype=subtype)
    return path


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def reasons(out) -> dict[str, str]:
    """rejected.json as {file name: reason}."""
    return {os.path.basename(r["path"]): r["reason"] for r in read_json(out / "rejected.json")["rejected"]}


def test_split_rule_is_a_stable_hash():
    assert data.split_for_group("GMRockKit") == data.split_for_group("GMRockKit")
    splits = [data.split_for_group(f"kit-{i}") for i in range(2000)]
    assert set(splits) == {"train", "val"} and 0.08 < splits.count("val") / 2000 < 0.12
    # Pinned: changing the rule would silently move kits between train and val.
    assert [data.split_for_group(g) for g in ("GMRockKit", "HardElectro1", "Audiophob")] == [
        "train",
        "val",
        "val",
    ]


def test_bad_inputs_are_rejected_with_reasons_and_good_ones_survive(tmp_path, monkeypatch):
    src = tmp_path / "samples"
    good = src / "good"
    wav(good / "kick.wav", hit(1))
    wav(good / "ça va snare 01.wav", hit(2))  # non-ASCII and spaces
    wav(good / "eight.wav", hit(3, channels=8))
    wav(good / "low.wav", hit(4, sr=8000, frames=800), sr=8000)
    wav(good / "high.wav", hit(5, sr=96000, frames=6000), sr=96000)
    wav(good / "long.wav", hit(6, frames=60 * 8000, sr=8000), sr=8000)  # a 60 s file (8 kHz keeps it small)
    wav(good / "hot.wav", hit(7) * 40, subtype="FLOAT")  # float audio peaking far above 1.0
    bad = src / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("not audio at all\n" * 20)
    (bad / "image.flac").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    (bad / "random.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    wav(bad / "zeros.wav", np.zeros((3000, 1), np.float32))
    wav(bad / "dc.wav", np.full((3000, 1), 0.5, np.float32))
    nan = hit(8)
    nan[100, 0] = np.nan
    wav(bad / "nan.wav", nan, subtype="FLOAT")
    inf = hit(9)
    inf[5, 0] = np.inf
    wav(bad / "inf.wav", inf, subtype="FLOAT")
    wav(bad / "tiny.wav", hit(10, frames=10))  # a 10-sample file
    (bad / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    (bad / "folder.wav").mkdir()  # a folder named like an audio file
    wav(bad / "folder.wav" / "inner.wav", hit(11))  # ... that holds a real file
    truncated = wav(tmp_path / "full.wav", hit(12, frames=4000)).read_bytes()
    (good / "truncated.wav").write_bytes(truncated[: 44 + 2 * 1500])  # cut after 1500 frames
    liar = bytearray(wav(tmp_path / "liar.wav", hit(13)).read_bytes())
    at = liar.find(b"data")
    liar[at + 4 : at + 8] = struct.pack("<I", 10_000_000)  # header claims far more data
    (good / "liar.wav").write_bytes(bytes(liar))
    (src / "notes.txt").write_text("ignored: not an audio extension")

    out = tmp_path / "out"
    report = data.prepare([src], out, settings=SETTINGS, progress=False)
    got = reasons(out)
    assert got == {
        "empty.wav": "empty",
        "text.wav": "not audio",
        "image.flac": "not audio",
        "random.wav": "not audio",
        "zeros.wav": "silent",
        "dc.wav": "silent",
        "nan.wav": "non-finite samples",
        "inf.wav": "non-finite samples",
        "tiny.wav": "too short",
        "dangling.wav": "missing",
    }
    manifest = read_json(out / "manifest.json")
    by_name = {os.path.basename(it["source"]): it for it in manifest["items"]}
    assert set(by_name) == {
        "kick.wav", "ça va snare 01.wav", "eight.wav", "low.wav", "high.wav", "long.wav", "hot.wav",
        "truncated.wav", "liar.wav", "inner.wav",
    }  # fmt: skip
    assert report.accepted == 10 and report.rejected["not audio"] == 3 and report.ignored_non_audio == 1
    assert manifest["classes"] == ["drums"] and manifest["length"] == LENGTH
    assert by_name["eight.wav"]["processing"]["channels"].startswith("8 -> 2")
    assert by_name["low.wav"]["processing"]["resampled"] == "8000 -> 44100 Hz"
    assert by_name["high.wav"]["original"]["sample_rate"] == 96000
    assert by_name["long.wav"]["processing"]["cropped_from_s"] > 59
    assert by_name["long.wav"]["original"]["duration_s"] == 60.0
    assert "1500" in by_name["truncated.wav"]["processing"]["decoded_partially"]
    assert "header claims" in by_name["liar.wav"]["processing"]["decoded_partially"]
    assert all(it["path"].isascii() and " " not in it["path"] for it in manifest["items"])
    for item in manifest["items"]:  # no NaN, no silence, right shape, peak at -1 dBFS
        clip, rate = audio.read(out / item["path"])
        assert rate == SR and clip.shape == (2, LENGTH) and torch.isfinite(clip).all()
        assert abs(audio.peak_db(clip) - (-1.0)) < 0.01
    assert not (out / data.STAGING).exists()
    assert not list(out.rglob("*.tmp"))


def test_cli_exit_codes_and_read_only_output(tmp_path, monkeypatch, capsys):
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.wav").write_text("text")
    assert main(["data", "prepare", str(junk), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no file was accepted" in err and err.count("\n") == 1
    assert read_json(tmp_path / "o2" / "rejected.json")["rejected"][0]["reason"] == "not audio"

    wav(tmp_path / "src" / "a.wav", hit(1))
    with locked_folder(tmp_path / "locked", monkeypatch) as locked:
        code = main(["data", "prepare", str(tmp_path / "src"), "--out", str(locked), "--no-progress"])
    assert code == 2 and "locked is not writable" in capsys.readouterr().err


def test_odd_names_and_output_inside_the_source(tmp_path):
    src = tmp_path / "src"
    wav(src / "a.wav", hit(1))
    with open(os.path.join(os.fsencode(src), b"caf\xe9 latin-1.wav"), "wb") as f:  # not valid UTF-8
        f.write((src / "a.wav").read_bytes()[:44] + (wav(tmp_path / "b.wav", hit(2)).read_bytes()[44:]))
    out = src / "prepared"  # inside SRC: never imported as input
    for _ in range(2):
        report = data.prepare([src], out, settings=SETTINGS, progress=False)
        assert report.accepted == 2 and report.inputs == 2
    names = {os.path.basename(it["source"]) for it in read_json(out / "manifest.json")["items"]}
    assert names == {"a.wav", "caf\udce9 latin-1.wav"}
    assert len(data.PreparedDataset(out, split="all", progress=False)) == 2


def test_refuses_a_foreign_non_empty_output_folder(tmp_path):
    wav(tmp_path / "src" / "a.wav", hit(1))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.doc").write_text("precious")
    with pytest.raises(DrumdiffError, match="not empty"):
        data.prepare([tmp_path / "src"], tmp_path / "mine", settings=SETTINGS, progress=False)


def test_incremental_rerun_and_interrupted_run(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        wav(src / "kit" / f"hit{i}.wav", hit(i))
    out = tmp_path / "out"
    first = data.prepare([src], out, settings=SETTINGS, progress=False)
    assert (first.encoded, first.reused) == (4, 0)
    again = data.prepare([src], out, settings=SETTINGS, progress=False)
    assert (again.encoded, again.reused, again.decoded) == (0, 4, 0)

    wav(src / "kit" / "hit2.wav", hit(99))  # one source changes
    changed = data.prepare([src], out, settings=SETTINGS, progress=False)
    assert (changed.encoded, changed.reused) == (1, 3)
    os.utime(src / "kit" / "hit0.wav", ns=(1, 1))  # touched, same bytes: still reused
    assert data.prepare([src], out, settings=SETTINGS, progress=False).encoded == 0

    # A damaged output (e.g. a crash mid-copy by another tool) is never trusted: re-encoded.
    item = read_json(out / "manifest.json")["items"][0]
    (out / item["path"]).write_bytes(b"half a file")
    assert data.prepare([src], out, settings=SETTINGS, progress=False).encoded == 1
    # An interrupted run leaves staged files and outputs the manifest does not list: neither is trusted.
    (out / data.STAGING).mkdir()
    (out / data.STAGING / "x.flac").write_bytes(b"partial")
    (out / "drums" / "stray-00000000.flac").write_bytes(b"partial")
    report = data.prepare([src], out, settings=SETTINGS, progress=False)
    assert report.encoded == 0 and not (out / "drums" / "stray-00000000.flac").exists()
    assert not (out / data.STAGING).exists()
    # A removed source drops its output; other settings re-encode everything.
    (src / "kit" / "hit3.wav").unlink()
    assert data.prepare([src], out, settings=SETTINGS, progress=False).accepted == 3
    assert len(list((out / "drums").glob("*.flac"))) == 3
    other = data.PrepareSettings(length=LENGTH, peak_db=-3.0)
    assert data.prepare([src], out, settings=other, progress=False).encoded == 3


def test_duplicates_are_the_same_audio_not_the_same_bytes(tmp_path):
    src = tmp_path / "src"
    samples = hit(5)
    wav(src / "a" / "snare.wav", samples)  # 16-bit WAV
    (src / "b").mkdir()
    pcm, _ = sf.read(src / "a" / "snare.wav", dtype="int16")  # the same samples in another container
    sf.write(src / "b" / "snare copy.flac", pcm, SR, subtype="PCM_16")
    assert (src / "b" / "snare copy.flac").read_bytes() != (src / "a" / "snare.wav").read_bytes()
    wav(src / "b" / "other.wav", hit(6))
    out = tmp_path / "out"
    report = data.prepare([src], out, classes="folders", settings=SETTINGS, progress=False)
    rejected = read_json(out / "rejected.json")["rejected"]
    assert report.accepted == 2 and [r["reason"] for r in rejected] == ["duplicate"]
    assert rejected[0]["path"] == "src/b/snare copy.flac" and rejected[0]["duplicate_of"] == "src/a/snare.wav"
    again = data.prepare([src], out, classes="folders", settings=SETTINGS, progress=False)
    assert (again.decoded, again.reused, again.rejected) == (0, 2, {"duplicate": 1})  # duplicates are cached
    (src / "a" / "snare.wav").unlink()  # the original goes: its duplicate takes its place
    after = data.prepare([src], out, classes="folders", settings=SETTINGS, progress=False)
    assert (after.accepted, after.encoded, after.decoded, after.rejected) == (2, 1, 1, {})
    assert {it["source"] for it in read_json(out / "manifest.json")["items"]} == {
        "src/b/snare copy.flac",
        "src/b/other.wav",
    }


def test_classes_folders_and_none(tmp_path):
    src = tmp_path / "lib"
    wav(src / "Kicks" / "808" / "k1.wav", hit(1))
    wav(src / "Kicks" / "k2.wav", hit(2))
    wav(src / "Snares" / "s1.wav", hit(3))
    wav(src / "loose.wav", hit(4))
    out = tmp_path / "folders"
    data.prepare([src], out, classes="folders", settings=SETTINGS, progress=False)
    manifest = read_json(out / "manifest.json")
    assert manifest["classes"] == ["Kicks", "Snares"]
    groups = {os.path.basename(it["source"]): (it["class"], it["group"]) for it in manifest["items"]}
    assert groups == {
        "k1.wav": ("Kicks", "lib/Kicks/808"),
        "k2.wav": ("Kicks", "lib/Kicks"),
        "s1.wav": ("Snares", "lib/Snares"),
    }
    assert all(it["split"] == data.split_for_group(it["group"]) for it in manifest["items"])
    assert reasons(out) == {"loose.wav": "not in a class folder"}
    out_none = tmp_path / "none"
    report = data.prepare([src], out_none, settings=SETTINGS, progress=False)
    assert report.accepted == 4 and read_json(out_none / "manifest.json")["classes"] == ["drums"]
    one = data.find_sources([src / "Kicks" / "k2.wav"])  # a single file as SRC: its folder is the group
    assert [(s.display, s.group, s.class_name) for s in one] == [("Kicks/k2.wav", "Kicks", "drums")]
    [loose] = data.find_sources([src / "loose.wav"], classes="folders")
    assert loose.reject == "not in a class folder"


KIT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <name>Tiny Kit</name>
 <author>Tester</author>
 <license>CC0</license>
 <componentList><drumkitComponent><id>0</id><name>Main</name></drumkitComponent></componentList>
 <instrumentList>
  <instrument><id>0</id><name>Kick Soft</name>
   <instrumentComponent><component_id>0</component_id>
    <layer><filename>kick_a.wav</filename><min>0</min><max>0.5</max></layer>
    <layer><filename>kick_b.wav</filename><min>0.5</min><max>1</max></layer>
   </instrumentComponent>
  </instrument>
  <instrument><id>1</id><name>Side Stick</name><layer><filename>stick.flac</filename></layer></instrument>
  <instrument><id>2</id><name>Closed HH</name><filename>hat.wav</filename></instrument>
  <instrument><id>3</id><name>Cowbell</name><layer><filename>bell.wav</filename></layer></instrument>
  <instrument><id>4</id><name>Gone</name><layer><filename>missing.wav</filename></layer></instrument>
  <instrument><id>5</id><name>Empty</name></instrument>
  <instrument><id>6</id><name>Sample: beats_01-10.flac</name><layer><filename>loop.wav</filename></layer></instrument>
 </instrumentList>
</drumkit_info>
"""


def make_kit(folder):
    folder.mkdir(parents=True)
    (folder / "drumkit.xml").write_text(KIT_XML, encoding="utf-8")
    for i, name in enumerate(("kick_a.wav", "kick_b.wav", "hat.wav", "bell.wav", "stray.wav", "loop.wav")):
        wav(folder / name, hit(20 + i))
    sf.write(folder / "stick.flac", hit(30), SR)
    return folder


def test_hydrogen_kit_classes_provenance_and_mapping(tmp_path, capsys):
    make_kit(tmp_path / "kits" / "tiny")
    out = tmp_path / "out"
    data.prepare([tmp_path / "kits"], out, classes="hydrogen", settings=SETTINGS, progress=False)
    manifest = read_json(out / "manifest.json")
    classes = {os.path.basename(it["source"]): it["class"] for it in manifest["items"]}
    assert classes == {
        "kick_a.wav": "kick",
        "kick_b.wav": "kick",
        "stick.flac": "percussion",
        "hat.wav": "hihat",
        "bell.wav": "percussion",
    }
    item = manifest["items"][0]
    assert item["group"] == "Tiny Kit" and item["split"] == data.split_for_group("Tiny Kit")
    assert item["provenance"]["license"] == "CC0" and item["provenance"]["author"] == "Tester"
    old_kit = tmp_path / "old" / "kit"  # no <license>: point at the kit's own notes when there are some
    old_kit.mkdir(parents=True)
    (old_kit / "drumkit.xml").write_text(KIT_XML.replace("<license>CC0</license>", ""), encoding="utf-8")
    assert data.read_hydrogen_kit(old_kit / "drumkit.xml")[0].license == ""
    (old_kit / "README").write_text("Licence: GPL v2")
    assert (
        data.read_hydrogen_kit(old_kit / "drumkit.xml")[0].license == "not stated in drumkit.xml; see README"
    )
    assert reasons(out) == {
        "stray.wav": "not in a Hydrogen kit",
        "missing.wav": "missing",
        "loop.wav": "no class",
    }
    [no_class] = [r for r in read_json(out / "rejected.json")["rejected"] if r["reason"] == "no class"]
    assert "Sample: beats_01-10.flac" in no_class["detail"]  # the detail names the instrument
    broken = tmp_path / "kits" / "broken"  # a second kit with a broken drumkit.xml does not stop the run
    wav(broken / "snare.wav", hit(50))
    (broken / "drumkit.xml").write_text("<drumkit_info><name>Broken</name><instrumentList>")
    report = data.prepare([tmp_path / "kits"], out, classes="hydrogen", settings=SETTINGS, progress=False)
    assert report.accepted == 5 and report.decoded == 0
    [entry] = [
        r for r in read_json(out / "rejected.json")["rejected"] if r["path"].endswith("broken/snare.wav")
    ]
    assert entry["reason"] == "not in a Hydrogen kit" and "cannot parse" in entry["detail"]

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"low": ["kick"], "metal": ["hh", "bell"]}))
    out2 = tmp_path / "out2"
    code = main(
        ["data", "prepare", str(tmp_path / "kits"), "--out", str(out2), "--classes", "hydrogen"]
        + ["--mapping", str(mapping), "--length", str(LENGTH), "--workers", "1", "--no-progress"]
    )
    assert code == 0
    assert read_json(out2 / "manifest.json")["classes"] == ["low", "metal"]
    assert reasons(out2)["stick.flac"] == reasons(out2)["loop.wav"] == "no class"
    summary = capsys.readouterr().out  # counts per class and split, then per rejection reason
    assert "4 accepted" in summary
    split = data.split_for_group("Tiny Kit")
    low = [line.split() for line in summary.splitlines() if line.split()[:1] == ["low"]]
    assert low == [["low", "2", "0"] if split == "train" else ["low", "0", "2"]]
    assert any(line.split() == ["no", "class", "2"] for line in summary.splitlines())
    mapping.write_text("{not json")
    with pytest.raises(DrumdiffError, match="map.json"):
        data.load_mapping(mapping)


def test_instrument_name_table():
    table = data.DEFAULT_HYDROGEN_MAPPING
    expected = {
        "Kick (Tama Superstar 22\")": "kick", "c3 - bass drum 1": "kick", "BassDrum": "kick",
        "Snare Rimshot": "snare", "Hand Clap": "snare", "d#3 - clap": "snare", "Snare1": "snare",
        "Hi-Hat Closed": "hihat", "Closed HH": "hihat", "Sabian Hat Pedal": "hihat", "Side OHH": "hihat",
        "Tom Low": "percussion", "tomhi2": "percussion", "Crash": "percussion", "d#4 - cymbal 1": "percussion",
        "Cowbell": "percussion", "Tambourine": "percussion", "Djembe1 Slap": "percussion",
        # strokes on the rim alone are percussion in every kit, whatever the kit calls them
        "Stick": "percussion", "c#3 - stick": "percussion", "Pearl Side Stick": "percussion",
        "Rim Click (Pearl Free Floating Maple 14x3.5)": "percussion",
        # names that say nothing about the sound: no class, not a guess
        "Sample: beats_01-10.flac": None, "f#4 -": None, "17": None, "": None, "FX": None, "Zap 1": None,
    }  # fmt: skip
    assert {name: data.class_for_instrument(name, table) for name in expected} == expected


def test_workers_spawn_pool_gives_the_same_result(tmp_path, monkeypatch, capfd):
    src = tmp_path / "src"
    for i in range(4):
        wav(src / "k" / f"h{i}.wav", hit(40 + i))
    one = data.prepare([src], tmp_path / "one", settings=SETTINGS, workers=1, progress=False)
    pools = []

    class Pool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append((kwargs["max_workers"], kwargs["mp_context"].get_start_method()))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    two = data.prepare([src], tmp_path / "two", settings=SETTINGS, workers=2, progress=False)
    assert pools == [(2, "spawn")] and "worker processes failed" not in capfd.readouterr().err
    assert one.accepted == two.accepted == 4
    strip = ("source_mtime_ns",)
    items = [
        [{k: v for k, v in it.items() if k not in strip} for it in read_json(d / "manifest.json")["items"]]
        for d in (tmp_path / "one", tmp_path / "two")
    ]
    assert items[0] == items[1]  # deterministic: byte-identical FLACs (same sha1) from both paths


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared dataset with 2 classes and groups on both sides of the split."""
    root = tmp_path_factory.mktemp("prepared")

    def group(split: str) -> str:  # --classes folders: lib/<class>/<group>/, the group is "lib/a/<group>"
        return next(f"g{i}" for i in range(200) if data.split_for_group(f"lib/a/g{i}") == split)

    for i in range(6):
        wav(root / "lib" / ("a" if i % 2 else "b") / group("train") / f"t{i}.wav", hit(60 + i))
    for i in range(2):
        wav(root / "lib" / "a" / group("val") / f"v{i}.wav", hit(70 + i))
    out = root / "out"
    data.prepare([root / "lib"], out, classes="folders", settings=SETTINGS, progress=False)
    return out


def test_prepared_dataset_cache_and_labels(prepared):
    manifest = read_json(prepared / "manifest.json")
    n_train = sum(it["split"] == "train" for it in manifest["items"])
    ds = data.PreparedDataset(prepared, split="train", progress=False)
    assert len(ds) == n_train > 0 and ds.class_names == ["a", "b"]
    x, label = ds[0]
    assert x.dtype == torch.float32 and x.shape == (2, LENGTH) and isinstance(label, int)
    reference, _ = audio.read(prepared / ds.items[0]["path"])
    assert torch.allclose(x, reference, atol=1e-3)  # float16 cache
    batch, labels = ds.batch([2, 0, 1])
    assert (
        batch.shape == (3, 2, LENGTH)
        and torch.equal(batch[1], x)
        and labels.tolist()
        == [
            ds[2][1],
            ds[0][1],
            ds[1][1],
        ]
    )
    cache = ds.cache_path
    assert cache.exists()
    assert data.PreparedDataset(prepared, split="train", progress=False).cache_path == cache  # reused
    all_items = data.PreparedDataset(prepared, split="all", progress=False)
    assert len(all_items) == len(manifest["items"])
    assert len(data.PreparedDataset(prepared, split="test", progress=False)) == 0  # no --test-source here
    with pytest.raises(DrumdiffError, match="split"):
        data.PreparedDataset(prepared, split="tests", progress=False)
    with pytest.raises(DrumdiffError, match="manifest.json"):
        data.PreparedDataset(prepared.parent, progress=False)


def test_cache_rebuilt_when_manifest_changes(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        wav(src / "k" / f"h{i}.wav", hit(80 + i))
    out = tmp_path / "out"
    data.prepare([src], out, settings=SETTINGS, progress=False)
    first = data.PreparedDataset(out, split="all", progress=False)
    wav(src / "k" / "h3.wav", hit(90))
    data.prepare([src], out, settings=SETTINGS, progress=False)
    second = data.PreparedDataset(out, split="all", progress=False)
    assert second.cache_path != first.cache_path and len(second) == 4 and not first.cache_path.exists()


def test_augment_is_deterministic_and_keeps_shape(prepared):
    aug = data.Augment(pitch_semitones=1.0)
    ds = data.PreparedDataset(prepared, split="all", augment=aug, seed=3, progress=False)
    a, b = ds[1][0], ds[1][0]
    assert torch.equal(a, b) and a.shape == (2, LENGTH) and torch.isfinite(a).all()
    plain = data.PreparedDataset(prepared, split="all", progress=False)[1][0]
    assert not torch.equal(a, plain) and a.abs().max() <= plain.abs().max() * 1.2 + 1e-6
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a)  # a new draw each epoch
    x = torch.randn(2, 1000)
    g = torch.Generator().manual_seed(0)
    swapped = data.Augment(gain_db=0, polarity=0, swap=1.0, width=0, shift_ms=0)(
        x, generator=g, sample_rate=SR
    )
    assert torch.equal(swapped, x.flip(0))
    inverted = data.Augment(gain_db=0, polarity=1.0, swap=0, width=0, shift_ms=0)(
        x, generator=g, sample_rate=SR
    )
    assert torch.equal(inverted, -x)


def test_dataset_pickles_and_spawn_dataloader_workers(prepared):
    ds = data.PreparedDataset(prepared, split="train", augment=data.Augment(), progress=False)
    ds[0]  # opens the memory map; pickling must still work
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0][0], ds[0][0])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, num_workers=2, multiprocessing_context="spawn", shuffle=False
    )
    batches = list(loader)
    assert sum(b[0].shape[0] for b in batches) == len(ds)
    assert torch.equal(batches[0][0][0], ds[0][0])  # same seed -> same augmentation in a worker


def test_inspect_writes_stats_and_png(prepared, capsys):
    result = data.inspect(prepared, examples=2)
    assert {row["class"] for row in result["stats"]} == {"a", "b"}
    assert sum(row["count"] for row in result["stats"]) == len(read_json(prepared / "manifest.json")["items"])
    png = prepared / "inspect.png"
    assert result["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "inspect", str(prepared), "--png", str(prepared / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "grid.png" in out and "train" in out
    assert math.isfinite(result["stats"][0]["lufs_median"])


def test_normalize_modes(tmp_path):
    src = tmp_path / "src"
    wav(src / "quiet.wav", hit(1, amplitude=0.05))
    wav(src / "hot.wav", hit(2) * 10, subtype="FLOAT")
    lufs = data.PrepareSettings(length=LENGTH, normalize="lufs", lufs=-20.0)
    data.prepare([src], tmp_path / "lufs", settings=lufs, progress=False)
    for item in read_json(tmp_path / "lufs" / "manifest.json")["items"]:
        clip, _ = audio.read(tmp_path / "lufs" / item["path"])
        # at the target, unless reaching it would push the peak above -1 dBFS
        assert abs(item["lufs"] - (-20.0)) < 0.1 or abs(audio.peak_db(clip) - (-1.0)) < 0.01
    raw = data.PrepareSettings(length=LENGTH, normalize="none")
    data.prepare([src], tmp_path / "raw", settings=raw, progress=False)
    items = {
        os.path.basename(it["source"]): it for it in read_json(tmp_path / "raw" / "manifest.json")["items"]
    }
    assert items["hot.wav"]["processing"]["clipped"] and items["quiet.wav"]["peak_db"] < -20
    with pytest.raises(DrumdiffError, match="--normalize"):
        data.PrepareSettings(normalize="rms")


def test_interrupted_run_leaves_the_previous_dataset_intact(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(3):
        wav(src / "k" / f"h{i}.wav", hit(100 + i))
    out = tmp_path / "out"
    data.prepare([src], out, settings=SETTINGS, progress=False)
    before = (out / "manifest.json").read_bytes()
    for i in range(3, 6):
        wav(src / "k" / f"h{i}.wav", hit(100 + i))
    real, calls = data.process_file, []

    def interrupted(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second new file
        return real(job)

    monkeypatch.setattr(conditioning, "process_file", interrupted)  # where the worker loop looks it up
    with pytest.raises(KeyboardInterrupt):
        data.prepare([src], out, settings=SETTINGS, progress=False, workers=1)
    assert (out / "manifest.json").read_bytes() == before  # the old manifest still describes the old files
    assert len(data.PreparedDataset(out, split="all", progress=False)) == 3
    monkeypatch.setattr(conditioning, "process_file", real)
    report = data.prepare([src], out, settings=SETTINGS, progress=False)
    assert (report.accepted, report.encoded, report.reused) == (6, 3, 3)
    assert not (out / data.STAGING).exists() and not list(out.rglob("*.tmp"))


def test_conditioning_onset_padding_dc_format_and_too_short_boundary(tmp_path):
    defaults = data.PrepareSettings()
    model = ModelConfig()
    assert (
        (defaults.sample_rate, defaults.length, defaults.channels)
        == (
            model.sample_rate,
            model.length,
            model.audio_channels,
        )
        == (44100, 32768, 2)
    )
    assert (defaults.normalize, defaults.peak_db) == ("peak", -1.0)
    src = tmp_path / "src"
    late = np.concatenate([hit(1, frames=4410) * 3e-4, hit(2)])  # 0.1 s below -60 dBFS, then the hit
    late[4410] = 0.5
    wav(src / "late.wav", late)
    wav(src / "short.wav", hit(3, frames=1000))  # 1000 frames: zero-padded to LENGTH
    wav(src / "dc.wav", hit(4, amplitude=0.5) + 0.3)
    for span in (255, 256):  # "too short" = fewer than 256 samples from first to last above -60 dBFS
        spikes = np.zeros((3000, 1), np.float32)
        spikes[100, 0] = spikes[100 + span - 1, 0] = 0.5
        wav(src / f"span{span}.wav", spikes)
    out = tmp_path / "out"
    data.prepare([src], out, settings=SETTINGS, progress=False)
    assert reasons(out) == {"span255.wav": "too short"}
    items = {os.path.basename(it["source"]): it for it in read_json(out / "manifest.json")["items"]}
    assert set(items) == {"late.wav", "short.wav", "dc.wav", "span256.wav"}
    clips = {}
    for name, item in items.items():
        info = sf.info(str(out / item["path"]))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
            "FLAC",
            "PCM_24",
            SR,
            2,
            LENGTH,
        )
        clips[name] = audio.read(out / item["path"])[0]
    assert items["late.wav"]["processing"]["trimmed_leading_s"] == 0.1
    assert clips["late.wav"][:, 0].abs().min() > 0.5  # the onset is the first sample
    assert items["short.wav"]["processing"]["padded_from_s"] == round(1000 / SR, 6)
    assert clips["short.wav"][:, 1000:].abs().max() == 0 and clips["short.wav"][:, 999].abs().max() > 0
    assert abs(items["dc.wav"]["processing"]["dc_removed"] - 0.3) < 0.02
    assert clips["dc.wav"].mean().abs() < 0.02  # 0.3 * gain if the offset had stayed


def test_sources_with_the_same_folder_name_keep_distinct_outputs(tmp_path):
    for folder, seed in (("A", 1), ("B", 2)):
        wav(tmp_path / folder / "Samples" / "kick.wav", hit(seed))
    srcs = [tmp_path / "A" / "Samples", tmp_path / "B" / "Samples"]
    out = tmp_path / "out"
    report = data.prepare(srcs, out, settings=SETTINGS, progress=False)
    items = read_json(out / "manifest.json")["items"]
    assert report.accepted == 2 and len({it["path"] for it in items}) == 2
    assert {it["source"] for it in items} == {"A/Samples/kick.wav", "B/Samples/kick.wav"}
    assert {it["group"] for it in items} == {"A/Samples", "B/Samples"}
    assert len(list((out / "drums").glob("*.flac"))) == 2
    assert data.prepare(srcs, out, settings=SETTINGS, progress=False).encoded == 0


def test_a_run_that_accepts_nothing_keeps_the_previous_dataset(tmp_path, capsys):
    wav(tmp_path / "src" / "k" / "a.wav", hit(1))
    out = tmp_path / "out"
    data.prepare([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    before = (out / "manifest.json").read_bytes()
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "readme.wav").write_text("not audio")
    assert main(["data", "prepare", str(tmp_path / "typo"), "--out", str(out), "--no-progress"]) == 2
    assert "no file was accepted" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before
    assert len(data.PreparedDataset(out, split="all", progress=False)) == 1
    assert reasons(out) == {"readme.wav": "not audio"}


def test_output_write_failure_stops_the_run_and_odd_failures_are_retried(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(3):
        wav(src / "k" / f"h{i}.wav", hit(110 + i))
    out = tmp_path / "out"
    real_write, real_condition = audio.write, data.condition

    def disk_full(path, *args, **kwargs):
        raise AudioError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(audio, "write", disk_full)
    with pytest.raises(DrumdiffError, match="No space left on device"):
        data.prepare([src], out, settings=SETTINGS, progress=False, workers=1)
    assert not (out / "manifest.json").exists() and not (out / "rejected.json").exists()  # nothing cached
    monkeypatch.setattr(audio, "write", real_write)
    calls = []

    def odd(decoded, settings):  # an unexpected bug on the second file (h1.wav: inputs go in path order)
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("something unforeseen")
        return real_condition(decoded, settings)

    monkeypatch.setattr(conditioning, "condition", odd)  # where process_file looks it up
    report = data.prepare([src], out, settings=SETTINGS, progress=False, workers=1)
    assert report.accepted == 2 and report.rejected == {"failed": 1}
    [entry] = read_json(out / "rejected.json")["rejected"]
    assert entry["path"].endswith("h1.wav") and "ValueError: something unforeseen" in entry["detail"]
    monkeypatch.setattr(conditioning, "condition", real_condition)
    before = (out / "manifest.json").read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up just as the manifest is written
    with pytest.raises(DrumdiffError, match=r"cannot write .*manifest\.json: No space left on device"):
        data.prepare([src], out, settings=SETTINGS, progress=False, workers=1)
    assert (out / "manifest.json").read_bytes() == before and not list(out.glob(".manifest.json.*"))
    monkeypatch.undo()
    again = data.prepare([src], out, settings=SETTINGS, progress=False, workers=1)
    assert (again.accepted, again.encoded, again.reused, again.rejected) == (3, 1, 2, {})


def test_augment_gain_width_and_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 1000)
    x[0, 0], x[1, 0] = 1.0, 0.5  # an impulse: mid 0.75, side 0.25
    off = {"gain_db": 0.0, "polarity": 0.0, "swap": 0.0, "width": 0.0, "shift_ms": 0.0}
    assert torch.equal(data.Augment(**off)(x, generator=g, sample_rate=SR), x)
    gains = [
        float(data.Augment(**{**off, "gain_db": 6.0})(x, generator=g, sample_rate=SR)[0, 0])
        for _ in range(200)
    ]
    assert min(gains) >= 10 ** (-6 / 20) - 1e-6 and max(gains) <= 1.0 and max(gains) - min(gains) > 0.3
    for _ in range(20):
        y = data.Augment(**{**off, "width": 0.2})(x, generator=g, sample_rate=SR)
        mid, side = (y[0, 0] + y[1, 0]) / 2, (y[0, 0] - y[1, 0]) / 2
        assert abs(mid - 0.75) < 1e-6 and 0.8 * 0.25 - 1e-6 <= side <= 1.2 * 0.25 + 1e-6
    shifts = set()
    for _ in range(50):
        y = data.Augment(**{**off, "shift_ms": 2.0})(x, generator=g, sample_rate=SR)
        onset = int(torch.nonzero(y[0]).flatten()[0])
        assert y.shape == x.shape and torch.equal(y[:, onset:], x[:, : 1000 - onset])
        shifts.add(onset)
    assert max(shifts) <= 2 * SR // 1000 and len(shifts) > 10


def test_training_reads_the_cache_not_the_audio_files(prepared, monkeypatch):
    manifest = read_json(prepared / "manifest.json")
    ds = data.PreparedDataset(prepared, split="val", progress=False)
    val = [it for it in manifest["items"] if it["split"] == "val"]
    expected = [audio.read(prepared / it["path"])[0] for it in val]

    def no_decoding(*args, **kwargs):
        raise AssertionError("training decoded an audio file")

    monkeypatch.setattr(audio, "read", no_decoding)
    monkeypatch.setattr(audio, "decode", no_decoding)
    assert len(ds) == len(val) > 0
    for i, item in enumerate(val):
        clip, label = ds[i]
        assert ds.class_names[label] == item["class"] and torch.allclose(clip, expected[i], atol=1e-3)


def test_augment_pitch_shift_stays_within_its_range():
    t = torch.arange(8192, dtype=torch.float64) / SR
    x = torch.sin(2 * math.pi * 1000 * t).float().expand(2, -1).clone()  # 1 kHz, stereo

    def frequency(clip: torch.Tensor) -> float:
        window = torch.hann_window(4096, dtype=torch.float64)
        spectrum = torch.fft.rfft(clip[0, :4096].double() * window, n=1 << 16).abs()
        return float(spectrum.argmax()) * SR / (1 << 16)

    off = {"gain_db": 0.0, "polarity": 0.0, "swap": 0.0, "width": 0.0, "shift_ms": 0.0}
    g = torch.Generator().manual_seed(0)
    ratios = [
        frequency(data.Augment(**off, pitch_semitones=2.0)(x, generator=g, sample_rate=SR)) / 1000
        for _ in range(20)
    ]
    assert all(2 ** (-2.05 / 12) <= r <= 2 ** (2.05 / 12) for r in ratios)
    assert max(ratios) > 2 ** (0.5 / 12) and min(ratios) < 2 ** (-0.5 / 12)  # shifts both ways
