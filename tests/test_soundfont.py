"""SoundFont kits (.sf2, .sf3) as `data prepare` sources: tiny fonts written inside the test, every bad input."""

from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from drumdiff import audio, data
from drumdiff.cli import main
from drumdiff.data import soundfont as sfont
from drumdiff.errors import DrumdiffError

SR = 44100
SETTINGS = data.PrepareSettings(length=2048)


# --- a minimal SoundFont writer: RIFF sfbk with INFO, sdta (smpl) and the nine pdta tables ----------------


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _name(text: str) -> bytes:
    return text.encode("latin-1")[:19].ljust(20, b"\0")


def _gens(generators: dict[int, int | tuple[int, int]]) -> list[tuple[int, int]]:
    """Generators in the order the spec wants: key range, velocity range, ..., instrument / sample last."""
    order = sorted(generators, key=lambda g: {43: 0, 44: 1, 41: 99, 53: 99}.get(g, 2))
    out = []
    for oper in order:
        value = generators[oper]
        amount = value[0] | value[1] << 8 if isinstance(value, tuple) else value & 0xFFFF
        out.append((oper, amount))
    return out


def write_sf2(path, *, samples, instruments, presets, vorbis=False, copyright="CC0 test kit"):
    """Write a SoundFont. samples: [{name, audio: float mono, rate, root, type=1, link=0, correction=0}];
    instruments: [{name, zones: [{gen: value}]}] (first zone may be global); presets: [{name, bank, program,
    zones: [{gen: value}]}]."""
    smpl, shdr = bytearray(), []
    for s in samples:
        pcm = np.round(np.clip(s["audio"], -1, 1) * 32767).astype("<i2")
        if vorbis:
            buffer = io.BytesIO()
            sf.write(buffer, s["audio"].astype(np.float32), s["rate"], format="OGG", subtype="VORBIS")
            start = len(smpl)
            smpl += buffer.getvalue()
            end = len(smpl)
        else:
            start = len(smpl) // 2
            smpl += pcm.tobytes() + b"\0" * 92  # 46 zero samples after each, as the spec asks
            end = start + len(pcm)
        kind = s.get("type", 1) | (0x10 if vorbis else 0)
        shdr.append((_name(s["name"]), start, end, start, end, s["rate"], s["root"], s.get("correction", 0),
                     s.get("link", 0), kind))  # fmt: skip
    shdr.append((_name("EOS"), 0, 0, 0, 0, 0, 0, 0, 0, 0))

    def tables(items, with_header):
        headers, bags, gens = [], [], []
        for item in items:
            headers.append(with_header(item, len(bags)))
            for zone in item["zones"]:
                bags.append((len(gens), 0))
                gens.extend(_gens(zone))
        return headers, bags + [(len(gens), 0)], gens + [(0, 0)]

    inst, ibag, igen = tables(instruments, lambda i, bag: (_name(i["name"]), bag))
    inst.append((_name("EOI"), len(ibag) - 1))
    phdr, pbag, pgen = tables(
        presets, lambda p, bag: (_name(p["name"]), p["program"], p["bank"], bag, 0, 0, 0)
    )
    phdr.append((_name("EOP"), 0, 0, len(pbag) - 1, 0, 0, 0))
    pack = lambda fmt, rows: b"".join(struct.pack(fmt, *row) for row in rows)  # noqa: E731
    pdta = b"pdta" + b"".join(
        [
            _chunk(b"phdr", pack("<20sHHHIII", phdr)),
            _chunk(b"pbag", pack("<HH", pbag)),
            _chunk(b"pmod", bytes(10)),
            _chunk(b"pgen", pack("<HH", pgen)),
            _chunk(b"inst", pack("<20sH", inst)),
            _chunk(b"ibag", pack("<HH", ibag)),
            _chunk(b"imod", bytes(10)),
            _chunk(b"igen", pack("<HH", igen)),
            _chunk(b"shdr", pack("<20sIIIIIBbHH", shdr)),
        ]
    )
    info = b"INFO" + _chunk(b"ifil", struct.pack("<HH", 3 if vorbis else 2, 1)) + _chunk(b"INAM", b"Tiny\0")
    info += _chunk(b"ICOP", copyright.encode() + b"\0") + _chunk(b"IENG", b"Tester\0")
    body = b"sfbk" + _chunk(b"LIST", info) + _chunk(b"LIST", b"sdta" + _chunk(b"smpl", bytes(smpl)))
    body += _chunk(b"LIST", pdta)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_chunk(b"RIFF", body))
    return path


def hit(seed: int, frames: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, frames) * np.exp(-np.arange(frames) / (frames / 6)) * 0.8).astype(np.float32)


def tone(hz: float, frames: int = 6000) -> np.ndarray:
    return (0.8 * np.sin(2 * np.pi * hz * np.arange(frames) / SR)).astype(np.float32)


# Generator numbers (SoundFont 2.04): keyRange 43, velRange 44, attenuation 48, coarseTune 51, sampleID 53...
KEYS, VEL, ATTEN, COARSE, SAMPLE, ROOT, INSTRUMENT = 43, 44, 48, 51, 53, 58, 41


def tiny_kit(path, *, vorbis=False):
    """Bank 128 "Tiny Kit" (every case below) and a bank-0 piano, which is not a drum preset."""
    samples = [
        {"name": "k soft", "audio": hit(1) * 0.3, "rate": SR, "root": 36},  # 0
        {"name": "k hard", "audio": hit(2), "rate": SR, "root": 36},  # 1
        {"name": "sn L", "audio": hit(3), "rate": 22050, "root": 38, "type": 4, "link": 3},  # 2
        {"name": "sn R", "audio": hit(4), "rate": 22050, "root": 38, "type": 2, "link": 2},  # 3
        {"name": "s1", "audio": hit(5), "rate": SR, "root": 37},  # 4: nameless: GM note 37 decides
        {"name": "Hat Swish", "audio": hit(6), "rate": SR, "root": 48},  # 5: names win over GM (Hi-Mid Tom)
        {"name": "t1000", "audio": tone(1000), "rate": SR, "root": 60},  # 6: tuned +2 semitones below
        {"name": "rr a", "audio": hit(7), "rate": SR, "root": 56},  # 7
        {"name": "rr b", "audio": hit(8), "rate": SR, "root": 56},  # 8
        {"name": "x9", "audio": hit(9), "rate": SR, "root": 30},  # 9: note 30, no GM name, no name
        {"name": "piano", "audio": tone(440), "rate": SR, "root": 60},  # 10
    ]
    drums = {
        "name": "Tiny Set",
        "zones": [
            {ATTEN: 0},  # a global zone (no sampleID)
            {KEYS: (35, 36), VEL: (0, 63), SAMPLE: 0},  # velocity layers of one kick
            {KEYS: (35, 36), VEL: (64, 127), SAMPLE: 1},
            {KEYS: (38, 38), SAMPLE: 2},  # a linked stereo pair: one clip
            {KEYS: (38, 38), SAMPLE: 3},
            {KEYS: (37, 37), SAMPLE: 4},
            {KEYS: (48, 48), SAMPLE: 5},
            {KEYS: (50, 50), ROOT: 60, COARSE: 12, ATTEN: 60, SAMPLE: 6},  # (50-60)+12 = +2 st, -6 dB
            {KEYS: (56, 56), SAMPLE: 7},  # two samples on one note: alternatives, two clips
            {KEYS: (56, 56), SAMPLE: 8},
            {KEYS: (30, 30), SAMPLE: 9},
        ],
    }
    piano = {"name": "Piano", "zones": [{SAMPLE: 10}]}
    presets = [
        {"name": "Tiny Kit", "bank": 128, "program": 0, "zones": [{INSTRUMENT: 0}]},
        {"name": "Grand", "bank": 0, "program": 0, "zones": [{INSTRUMENT: 1}]},
    ]
    return write_sf2(path, samples=samples, instruments=[drums, piano], presets=presets, vorbis=vorbis)


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def by_note(items) -> dict[str, dict]:
    return {it["source"].split("#", 1)[1]: it for it in items}


def dominant_hz(clip) -> float:
    mono = clip.mean(dim=0).double().numpy()[:2048]
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono)), 1 << 16))
    return float(np.argmax(spectrum) * SR / (1 << 16))


def test_soundfont_kit_classes_layers_stereo_and_provenance(tmp_path):
    tiny_kit(tmp_path / "fonts" / "tiny.sf2")
    out = tmp_path / "out"
    licence = [(tmp_path / "fonts", "CC-BY-4.0 (from the test's table)")]
    report = data.prepare([tmp_path / "fonts"], out, classes="kits", settings=SETTINGS, licenses=licence,
                          progress=False)  # fmt: skip
    manifest = read_json(out / "manifest.json")
    items = by_note(manifest["items"])
    classes = {member: it["class"] for member, it in items.items()}
    assert classes == {
        "Tiny Kit/036 v000-063 k soft": "kick",
        "Tiny Kit/036 v064-127 k hard": "kick",
        "Tiny Kit/038 v000-127 sn L + sn R": "snare",
        "Tiny Kit/037 v000-127 s1": "percussion",  # GM 37 Side Stick: the class table puts it in percussion
        "Tiny Kit/048 v000-127 Hat Swish": "hihat",  # the kit's name beats GM's "Hi-Mid Tom"
        "Tiny Kit/050 v000-127 t1000": "percussion",  # GM 50 High Tom
        "Tiny Kit/056 v000-127 rr a": "percussion",  # GM 56 Cowbell
        "Tiny Kit/056 v000-127 rr b": "percussion",
    }
    kick = items["Tiny Kit/036 v000-063 k soft"]
    assert kick["group"] == "tiny/Tiny Kit" and kick["split"] == data.split_for_group("tiny/Tiny Kit")
    assert kick["source"] == "fonts/tiny.sf2#Tiny Kit/036 v000-063 k soft"
    provenance = kick["provenance"]
    assert provenance["preset"] == "128:000 Tiny Kit" and provenance["sf2_instrument"] == "Tiny Set"
    assert (provenance["note"], provenance["keys"], provenance["velocity"]) == (36, [35, 36], [0, 63])
    assert provenance["license"] == "CC-BY-4.0 (from the test's table)"
    assert provenance["stated_license"] == "CC0 test kit" and provenance["author"] == "Tester"
    assert provenance["instrument"] == "Bass Drum 1" and provenance["class_from"] == "GM note 36"
    swish = items["Tiny Kit/048 v000-127 Hat Swish"]["provenance"]
    assert (swish["instrument"], swish["class_from"], swish["gm_name"]) == ("Hat Swish", "name", "Hi-Mid Tom")
    stick = items["Tiny Kit/037 v000-127 s1"]["provenance"]
    assert (stick["instrument"], stick["class_from"]) == ("Side Stick", "GM note 37")
    snare = items["Tiny Kit/038 v000-127 sn L + sn R"]
    assert snare["original"] == {**snare["original"], "channels": 2, "sample_rate": 22050, "format": "SF2"}
    left, _ = audio.read(out / snare["path"])
    assert not np.allclose(left[0].numpy(), left[1].numpy())  # two different channels, not a copy
    reasons = {r["path"].split("#", 1)[1]: r for r in read_json(out / "rejected.json")["rejected"]}
    assert reasons["000:000 Grand"]["reason"] == "not a drum preset"
    assert reasons["Tiny Kit/030 v000-127 x9"]["reason"] == "no class"
    assert report.accepted == 8 and report.rejected == {"not a drum preset": 1, "no class": 1}
    again = data.prepare([tmp_path / "fonts"], out, classes="kits", settings=SETTINGS, licenses=licence,
                         progress=False)  # fmt: skip
    assert (again.decoded, again.reused) == (0, 8)
    # Any preset, with --soundfont-presets through the CLI: the piano comes in too (as GM note 60's bongo).
    code = main(["data", "prepare", str(tmp_path / "fonts"), "--out", str(tmp_path / "all"), "--classes", "kits",
                 "--soundfont-presets", "*", "--length", "2048", "--workers", "1", "--no-progress"])  # fmt: skip
    assert code == 0 and len(read_json(tmp_path / "all" / "manifest.json")["items"]) == 9


def test_tuning_and_attenuation_are_applied(tmp_path):
    tiny_kit(tmp_path / "fonts" / "tiny.sf2")
    raw = data.PrepareSettings(length=4096, normalize="none")
    data.prepare([tmp_path / "fonts"], tmp_path / "out", classes="kits", settings=raw, progress=False)
    items = by_note(read_json(tmp_path / "out" / "manifest.json")["items"])
    tuned = items["Tiny Kit/050 v000-127 t1000"]
    assert tuned["processing"]["tuned"].startswith("+2.00 semitones")
    assert tuned["processing"]["kit_gain_db"] == -6.0 and tuned["original"]["sample_rate"] == SR
    clip, _ = audio.read(tmp_path / "out" / tuned["path"])
    assert abs(dominant_hz(clip) - 1000 * 2 ** (2 / 12)) < 5  # 1122 Hz, not 1000
    assert abs(audio.peak_db(clip) - (20 * np.log10(0.8) - 6.0)) < 0.2  # the zone's 60 cB attenuation
    assert tuned["region"]["pitch_semitones"] == 2.0 and tuned["region"]["gain_db"] == -6.0


def test_soundfont3_ogg_samples_and_a_spawn_pool(tmp_path):
    tiny_kit(tmp_path / "fonts" / "tiny.sf3", vorbis=True)
    one = data.prepare(
        [tmp_path / "fonts"], tmp_path / "one", classes="kits", settings=SETTINGS, progress=False
    )
    two = data.prepare([tmp_path / "fonts"], tmp_path / "two", classes="kits", settings=SETTINGS, workers=2,
                       progress=False)  # fmt: skip
    assert one.accepted == two.accepted == 8
    items = [by_note(read_json(tmp_path / d / "manifest.json")["items"]) for d in ("one", "two")]
    assert {k: v["sha1"] for k, v in items[0].items()} == {k: v["sha1"] for k, v in items[1].items()}
    kick = items[0]["Tiny Kit/036 v064-127 k hard"]
    assert (kick["original"]["format"], kick["original"]["subtype"], kick["class"]) == (
        "SF3",
        "VORBIS",
        "kick",
    )
    assert items[0]["Tiny Kit/038 v000-127 sn L + sn R"]["original"]["channels"] == 2


def test_bad_soundfonts_are_one_rejection_each_and_the_run_goes_on(tmp_path):
    fonts = tmp_path / "fonts"
    good = tiny_kit(fonts / "good.sf2").read_bytes()
    (fonts / "truncated.sf2").write_bytes(good[: len(good) // 2])
    lying = bytearray(good)
    lying[4:8] = struct.pack("<I", len(good) * 3)  # the RIFF header claims three times the file
    (fonts / "lying.sf2").write_bytes(bytes(lying))
    chunk = bytearray(good)
    at = chunk.find(b"shdr")
    chunk[at + 4 : at + 8] = struct.pack("<I", 10_000)  # a table claims more bytes than its LIST holds
    (fonts / "chunk.sf2").write_bytes(bytes(chunk))
    (fonts / "text.sf2").write_text("not a soundfont")
    outside = bytearray(good)  # sample 1 ("k hard") ends far past the sample data
    at = outside.find(_name("k hard"))
    outside[at + 24 : at + 28] = struct.pack("<I", 10**8)
    (fonts / "outside.sf2").write_bytes(bytes(outside))
    ogg = bytearray(tiny_kit(tmp_path / "tmp" / "x.sf3", vorbis=True).read_bytes())
    at = ogg.find(b"OggS")
    ogg[at : at + 200] = bytes(200)  # the first sample's Ogg stream is damaged
    (fonts / "ogg.sf3").write_bytes(bytes(ogg))

    out = tmp_path / "out"
    data.prepare([fonts], out, classes="kits", settings=SETTINGS, progress=False)
    rejected = read_json(out / "rejected.json")["rejected"]
    whole = {r["path"]: r for r in rejected if r["reason"] == "bad kit file"}
    assert set(whole) == {f"fonts/{n}.sf2" for n in ("truncated", "lying", "chunk", "text")}
    assert "truncated or lying RIFF" in whole["fonts/lying.sf2"]["detail"]
    assert "claims" in whole["fonts/truncated.sf2"]["detail"]
    assert (
        "'shdr'" in whole["fonts/chunk.sf2"]["detail"] and "no RIFF sfbk" in whole["fonts/text.sf2"]["detail"]
    )
    [region] = [r for r in rejected if r["reason"] == "bad region"]
    assert (
        region["path"] == "fonts/outside.sf2#Tiny Kit/036 v064-127 k hard"
        and "sample data" in region["detail"]
    )
    [broken] = [r for r in rejected if r["path"].startswith("fonts/ogg.sf3#") and r["reason"] == "not audio"]
    assert broken["path"].endswith("k soft") and "Ogg Vorbis" in broken["detail"]
    sources = {it["source"].split("#")[0] for it in read_json(out / "manifest.json")["items"]}
    assert sources == {"fonts/good.sf2", "fonts/ogg.sf3"}  # the others still came in
    others = {r["reason"] for r in rejected if r["path"].startswith("fonts/outside.sf2#")}
    assert others == {"bad region", "duplicate", "no class", "not a drum preset"}  # its other zones: read


def test_preset_choice_and_other_modes(tmp_path, capsys):
    assert sfont.parse_presets("128:*") == ((128, None),)
    assert sfont.parse_presets("0:0, 128:25,*") == ((0, 0), (128, 25), (None, None))
    with pytest.raises(DrumdiffError, match="BANK:PROGRAM"):
        sfont.parse_presets("drums")
    regions = data.read_soundfont(tiny_kit(tmp_path / "k" / "tiny.sf2"), presets=((0, 0),))
    assert [r.member for r in regions if r.reject is None] == ["Grand/060 v000-127 piano"]
    out = tmp_path / "out"
    code = main(["data", "prepare", str(tmp_path / "k"), "--out", str(out), "--no-progress"])
    assert (
        code == 2 and "no file was accepted" in capsys.readouterr().err
    )  # --classes none does not read kits
    assert main(["data", "prepare", str(tmp_path / "k"), "--out", str(out), "--classes", "kits",
                 "--length", "2048", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert os.path.isfile(out / "manifest.json")
