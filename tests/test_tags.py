"""Provenance inside the files: RIFF INFO + bext + iXML in WAV, Vorbis comments in FLAC, and `drumdiff info`."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from drumdiff import __version__, audio
from drumdiff.cli import main
from drumdiff.errors import AudioError
from drumdiff.files import file_digest
from drumdiff.tags import TAG_KEYS, provenance_tags, read_tags, write_tags
from tests.conftest import IN_CI
from tests.helpers import drum, tiny_model_file

SR = 44100
RECORD = {
    "operation": "generate",
    "model": {"path": "/home/someone/models/tiny.safetensors", "sha256": "ab" * 32},
    "class_name": "kick",
    "sampler": "ddim",
    "schedule": "log-snr",
    "steps": 20,
    "guidance": 2.0,
    "n": 4,
    "batch_size": 4,
    "device": "cpu",
    "drumdiff_version": "0.1.0",
    "request_seed": 12,
    "index": 0,
    "seed": 12,
    "timing": {"seconds_per_clip": 0.1, "unix_time": 1700000000.0},
}
TAGS = {**provenance_tags(RECORD, stem="kick_seed12_000"), "date": "2023-11-14T22:13:20Z"}
COMMENT = "drumdiff 0.1.0 generate: class kick, seed 12, ddim 20 steps, guidance 2, model sha256 " + "ab" * 32
SUFFIX = {"wav24": ".wav", "wav16": ".wav", "float32": ".wav", "flac": ".flac"}


def riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(id, payload offset, size) of every chunk, walked independently of drumdiff.tags; checks alignment."""
    assert data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"
    if data[:4] == b"RIFF":
        assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    chunks, pos = [], 12
    while pos < len(data):
        assert pos % 2 == 0, f"chunk at odd offset {pos}"
        chunk_id, size = struct.unpack("<4sI", data[pos : pos + 8])
        if chunk_id == b"data" and size == 0xFFFFFFFF:  # RF64: the size is in ds64
            size = struct.unpack("<Q", data[28:36])[0]
        chunks.append((chunk_id, pos + 8, size))
        pos += 8 + size + (size & 1)
    assert pos == len(data), "the last chunk runs past the end or its pad byte is missing"
    return chunks


def data_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    (_, start, size) = next(c for c in riff_chunks(data) if c[0] == b"data")
    return data[start : start + size]


def flac_frames(data: bytes) -> bytes:
    """The audio frames of a FLAC file: what follows the metadata block flagged last."""
    assert data[:4] == b"fLaC"
    pos, last = 4, False
    while not last:
        last, size = bool(data[pos] & 0x80), int.from_bytes(data[pos + 1 : pos + 4], "big")
        pos += 4 + size
    return data[pos:]


def require_soxi() -> str:
    """Debian's soxi (scripts/setup.sh installs sox): skipped locally when missing, a failure in CI."""
    found = shutil.which("soxi")
    if found is None:
        if IN_CI:
            pytest.fail("soxi (Debian package sox) is required in CI; scripts/setup.sh installs it")
        pytest.skip("soxi not installed (apt-get install sox)")
    return found


def soxi(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_soxi(), *map(str, args)], capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------------------------- the tags


def test_provenance_tags_of_a_record() -> None:
    tags = provenance_tags(RECORD, stem="kick_seed12_000")
    assert set(tags) == set(TAG_KEYS) - {"date"}  # no clock reading: the same request writes the same bytes
    assert tags["comment"] == COMMENT and tags["software"] == "drumdiff 0.1.0"
    assert tags["title"] == "kick_seed12_000"
    embedded = json.loads(tags["provenance"])
    assert embedded["model"] == {"name": "tiny.safetensors", "sha256": "ab" * 32}  # no folders of the maker
    assert {"seed": 12, "sampler": "ddim", "steps": 20, "guidance": 2.0}.items() <= embedded.items()
    assert not {"timing", "device", "n", "batch_size"} & set(embedded)
    assert provenance_tags({**RECORD, "file": "x-1.wav"})["title"] == "x-1"
    assert provenance_tags(RECORD, date="2024-01-02T03:04:05Z")["date"] == "2024-01-02T03:04:05Z"
    bare = provenance_tags({"operation": "interpolate", "class_name": None, "steps": 100})
    assert bare["comment"].endswith("interpolate: unconditional, 100 steps")
    vary = json.loads(provenance_tags({**RECORD, "input": "/private/my kick.wav"})["provenance"])
    assert vary["input"] == "my kick.wav"


@pytest.mark.parametrize("format", ["wav24", "wav16", "float32", "flac"])
def test_round_trip_keeps_the_samples_bit_for_bit(tmp_path, format) -> None:
    clip = drum(4097)  # odd length: odd data chunks in 24-bit
    plain = audio.write(tmp_path / f"plain{SUFFIX[format]}", clip, SR, format=format)
    tagged = audio.write(tmp_path / f"tagged{SUFFIX[format]}", clip, SR, format=format, tags=TAGS)
    found = read_tags(tagged)
    assert found["tags"] == TAGS
    assert found["provenance"] == json.loads(TAGS["provenance"])
    assert read_tags(plain)["tags"] == {} and read_tags(plain)["provenance"] == {}
    a, b = sf.info(plain), sf.info(tagged)
    assert (a.frames, a.channels, a.samplerate, a.subtype) == (b.frames, b.channels, b.samplerate, b.subtype)
    dtype = "float32" if format == "float32" else "int32"
    assert np.array_equal(sf.read(plain, dtype=dtype)[0], sf.read(tagged, dtype=dtype)[0])
    if format == "flac":  # the frames are copied, not re-encoded
        assert flac_frames(tagged.read_bytes()) == flac_frames(plain.read_bytes())
        assert found["vendor"].startswith("reference libFLAC")  # libsndfile's encoder string is kept
        assert found["comments"]["COMMENT"] == found["comments"]["DESCRIPTION"] == [COMMENT]
    else:
        assert data_bytes(plain) == data_bytes(tagged)
        ids = [c[0] for c in riff_chunks(tagged.read_bytes())]
        assert ids[ids.index(b"data") - 1 : ids.index(b"data") + 3] == [b"bext", b"data", b"LIST", b"iXML"]
        assert found["info"] == {
            "INAM": TAGS["title"],
            "ICMT": COMMENT,
            "ISFT": "drumdiff 0.1.0",
            "ICRD": TAGS["date"],
        }
        bext = found["bext"]
        assert (bext["description"], bext["originator"], bext["version"]) == (COMMENT, "drumdiff", 1)
        assert (bext["origination_date"], bext["origination_time"]) == ("2023-11-14", "22:13:20")
        ixml = ET.fromstring(found["ixml"])
        assert ixml.findtext("NOTE") == COMMENT and ixml.findtext("DRUMDIFF/MODEL_SHA256") == "ab" * 32
        assert ixml.findtext("DRUMDIFF/SEED") == "12" and ixml.findtext("DRUMDIFF/SAMPLER") == "ddim"


def test_a_libsndfile_list_chunk_is_replaced_not_duplicated(tmp_path) -> None:
    path = tmp_path / "strings.wav"
    with sf.SoundFile(path, "w", SR, 2, format="WAV", subtype="PCM_24") as f:
        f.title, f.comment, f.artist = "old title", "old comment", "someone"
        f.write(drum(1001).numpy().T)
    assert [c[0] for c in riff_chunks(path.read_bytes())].count(b"LIST") == 1
    write_tags(path, TAGS)
    once = path.read_bytes()
    ids = [c[0] for c in riff_chunks(once)]
    assert ids.count(b"LIST") == 1 and ids.count(b"bext") == 1 and ids.count(b"iXML") == 1
    info = read_tags(path)["info"]
    assert info["INAM"] == TAGS["title"] and info["ICMT"] == COMMENT and info["IART"] == "someone"
    write_tags(path, TAGS)  # tagging again changes nothing
    assert path.read_bytes() == once
    write_tags(path, {"comment": "new"})  # the other keys stay, in every chunk
    again = read_tags(path)
    assert again["tags"] == {**TAGS, "comment": "new"}
    assert again["bext"]["description"] == "new" and again["bext"]["origination_date"] == "2023-11-14"
    assert again["provenance"] == json.loads(TAGS["provenance"])


def test_odd_sized_chunks_are_padded(tmp_path) -> None:
    """An odd data chunk (24-bit mono, odd frames), an odd foreign chunk and odd tag texts stay aligned."""
    path = audio.write(tmp_path / "odd.wav", drum(1001)[:1], SR, format="wav24")
    data = path.read_bytes()
    (fmt_id, fmt_start, fmt_size), (data_id, data_start, size) = riff_chunks(data)
    assert (fmt_id, data_id, size % 2) == (b"fmt ", b"data", 1)
    junk = b"abcde"  # 5 bytes: a pad byte follows
    body = (
        data[12 : fmt_start + fmt_size]
        + b"junk"
        + struct.pack("<I", len(junk))
        + junk
        + b"\0"
        + data[data_start - 8 :]
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    samples = sf.read(path, dtype="int32")[0]
    write_tags(path, {"title": "odd", "comment": "odd length!"})  # INAM 4 bytes, ICMT 12, bext 602
    chunks = riff_chunks(path.read_bytes())  # asserts every chunk starts at an even offset
    assert [c[0] for c in chunks] == [b"fmt ", b"junk", b"bext", b"data", b"LIST", b"iXML"]
    tagged = path.read_bytes()
    assert tagged[chunks[1][1] : chunks[1][1] + 6] == junk + b"\0"
    assert np.array_equal(sf.read(path, dtype="int32")[0], samples)
    assert read_tags(path)["tags"]["comment"] == "odd length!"


@pytest.mark.parametrize("container", ["RF64", "WAVEX"])
def test_rf64_and_extensible_headers(tmp_path, container) -> None:
    path = tmp_path / "big.wav"
    sf.write(path, drum(2001).numpy().T, SR, format=container, subtype="PCM_24")
    before = sf.read(path, dtype="int32")[0]
    write_tags(path, TAGS)
    data = path.read_bytes()
    if container == "RF64":
        assert data[:4] == b"RF64" and data[12:16] == b"ds64"
        assert struct.unpack("<Q", data[20:28])[0] == len(data) - 8  # the 64-bit RIFF size
    riff_chunks(data)
    assert sf.info(path).format == container
    assert np.array_equal(sf.read(path, dtype="int32")[0], before)
    assert read_tags(path)["tags"] == TAGS


def test_text_is_escaped_and_kept(tmp_path) -> None:
    name = 'Kick & <Snare> "Drüm"\x01'
    tags = provenance_tags({**RECORD, "class_name": name}, stem="x")
    path = audio.write(tmp_path / "a.wav", drum(), SR, tags=tags)
    found = read_tags(path)
    assert found["provenance"]["class_name"] == name  # through INFO/iXML JSON
    assert ET.fromstring(found["ixml"]).findtext("DRUMDIFF/CLASS_NAME") == 'Kick & <Snare> "Drüm"\ufffd'
    assert found["info"]["ICMT"] == tags["comment"]  # UTF-8 in INFO
    assert "Dr?m" in found["bext"]["description"]  # bext is ASCII
    long = audio.write(tmp_path / "b.wav", drum(), SR, tags={"comment": "x" * 300})
    description = read_tags(long)["bext"]["description"]
    assert len(description) == 256 and description.endswith("...")
    assert read_tags(long)["tags"]["comment"] == "x" * 300


def test_bad_tags_are_refused_before_writing(tmp_path) -> None:
    with pytest.raises(AudioError, match="unknown tag 'artist'"):
        audio.write(tmp_path / "a.wav", drum(), SR, tags={"artist": "me"})
    with pytest.raises(AudioError, match="without NUL"):
        audio.write(tmp_path / "a.wav", drum(), SR, tags={"comment": "a\0b"})
    assert list(tmp_path.iterdir()) == []


def test_read_tags_names_the_file_of_bad_input(tmp_path) -> None:
    good = audio.write(tmp_path / "good.wav", drum(8000), SR, tags=TAGS).read_bytes()
    flac = audio.write(tmp_path / "good.flac", drum(8000), SR, format="flac", tags=TAGS).read_bytes()
    (tmp_path / "text.wav").write_text("not audio at all\n" * 20)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "cut.wav").write_bytes(good[: len(good) // 2])
    (tmp_path / "header.wav").write_bytes(good[:30])
    (tmp_path / "cut.flac").write_bytes(flac[:60])
    (tmp_path / "folder.wav").mkdir()
    for name, reason in [
        ("missing.wav", "file not found"),
        ("text.wav", "not an audio file"),
        ("empty.wav", "empty file"),
        ("cut.wav", "truncated WAV file"),
        ("header.wav", "truncated WAV file"),
        ("cut.flac", "truncated FLAC file"),
        ("folder.wav", "is a folder"),
    ]:
        with pytest.raises(AudioError, match=reason) as caught:
            read_tags(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
        with pytest.raises(AudioError):
            write_tags(tmp_path / name, TAGS)
    ogg = tmp_path / "a.ogg"
    sf.write(ogg, drum().numpy().T, SR, format="OGG")
    assert read_tags(ogg) == {"format": "OGG", "tags": {}, "provenance": {}}


def test_damaged_files_give_audio_errors_only(tmp_path) -> None:
    """Every cut and some flipped header bytes of a tagged WAV and FLAC: tags or an AudioError, nothing else."""
    rng = np.random.default_rng(0)
    for format, suffix in (("wav24", ".wav"), ("flac", ".flac")):
        data = audio.write(tmp_path / f"a{suffix}", drum(2000), SR, format=format, tags=TAGS).read_bytes()
        damaged = [data[:cut] for cut in range(1, len(data), 41)]
        for _ in range(200):
            flipped = bytearray(data)
            flipped[rng.integers(0, 120)] = rng.integers(0, 256)
            damaged.append(bytes(flipped))
        for i, content in enumerate(damaged):
            path = tmp_path / f"damaged{i}{suffix}"
            path.write_bytes(content)
            for action in (read_tags, lambda p: write_tags(p, TAGS)):
                try:
                    action(path)
                except AudioError as error:
                    assert str(path) in str(error)


# --------------------------------------------------------------------------------------------- sox


def test_soxi_shows_the_flac_comment_and_reads_the_tagged_wav(tmp_path) -> None:
    require_soxi()
    flac = audio.write(tmp_path / "a.flac", drum(), SR, format="flac", tags=TAGS)
    shown = soxi("-a", flac)
    assert shown.returncode == 0 and f"COMMENT={COMMENT}" in shown.stdout.splitlines()
    assert f"DRUMDIFF_PROVENANCE={TAGS['provenance']}" in shown.stdout.splitlines()
    # sox 14.4 parses the LIST/INFO of a WAV (only after the data chunk, where it is put) but prints none
    # of it, not even a comment sox itself was given: check that sox reads the file and finds the chunk.
    wav = audio.write(tmp_path / "a.wav", drum(4097)[:1], SR, format="wav24", tags=TAGS)
    assert soxi("-s", wav).stdout.strip() == "4097" and soxi("-r", wav).stdout.strip() == str(SR)
    debug = subprocess.run(
        [shutil.which("sox") or "sox", "-V4", str(wav), "-n"], capture_output=True, text=True, timeout=60
    )
    assert debug.returncode == 0 and "FAIL" not in debug.stderr
    assert "Chunk ISFT" in debug.stderr and "Chunk ICRD" in debug.stderr


# --------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """A WAV and a FLAC made by the real `drumdiff generate` with a tiny model."""
    root = tmp_path_factory.mktemp("gen")
    model = tiny_model_file(root / "tiny.safetensors", num_classes=1, class_names=["kick"])
    common = ["--model", model, "-n", 1, "--steps", 2, "--sampler", "ddim", "--guidance", 1.5]
    for fmt in ("wav24", "flac"):
        args = ["generate", "kick", *common, "--seed", 7, "--format", fmt, "--out", root / fmt]
        assert main([str(a) for a in (*args, "--no-progress")]) == 0
    return {
        "model": model,
        "wav": root / "wav24" / "kick_seed7_000.wav",
        "flac": root / "flac" / "kick_seed7_000.flac",
    }


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_info_shows_the_embedded_provenance_of_a_generated_clip(generated, kind, capsys) -> None:
    path, sha = generated[kind], file_digest(generated["model"])
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    embedded = text.split("embedded provenance:")[1].split("sidecar")[0]
    for line in (
        f"model.sha256: {sha}",
        "model.name: tiny.safetensors",
        "class_name: kick",
        "seed: 7",
        "sampler: ddim",
        "steps: 2",
        "guidance: 1.5",
        "operation: generate",
    ):
        assert f"    {line}\n" in embedded, line
    comment = (
        f"drumdiff {__version__} generate: class kick, seed 7, ddim 2 steps, guidance 1.5, model sha256 {sha}"
    )
    assert f"  comment: {comment}\n" in text
    assert f"sidecar {path.with_suffix('.json')}:" in text and "    timing.unix_time:" in text
    assert f"audio: {'WAV PCM_24' if kind == 'wav' else 'FLAC PCM_24'}, 44100 Hz, 2 channels" in text

    assert main(["info", "--json", str(path)]) == 0
    item = json.loads(capsys.readouterr().out)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert item["sidecar"] == sidecar and item["provenance"]["model"]["sha256"] == sidecar["model"]["sha256"]
    for key in ("class_name", "seed", "sampler", "steps", "guidance", "schedule", "index"):
        assert item["provenance"][key] == sidecar[key], key
    assert item["tags"]["title"] == "kick_seed7_000" and item["frames"] == sf.info(path).frames
    if kind == "flac":
        assert soxi("-a", path).stdout.count("sha256 " + sha) == 2  # COMMENT and DESCRIPTION


def test_info_of_several_files_and_a_clip_made_twice(generated, tmp_path, capsys) -> None:
    """JSON lines for several files; the same request again writes the same bytes (no clock in the tags)."""
    out = tmp_path / "again"
    args = ["generate", "kick", "--model", generated["model"], "-n", 1, "--steps", 2, "--sampler", "ddim"]
    for _ in range(2):
        assert (
            main([str(a) for a in (*args, "--guidance", 1.5, "--seed", 7, "--out", out, "--no-progress")])
            == 0
        )
    first, second = out / "kick_seed7_000.wav", out / "kick_seed7_000-1.wav"
    assert first.read_bytes() == second.read_bytes() == generated["wav"].read_bytes()
    capsys.readouterr()
    assert main(["info", "--json", str(first), str(generated["flac"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["format"] for line in lines] == ["WAV", "FLAC"]


def test_info_bad_input_is_one_line_and_exit_2(generated, tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    data = generated["wav"].read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    for name, reason in [
        ("missing.wav", "file not found"),
        ("notes.txt", "not an audio file"),
        ("cut.wav", "truncated WAV file"),
    ]:
        assert main(["info", str(generated["wav"]), str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # every file is read before anything is printed
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("drumdiff info: error: ") and reason in lines[0]
        assert str(tmp_path / name) in lines[0]


def test_info_does_not_import_torch(generated) -> None:
    script = (
        "import sys; from drumdiff.cli import main; code = main(['info', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(generated["flac"])], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "class_name: kick" in done.stdout


def test_info_into_a_closed_pipe_is_no_error(generated) -> None:
    """`drumdiff info FILE | head -1`: the reader leaves early; no error line, no traceback."""
    info = subprocess.Popen(
        [sys.executable, "-m", "drumdiff", "info", *[str(generated["wav"])] * 200],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert info.stdout is not None and info.stdout.readline()
    info.stdout.close()  # the reader has gone
    _, err = info.communicate(timeout=120)
    assert info.returncode == 0 and err == b"", err.decode()
