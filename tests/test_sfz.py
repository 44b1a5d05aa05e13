"""SFZ kits, one-shots named by their files, test sources, licences and near-duplicates in `data prepare`."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from drumdiff import audio, data

SR = 44100
SETTINGS = data.PrepareSettings(length=2048)


def hit(seed: int, frames: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, frames) * np.exp(-np.arange(frames) / (frames / 6)) * 0.8).astype(np.float32)


def wav(path, samples, sr: int = SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sr, subtype="PCM_16")
    return path


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def members(out) -> dict[str, dict]:
    """The kit clips of a prepared folder by their name inside the kit file."""
    return {
        it["source"].split("#", 1)[1]: it
        for it in read_json(out / "manifest.json")["items"]
        if "#" in it["source"]
    }


def rejections(out) -> dict[str, dict]:
    return {r["path"].split("#", 1)[-1]: r for r in read_json(out / "rejected.json")["rejected"]}


KIT = """// a tiny drum kit
#define $KICK 36
<control> default_path=samples/ note_offset=0
<global> volume=-6 /* every region 6 dB down */
<group> group_label=Kick Drum
<region> key=$KICK hivel=63 sample=kick soft.wav
<region> key=$KICK lovel=64 sample=kick hard.wav
<group> seq_length=2
<region> key=d2 seq_position=1 sample=snr_a.wav
<region> key=d2 seq_position=2 sample=snr_b.wav
<group>
<region> lokey=42 hikey=42 pitch_keycenter=42 sample=hh closed.wav
<region> key=20 sample=Clap_01.wav
<region> key=21 sample=thing.wav
<region> key=50 pitch_keycenter=48 transpose=-2 tune=50 sample=tone.wav
<region> key=47 sample=gone.wav
<region> key=45 offset=999999 sample=tom.wav
<region> key=46 sample=*noise
#include "more.sfz"
"""


def make_kit(folder):
    folder.mkdir(parents=True)
    (folder / "kit.sfz").write_text(KIT, encoding="utf-8")
    (folder / "more.sfz").write_text("<region> key=49 sample=crash.wav\n", encoding="utf-8")
    for i, name in enumerate(("kick soft", "kick hard", "snr_a", "snr_b", "hh closed", "Clap_01", "thing", "tom",
                              "crash")):  # fmt: skip
        wav(folder / "samples" / f"{name}.wav", hit(10 + i) * (0.3 if name == "kick soft" else 1.0))
    tone = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(6000) / SR)
    wav(folder / "samples" / "tone.wav", tone.astype(np.float32))
    wav(folder / "loose" / "ride_01.wav", hit(30))  # not in the kit: named by its file
    return folder


def test_sfz_regions_classes_layers_round_robins_and_bad_regions(tmp_path):
    make_kit(tmp_path / "kits" / "tiny")
    out = tmp_path / "out"
    report = data.prepare([tmp_path / "kits"], out, classes="kits", settings=SETTINGS, progress=False)
    items = members(out)
    assert {m: it["class"] for m, it in items.items()} == {
        "036 v001-063 kick soft.wav": "kick",
        "036 v064-127 kick hard.wav": "kick",
        "038 v001-127 snr_a.wav": "snare",  # d2 = 38: GM Acoustic Snare ("snr" names no class)
        "038 v001-127 snr_b.wav": "snare",
        "042 v001-127 hh closed.wav": "hihat",
        "020 v001-127 Clap_01.wav": "snare",  # note 20 has no GM name: the sample name decides
        "050 v001-127 tone.wav": "percussion",
        "049 v001-127 crash.wav": "percussion",  # from the #include
    }
    loose = read_json(out / "manifest.json")["items"]
    [ride] = [it for it in loose if it["source"].endswith("ride_01.wav")]
    assert ride["class"] == "percussion" and ride["provenance"]["class_from"] == "file name"
    soft = items["036 v001-063 kick soft.wav"]
    assert soft["group"] == "kit" and soft["source"] == "kits/tiny/kit.sfz#036 v001-063 kick soft.wav"
    provenance = soft["provenance"]
    assert (provenance["note"], provenance["keys"], provenance["velocity"]) == (36, [36, 36], [1, 63])
    assert provenance["license"] == "unknown (not stated in the SFZ)"
    assert items["038 v001-127 snr_b.wav"]["provenance"]["seq_position"] == "2"
    bad = rejections(out)
    assert bad["021 v001-127 thing.wav"]["reason"] == "no class"
    assert bad["047 v001-127 gone.wav"]["reason"] == "missing"
    assert (
        bad["045 v001-127 tom.wav"]["reason"] == "bad region"
        and "999999" in bad["045 v001-127 tom.wav"]["detail"]
    )
    assert bad["046 v001-127 *noise"]["reason"] == "bad region"
    assert report.rejected == {"no class": 1, "missing": 1, "bad region": 2}
    assert (
        data.prepare([tmp_path / "kits"], out, classes="kits", settings=SETTINGS, progress=False).decoded == 0
    )


def test_sfz_tuning_and_volume_are_applied(tmp_path):
    make_kit(tmp_path / "kits" / "tiny")
    raw = data.PrepareSettings(length=4096, normalize="none")
    data.prepare([tmp_path / "kits"], tmp_path / "out", classes="kits", settings=raw, progress=False)
    tone = members(tmp_path / "out")["050 v001-127 tone.wav"]
    assert tone["region"]["pitch_semitones"] == 0.5  # (50 - 48) - 2 + 0.5
    assert tone["processing"]["kit_gain_db"] == -6.0  # <global> volume
    clip, _ = audio.read(tmp_path / "out" / tone["path"])
    spectrum = np.abs(np.fft.rfft(clip[0, :4096].double().numpy() * np.hanning(4096), 1 << 16))
    assert abs(np.argmax(spectrum) * SR / (1 << 16) - 1000 * 2 ** (0.5 / 12)) < 4
    assert abs(audio.peak_db(clip) - (20 * np.log10(0.8) - 6)) < 0.2


def test_an_include_loop_is_one_rejection_and_the_run_goes_on(tmp_path):
    make_kit(tmp_path / "kits" / "tiny")
    loop = tmp_path / "kits" / "loop"
    loop.mkdir()
    (loop / "a.sfz").write_text('<region> key=36 sample=kick.wav\n#include "b.sfz"\n')
    (loop / "b.sfz").write_text('#include "a.sfz"\n')  # b.sfz on its own loops too: a -> b -> a
    (loop / "c.sfz").write_text('#include "nowhere.sfz"\n')
    wav(loop / "kick.wav", hit(1))  # a broken kit lists it: taken as a loose one-shot
    out = tmp_path / "out"
    data.prepare([tmp_path / "kits"], out, classes="kits", settings=SETTINGS, progress=False)
    bad = {
        r["path"]: r for r in read_json(out / "rejected.json")["rejected"] if r["reason"] == "bad kit file"
    }
    assert set(bad) == {"kits/loop/a.sfz", "kits/loop/b.sfz", "kits/loop/c.sfz"}
    assert "#include loop: a.sfz -> b.sfz -> a.sfz" in bad["kits/loop/a.sfz"]["detail"]
    assert "nowhere.sfz not found" in bad["kits/loop/c.sfz"]["detail"]
    assert len(members(out)) == 8  # the good kit still came in
    assert any(it["source"] == "kits/loop/kick.wav" for it in read_json(out / "manifest.json")["items"])


def test_test_source_licences_and_near_duplicates_across_splits(tmp_path):
    train, held_out = tmp_path / "kits", tmp_path / "lmms"
    wav(train / "a" / "kick_1.wav", hit(1))
    wav(train / "a" / "snare_1.wav", hit(2))
    copy = np.concatenate([np.zeros(100, np.float32), hit(1)]) * 0.5  # the same hit: later, quieter, noisier
    copy += np.random.default_rng(0).normal(0, 1e-3, len(copy)).astype(np.float32)
    wav(held_out / "kick01.wav", copy)
    wav(held_out / "snare01.wav", hit(3))
    wav(held_out / "clav01.wav", hit(4))
    out = tmp_path / "out"
    licences = [(train, "GPL-2+"), (held_out, "GPL-2+ (LMMS)"), (held_out / "snare01.wav", "CC0")]

    def run():
        return data.prepare([train], out, classes="kits", test_sources=[held_out], licenses=licences,
                            settings=SETTINGS, progress=False)  # fmt: skip

    report = run()
    items = {it["source"]: it for it in read_json(out / "manifest.json")["items"]}
    assert {s: (it["class"], it["split"]) for s, it in items.items()} == {
        "kits/a/kick_1.wav": ("kick", "train"),
        "kits/a/snare_1.wav": ("snare", "train"),
        "lmms/snare01.wav": ("snare", "test"),
    }
    assert items["lmms/snare01.wav"]["provenance"]["license"] == "CC0"  # the longest path wins
    assert items["kits/a/kick_1.wav"]["provenance"]["license"] == "GPL-2+"
    bad = rejections(out)
    near = bad["lmms/kick01.wav"]
    assert near["reason"] == "near duplicate" and near["duplicate_of"] == "kits/a/kick_1.wav"
    assert near["correlation"] > 0.99 and bad["lmms/clav01.wav"]["reason"] == "no class"
    assert report.per_class_split["snare"] == {"train": 1, "val": 0, "test": 1} and "test" in report.summary()
    assert [len(data.PreparedDataset(out, split=s, progress=False)) for s in ("train", "val", "test")] == [
        2,
        0,
        1,
    ]
    again = run()  # a cached near-duplicate is not decoded again while its twin stays
    assert (again.decoded, again.rejected) == (0, {"near duplicate": 1, "no class": 1})
    (train / "a" / "kick_1.wav").unlink()  # the twin goes: the held-out copy comes in
    after = run()
    assert after.decoded == 1 and ("kick", "test") in {(it["class"], it["split"]) for it in
                                                      read_json(out / "manifest.json")["items"]}  # fmt: skip
    # Near-duplicates on one side of the split are both kept; --no-near-duplicates keeps every copy.
    wav(train / "a" / "kick_1.wav", hit(1))
    wav(
        train / "b" / "kick_2.wav",
        hit(1) * 0.7 + np.random.default_rng(1).normal(0, 1e-3, 3000).astype(np.float32),
    )
    same_side = run()
    assert same_side.rejected == {"near duplicate": 1, "no class": 1}
    assert rejections(out)["lmms/kick01.wav"]["duplicate_of"] == "kits/a/kick_1.wav"
    assert {"kits/a/kick_1.wav", "kits/b/kick_2.wav"} <= {
        it["source"] for it in read_json(out / "manifest.json")["items"]
    }
    off = data.prepare([train], tmp_path / "off", classes="kits", test_sources=[held_out], settings=SETTINGS,
                       near_duplicates=False, progress=False)  # fmt: skip
    assert off.rejected == {"no class": 1}
