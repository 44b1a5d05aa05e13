"""`drumdiff kit` and `drumdiff.generate_kit`: pads, seeded round robins, levels, and every kit format read
back by the project's own readers (SFZ, `data prepare --classes hydrogen`) and Hydrogen's drumkit.xsd."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import soundfile as sf
import torch

from drumdiff import audio as audio_io
from drumdiff.cli import main
from drumdiff.errors import DrumdiffError
from drumdiff.kits.pads import DEFAULT_PADS, SHORT_NAMES, parse_pads
from tests.conftest import IN_CI, require
from tests.helpers import locked_folder, tiny_model_file

CLASSES = ["kick", "snare", "hihat", "percussion"]
XSD = Path(
    "/usr/share/hydrogen/data/xsd/drumkit.xsd"
)  # Debian's hydrogen-data (scripts/setup.sh installs it)
QUICK = ["--steps", "2", "--no-progress", "--threads", "1"]
STEM = "drumdiff_kit"


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    return tiny_model_file(folder / "tiny.safetensors", num_classes=4, class_names=CLASSES)


@pytest.fixture(scope="module")
def kit(model_path, tmp_path_factory) -> Path:
    """The default pads with three round robins, through the real CLI."""
    folder = tmp_path_factory.mktemp("kits") / "kit"
    assert run("kit", folder, "--model", model_path, "--round-robins", 3, "--seed", 11, *QUICK) == 0
    return folder


def manifest(folder: Path) -> dict:
    return json.loads((folder / "kit.json").read_text())


def samples_by_pad(folder: Path) -> dict[int, list[str]]:
    return {p["note"]: [t["file"] for t in p["takes"]] for p in manifest(folder)["pads"]}


def hydrogen_schema():
    etree = require("lxml.etree")
    if not XSD.is_file():
        if IN_CI:
            pytest.fail(f"{XSD} is required in CI (Debian's hydrogen-data, installed by scripts/setup.sh)")
        pytest.skip(f"{XSD} not installed (apt-get install hydrogen-data)")
    return etree, etree.XMLSchema(etree.parse(str(XSD)))


# ---------------------------------------------------------------------------------------------- pads


def test_pad_table_names_notes_and_classes() -> None:
    from drumdiff.data.regions import GM_PERCUSSION
    from drumdiff.data.sources import DEFAULT_HYDROGEN_MAPPING, class_for_instrument

    defaults = parse_pads(None)
    assert [p.note for p in defaults] == [36, 38, 42, 46, 45, 47, 50, 37, 54, 56]
    assert [p.class_name for p in defaults] == ["kick", "snare", "hihat", "hihat"] + ["percussion"] * 6
    assert [p.name for p in defaults] == list(DEFAULT_PADS)
    for value in [*SHORT_NAMES, *GM_PERCUSSION]:  # every pad's title reads back as its class
        pad = parse_pads([value])[0]
        assert pad.class_name in CLASSES
        assert class_for_instrument(pad.title, DEFAULT_HYDROGEN_MAPPING) == pad.class_name
        assert class_for_instrument(pad.gm_name, DEFAULT_HYDROGEN_MAPPING) == pad.class_name, pad
    assert [p.note for p in parse_pads("kick, snare,42,tom-low")] == [36, 38, 42, 45]
    assert [(p.note, p.name) for p in parse_pads("Low Conga,mute-hi-conga")] == [
        (64, "low-conga"),
        (62, "mute-hi-conga"),
    ]
    assert parse_pads("46")[0].name == "hihat-open"


@pytest.mark.parametrize(
    ("pads", "message"),
    [
        ("kick,snair", r"unknown pad 'snair'; choose one of kick, .*tom-low.* note number from 35 to 87"),
        ("kick,36", "note 36, which 'kick' already plays"),
        ("20", "note 20 has no General MIDI drum name"),
        ("kick,,snare", "empty item"),
        ("", "no pads given"),
    ],
)
def test_bad_pads_are_named(pads: str, message: str) -> None:
    with pytest.raises(DrumdiffError, match=message):
        parse_pads(pads)


def test_cli_constants_match_the_library() -> None:
    from drumdiff.commands import kit as command
    from drumdiff.kits import make

    assert command.LOUDNESS_LUFS == make.DEFAULT_LOUDNESS_LUFS
    assert command.VARY_STRENGTH == make.DEFAULT_VARY_STRENGTH
    assert command.PEAK_DBFS == make.PEAK_DBFS


def test_kit_help_gives_every_default() -> None:
    from drumdiff.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices["kit"]
    flags = {o for a in parser._actions for o in a.option_strings}
    assert {"--model", "--steps", "--sampler", "--schedule", "--guidance", "--device", "--threads"} <= flags
    assert "--plot" in flags and "--no-plot" in flags
    assert not {"-n", "--out", "--format", "--sample-rate"} & flags
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help, action.option_strings


# ---------------------------------------------------------------------------------------------- the kit


def test_kit_pads_takes_and_levels(kit) -> None:
    data = manifest(kit)
    assert data["format"] == "drumdiff-kit" and data["seed"] == 11 and data["round_robins"] == 3
    assert [(p["note"], p["class"]) for p in data["pads"]] == [
        (p.note, p.class_name) for p in parse_pads(None)
    ]
    assert len(data["model"]["sha256"]) == 64 and data["sampling"]["steps"] == 2
    listed = set(data["files"]) | {"kit.json"}
    on_disk = {p.relative_to(kit).as_posix() for p in kit.rglob("*") if p.is_file()}
    assert on_disk == listed
    assert {f"{STEM}.sfz", "drumkit.xml", f"{STEM}.h2drumkit", f"{STEM}.dspreset"} <= listed
    target, ceiling = data["loudness_target_lufs"], data["peak_ceiling_dbfs"]
    for pad in data["pads"]:
        assert [t["take"] for t in pad["takes"]] == [1, 2, 3]
        assert [t["operation"] for t in pad["takes"]] == ["generate", "vary", "vary"]
        clips = []
        for take in pad["takes"]:
            info = sf.info(kit / take["file"])
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, 4096, "PCM_24")
            clip, rate = audio_io.read(kit / take["file"])
            assert audio_io.peak_db(clip) <= ceiling + 0.01 < 0
            assert audio_io.loudness_lufs(clip, rate) == pytest.approx(take["loudness_lufs"], abs=0.01)
            clips.append(clip)
        mean = 10 * torch.log10(torch.tensor([10 ** (t["loudness_lufs"] / 10) for t in pad["takes"]]).mean())
        loudest_peak = max(audio_io.peak_db(c) for c in clips)
        # at the target, or as close as the peak ceiling lets it come
        assert float(mean) == pytest.approx(target, abs=0.05) or loudest_peak == pytest.approx(
            ceiling, abs=0.01
        )


def test_plot_writes_the_kit_picture_inside_the_kit(model_path, kit, tmp_path, capsys) -> None:
    from PIL import Image

    assert not (kit / "kit.png").exists() and "kit.png" not in manifest(kit)["files"]  # off by default
    folder = tmp_path / "plotted"
    pads = ["--pads", "kick,snare,hihat-closed", "--round-robins", 3, "--seed", 4]
    assert run("kit", folder, "--model", model_path, *pads, "--plot", *QUICK) == 0
    assert f"{folder / 'kit.png'}\n" in capsys.readouterr().out
    assert "kit.png" in manifest(folder)["files"]
    with Image.open(folder / "kit.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 800 <= width <= 1200 and 3 * 150 <= height <= 3 * 250  # a row per pad, three takes across
    # the picture is one of the kit's files: --overwrite replaces it, and a kit without --plot has none
    assert run("kit", folder, "--model", model_path, "--pads", "kick", "--overwrite", *QUICK) == 0
    assert not (folder / "kit.png").exists() and "kit.png" not in manifest(folder)["files"]
    assert leftovers(tmp_path) == []


def test_every_sample_carries_its_provenance(kit) -> None:
    from drumdiff.tags import read_tags

    data = manifest(kit)
    for pad in data["pads"]:
        for take in pad["takes"]:
            found = read_tags(kit / take["file"])
            record = found["provenance"]
            assert record["model"]["sha256"] == data["model"]["sha256"]
            assert (record["pad"], record["note"], record["class_name"]) == (
                pad["name"],
                pad["note"],
                pad["class"],
            )
            assert (record["take"], record["operation"], record["seed"]) == (
                take["take"],
                take["operation"],
                take["seed"],
            )
            assert record["steps"] == data["sampling"]["steps"] and record["kit_seed"] == data["seed"]
            assert f"class {pad['class']}, seed {take['seed']}" in found["tags"]["comment"]


def test_round_robins_are_seeded_and_sound_like_one_drum(kit, model_path, tmp_path) -> None:
    again = tmp_path / "again"
    assert run("kit", again, "--model", model_path, "--round-robins", 3, "--seed", 11, *QUICK) == 0
    for name in manifest(kit)["files"] + ["kit.json"]:  # every file, bit for bit
        assert (again / name).read_bytes() == (kit / name).read_bytes(), name
    other = tmp_path / "other"
    assert run("kit", other, "--model", model_path, "--round-robins", 3, "--seed", 12, *QUICK) == 0
    first = "samples/36_kick_1.wav"
    assert (other / first).read_bytes() != (kit / first).read_bytes()

    def similarity(a: Path, b: Path) -> float:
        x, y = audio_io.read(a)[0].flatten(), audio_io.read(b)[0].flatten()
        return abs(float(torch.nn.functional.cosine_similarity(x, y, dim=0)))

    pads = samples_by_pad(kit)
    for note, takes in pads.items():
        alike = min(similarity(kit / takes[0], kit / t) for t in takes[1:])
        others = max(similarity(kit / takes[0], kit / ts[0]) for n, ts in pads.items() if n != note)
        assert alike > others, note


def test_sfz_reads_back_with_the_project_reader(kit) -> None:
    from drumdiff.data.sfz import read_sfz
    from drumdiff.data.sources import find_sources

    regions = read_sfz(kit / f"{STEM}.sfz")
    assert all(r.reject is None for r in regions)
    found = [(r.note, Path(r.region.file).relative_to(kit).as_posix(), int(r.provenance["seq_position"]))
             for r in regions]  # fmt: skip
    expected = [
        (note, file, i + 1) for note, files in samples_by_pad(kit).items() for i, file in enumerate(files)
    ]
    assert found == expected
    assert all(r.provenance["seq_length"] == "3" for r in regions)
    classes = {s.region.file: s.class_name for s in find_sources([kit / f"{STEM}.sfz"], classes="kits")}
    wanted = {str(kit / t["file"]): p["class"] for p in manifest(kit)["pads"] for t in p["takes"]}
    assert classes == wanted


def test_hydrogen_kit_reads_back_through_data_prepare(kit, tmp_path, capsys) -> None:
    out = tmp_path / "prepared"
    assert (
        run("data", "prepare", kit, "--classes", "hydrogen", "--out", out, "--workers", 1, "--no-progress")
        == 0
    )
    items = json.loads((out / "manifest.json").read_text())["items"]
    got = {
        item["source"].split("/", 1)[1]: (item["class"], item["provenance"]["instrument"]) for item in items
    }
    want = {t["file"]: (p["class"], p["title"]) for p in manifest(kit)["pads"] for t in p["takes"]}
    assert got == want


def test_drumkit_xml_validates_against_hydrogens_schema(kit) -> None:
    etree, schema = hydrogen_schema()
    document = etree.parse(str(kit / "drumkit.xml"))
    assert schema.validate(document), schema.error_log
    ns = {"h": "http://www.hydrogen-music.org/drumkit"}
    instruments = document.findall(".//h:instrument", ns)
    assert [int(i.findtext("h:midiOutNote", namespaces=ns)) for i in instruments] == [
        36,
        38,
        42,
        46,
        45,
        47,
        50,
        37,
        54,
        56,
    ]
    assert {i.findtext("h:sampleSelectionAlgo", namespaces=ns) for i in instruments} == {"ROUND_ROBIN"}
    assert [len(i.findall(".//h:layer", ns)) for i in instruments] == [3] * 10
    mute = {
        i.findtext("h:name", namespaces=ns): i.findtext("h:muteGroup", namespaces=ns) for i in instruments
    }
    assert mute["Closed Hi-Hat"] == mute["Open Hi-Hat"] == "0" and mute["Kick"] == "-1"


def test_h2drumkit_archive_holds_the_kit_as_hydrogen_lays_it_out(kit, tmp_path) -> None:
    from drumdiff.data.hydrogen import read_hydrogen_kit

    with tarfile.open(kit / f"{STEM}.h2drumkit", "r:gz") as archive:
        names = archive.getnames()
        archive.extractall(tmp_path, filter="data")
    files = [f for fs in samples_by_pad(kit).values() for f in fs]
    assert sorted(names) == sorted([f"{STEM}/drumkit.xml"] + [f"{STEM}/{Path(f).name}" for f in files])
    unpacked = tmp_path / STEM
    for file in files:
        assert (unpacked / Path(file).name).read_bytes() == (kit / file).read_bytes()
    listed = read_hydrogen_kit(unpacked / "drumkit.xml")
    assert [(s.path.name, s.instrument) for s in listed] == [
        (Path(t["file"]).name, p["title"]) for p in manifest(kit)["pads"] for t in p["takes"]
    ]
    etree, schema = hydrogen_schema()
    assert schema.validate(etree.parse(str(unpacked / "drumkit.xml"))), schema.error_log


def check_dspreset(folder: Path) -> None:
    root = ET.parse(folder / f"{STEM}.dspreset").getroot()
    assert root.tag == "DecentSampler"
    groups = root.findall("./groups/group")
    pads = samples_by_pad(folder)
    assert [int(g.find("sample").get("rootNote")) for g in groups] == list(pads)
    for group, (note, files) in zip(groups, pads.items(), strict=True):
        assert group.get("seqMode") == "round_robin" and group.get("seqLength") == "3"
        samples = group.findall("sample")
        assert [s.get("path") for s in samples] == files
        assert [s.get("seqPosition") for s in samples] == ["1", "2", "3"]
        assert {(s.get("loNote"), s.get("hiNote")) for s in samples} == {(str(note), str(note))}
    for sample in root.iter("sample"):
        path = sample.get("path")
        assert not os.path.isabs(path) and ".." not in path and (folder / path).is_file()


def test_dspreset_parses_and_references_only_its_own_files(kit) -> None:
    check_dspreset(kit)


def test_a_moved_kit_stays_valid(kit, tmp_path) -> None:
    from drumdiff.data.hydrogen import read_hydrogen_kit
    from drumdiff.data.sfz import read_sfz

    copy, moved = tmp_path / "copy", tmp_path / "elsewhere" / "renamed kit"
    shutil.copytree(kit, copy)
    moved.parent.mkdir()
    copy.rename(moved)
    for file in moved.iterdir():
        if file.suffix in (".sfz", ".xml", ".dspreset", ".json"):
            assert str(kit) not in file.read_text(), file  # nothing points back at the old place
    assert all(r.reject is None for r in read_sfz(moved / f"{STEM}.sfz"))
    assert all(s.path.is_file() and moved in s.path.parents for s in read_hydrogen_kit(moved / "drumkit.xml"))
    check_dspreset(moved)
    etree, schema = hydrogen_schema()
    assert schema.validate(etree.parse(str(moved / "drumkit.xml")))


# ---------------------------------------------------------------------------------------------- library


def test_library_kit_orders_toms_fades_and_writes_chosen_formats(model_path, tmp_path) -> None:
    import drumdiff
    from drumdiff.kits.takes import _centroid
    from drumdiff.pipeline import SamplingOptions

    model = drumdiff.load_model(model_path, device="cpu")
    kit = drumdiff.generate_kit(
        model, out_dir=tmp_path / "toms", pads=["tom-high", "tom-low", "tom-mid"], formats="sfz", seed=3,
        fade_ms=2.0, options=SamplingOptions(steps=2),
    )  # fmt: skip
    assert [p.pad.note for p in kit.pads] == [50, 45, 47]
    assert sorted(kit.files) == sorted(
        ["drumdiff_kit.sfz", "kit.json"] + [t.file for p in kit.pads for t in p.takes]
    )
    brightness = {
        p.pad.note: _centroid(audio_io.read(kit.folder / p.takes[0].file)[0], 44100) for p in kit.pads
    }
    assert brightness[45] <= brightness[47] <= brightness[50]  # the low tom is the darkest
    for pad in kit.pads:
        clip, _ = audio_io.read(kit.folder / pad.takes[0].file)
        assert clip[:, -1].abs().max() < 1e-6 < clip[:, -200].abs().max()  # faded to silence at the end


def test_library_kit_gates_its_takes_when_asked(model_path, tmp_path, monkeypatch) -> None:
    import drumdiff
    import drumdiff.kits.make as make
    from drumdiff.pipeline import SamplingOptions

    calls = []

    def gate(clips, sample_rate):  # stands in for drumdiff.postprocess.gate_tail: the wiring is under test
        calls.append(tuple(clips.shape))
        gated = clips.clone()
        gated[..., 1024:] = 0
        return gated

    monkeypatch.setattr(make, "gate_tail", gate)
    model = drumdiff.load_model(model_path, device="cpu")
    kits = {}
    for gated in (True, False):
        kits[gated] = drumdiff.generate_kit(
            model, out_dir=tmp_path / f"gate-{gated}", pads=["kick", "snare"], formats="sfz", seed=3,
            round_robins=2, gate=gated, options=SamplingOptions(steps=1),
        )  # fmt: skip
    assert calls == [(2, 2, 4096), (2, 2, 4096)]  # each pad's takes, only with gate=True
    assert manifest(kits[True].folder)["gate"] is True and manifest(kits[False].folder)["gate"] is False
    for pad in kits[True].pads:
        clip, _ = audio_io.read(kits[True].folder / pad.takes[0].file)
        assert clip[:, 1024:].abs().max() == 0 < clip[:, :1024].abs().max()


def test_an_unconditional_model_cannot_make_a_kit(tmp_path, capsys) -> None:
    plain = tiny_model_file(tmp_path / "plain.safetensors")
    assert run("kit", tmp_path / "kit", "--model", plain, *QUICK) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pad kick (note 36) needs class kick" in err
    assert not (tmp_path / "kit").exists()


# ---------------------------------------------------------------------------------------------- refusals


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pads", "kick,snair"], "unknown pad 'snair'"),
        (["--round-robins", "0"], "round robins must be a whole number from 1 to 16"),
        (["--round-robins", "1000"], "round robins must be a whole number from 1 to 16"),
        (["--loudness", "nan"], "loudness must be from -60 to 0 LUFS"),
        (["--vary-strength", "0"], r"vary strength must be in \(0, 1\]"),
        (["--formats", "sfz,akai"], "unknown kit format 'akai'"),
        (["--fade-ms", "1000"], "longer than a clip"),
        (["--seed", str(2**64)], "--seed must be a whole number"),
    ],
)
def test_bad_values_are_one_line_and_leave_nothing(model_path, tmp_path, capsys, args, message) -> None:
    assert run("kit", tmp_path / "a" / "kit", "--model", model_path, *args, *QUICK) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("drumdiff kit: error:"), err
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept(model_path, kit, tmp_path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert run("kit", mine, "--model", model_path, *QUICK) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert run("kit", mine, "--model", model_path, "--overwrite", *QUICK) == 2
    assert "only a drumdiff kit folder" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and leftovers(tmp_path) == []

    earlier = tmp_path / "earlier"
    shutil.copytree(kit, earlier)
    assert (
        run("kit", earlier, "--model", model_path, "--seed", 5, "--pads", "kick", "--overwrite", *QUICK) == 0
    )
    assert [p["name"] for p in manifest(earlier)["pads"]] == ["kick"]
    assert sorted(p.name for p in (earlier / "samples").iterdir()) == ["36_kick_1.wav"]
    (earlier / "samples" / "extra.wav").write_bytes(b"mine")
    assert run("kit", earlier, "--model", model_path, "--overwrite", *QUICK) == 2
    assert "extra.wav is not one of its files" in capsys.readouterr().err
    assert (earlier / "samples" / "extra.wav").read_bytes() == b"mine" and leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("kit", empty, "--model", model_path, "--pads", "snare", *QUICK) == 0  # an empty folder is fine
    assert (empty / "samples" / "38_snare_1.wav").is_file()


def test_an_unwritable_folder_is_one_line(model_path, tmp_path, monkeypatch, capsys) -> None:
    with locked_folder(tmp_path / "locked", monkeypatch) as locked:
        assert run("kit", locked / "kit", "--model", model_path, *QUICK) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "locked is not writable" in err
    assert list(locked.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing(model_path, tmp_path, monkeypatch, capsys) -> None:
    from drumdiff.errors import AudioError
    from drumdiff.kits import make

    calls = []
    real = make._write_sample

    def fail_on_fifth(path, clip, rate, record):
        calls.append(path)
        if len(calls) == 5:
            raise AudioError(f"cannot write {path}: the disk is full")
        return real(path, clip, rate, record)

    monkeypatch.setattr(make, "_write_sample", fail_on_fifth)
    target = tmp_path / "new" / "deeper" / "kit"
    assert run("kit", target, "--model", model_path, *QUICK) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the kit, its hidden staging folder, nor the new parents


def test_originality_index_records_nearest_clips_and_redraws_a_copied_pad(
    model_path, tmp_path, capsys
) -> None:
    from drumdiff.evaluation.originality import index_from_clips, index_path_for, save_index
    from drumdiff.files import stable_seed
    from drumdiff.pipeline import load_model

    model = tmp_path / "m" / "tiny.safetensors"
    model.parent.mkdir()
    shutil.copy(model_path, model)
    pipeline = load_model(model, device="cpu")
    torch.set_num_threads(1)
    kick = pipeline.generate(
        n=1, seed=stable_seed("kit", 11, 36), class_name="kick", steps=2
    )  # take 1 of kick
    ids = [{"path": "kick/copied.flac", "group": "train-kit", "class": "kick"}]
    save_index(index_path_for(model), index_from_clips(kick, pipeline.sample_rate, ids=ids))

    args = ["kit", "--model", model, "--pads", "kick,snare", "--round-robins", 2, "--seed", 11, *QUICK]
    assert run(*args[:1], tmp_path / "plain", *args[1:]) == 0
    plain = manifest(tmp_path / "plain")
    takes = {p["name"]: p["takes"] for p in plain["pads"]}
    assert takes["kick"][0]["nearest_training_clip"]["similarity"] > 0.999  # the copy, found and not re-drawn
    assert takes["kick"][0]["nearest_training_clip"]["clip"] == "kick/copied.flac"
    assert all(t["nearest_training_clip"] is not None for p in takes.values() for t in p)

    # a random-weight model's draws all sound alike (similarity about 0.99-0.999): 0.999 tells the copy apart
    assert run(*args[:1], tmp_path / "fresh", *args[1:], "--max-similarity", 0.999) == 0
    fresh = {p["name"]: p["takes"] for p in manifest(tmp_path / "fresh")["pads"]}
    first = fresh["kick"][0]
    assert (
        first["redrawn_from_seeds"] == [takes["kick"][0]["seed"]]
        and first["seed"] != takes["kick"][0]["seed"]
    )
    assert first["nearest_training_clip"]["similarity"] <= 0.999
    assert (
        fresh["snare"][0]["redrawn_from_seeds"] == []
        and fresh["snare"][0]["seed"] == takes["snare"][0]["seed"]
    )
    assert run(*args[:1], tmp_path / "again", *args[1:], "--max-similarity", 0.999) == 0
    again = {p["name"]: p["takes"] for p in manifest(tmp_path / "again")["pads"]}
    assert again["kick"][0]["seed"] == first["seed"]  # deterministic

    capsys.readouterr()
    bare = tmp_path / "bare.safetensors"
    shutil.copy(model_path, bare)
    assert run("kit", tmp_path / "none", "--model", bare, "--max-similarity", 0.99, *QUICK) == 2
    assert "--max-similarity needs the originality index" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
