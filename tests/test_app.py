"""`drumdiff app`: the parts without Gradio, the page's construction, and one browser session against the real
command (Playwright driving Debian's chromium) that generates, downloads, keeps, varies, uploads a bad file
and clicks the map, while checking that no request leaves this machine.

Set DRUMDIFF_SCREENSHOT=docs/images/app.png to refresh the picture in the docs (it is always written to
tmp_path too).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from drumdiff.app.session import Library, Workspace, new_clip, read_upload, zip_clips
from drumdiff.app.soundmap import draw_map, nearest, project_2d
from drumdiff.errors import DrumdiffError
from drumdiff.pipeline import SamplingOptions, load_model
from tests.conftest import IN_CI, require
from tests.helpers import TEST_LENGTH, drum, tiny_model_file

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ["kick", "snare", "hihat", "percussion"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_file(
        tmp_path_factory.mktemp("model") / "tiny.safetensors", num_classes=4, class_names=CLASSES
    )


# ---------------------------------------------------------------------------------------------- no Gradio


def test_workspace_gives_fresh_private_folders_prunes_and_cleans_up(tmp_path):
    workspace = Workspace(tmp_path, max_age_s=60)
    a, b = workspace.new_request("generate"), workspace.new_request("generate")
    assert a != b and a.is_dir() and b.is_dir()
    assert workspace.root.stat().st_mode & 0o077 == 0  # nobody else can read it
    old = time.time() - 120
    os.utime(a, (old, old))
    assert workspace.prune() == [a] and not a.exists() and b.exists()
    workspace.cleanup()
    assert not workspace.root.exists()


def test_read_upload_names_what_is_wrong(tmp_path, model_path):
    config = load_model(model_path, device="cpu").config
    with pytest.raises(DrumdiffError, match="no sound given"):
        read_upload(None, config)
    text = tmp_path / "notes.wav"
    text.write_text("not a sound at all")
    with pytest.raises(DrumdiffError, match=r"^notes\.wav is not a sound drumdiff can read") as error:
        read_upload(text, config)
    assert str(tmp_path) not in str(error.value)  # the server's temporary path is not shown
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros((44100 * 3, 2), dtype=np.float32), 44100)
    with pytest.raises(DrumdiffError, match=r"long\.wav is too long: over 2 s"):
        read_upload(long, config, max_seconds=2)
    with pytest.raises(DrumdiffError, match=r"long\.wav is too large: 0\.5 MB \(the limit is 0\.25 MB\)"):
        read_upload(long, config, max_mb=0.25)
    mono = tmp_path / "mono48k.wav"
    sf.write(mono, drum(4800, sample_rate=48000)[0].numpy(), 48000)
    clip, done = read_upload(mono, config)
    assert clip.shape == (2, TEST_LENGTH) and "resampled 48000 -> 44100 Hz" in done


def test_library_keeps_uploads_and_kept_clips_and_caps_generated(monkeypatch):
    monkeypatch.setattr("drumdiff.app.session.MAX_GENERATED", 3)
    library = Library()
    audio = torch.zeros(2, 16)
    upload = new_clip(audio, sample_rate=44100, label="mine", origin="uploaded")
    first = new_clip(audio, sample_rate=44100, label="g0", origin="generated")
    library.add([upload, first])
    library.keep(first)
    library.add([new_clip(audio, sample_rate=44100, label=f"g{i}", origin="generated") for i in range(1, 6)])
    assert [c.label for c in library.clips] == ["mine", "g0", "g3", "g4", "g5"]
    assert library.kept == [first] and library.choices()[0][1] == library.clips[-1].id


def test_map_points_are_where_they_are_drawn(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    clips = []
    for i in range(6):
        clip = new_clip(torch.zeros(2, 8), sample_rate=44100, label=f"c{i}", origin="generated")
        clip.embedding, clip.heard_as = rng.normal(size=16).astype(np.float32), CLASSES[i % 4]
        clips.append(clip)
    points = draw_map(tmp_path / "map.png", clips, class_names=CLASSES, selected=clips[0].id)
    image = np.asarray(Image.open(tmp_path / "map.png").convert("RGB")).astype(int)
    for point in points:  # the centre of each marker is coloured, not the white background
        assert image[round(point.y), round(point.x)].sum() < 3 * 250
    assert nearest(points, points[2].x + 3, points[2].y - 3) == clips[2].id
    assert nearest(points, -100, -100) is None
    assert project_2d(np.ones((1, 4))).tolist() == [[0.0, 0.0]]
    assert draw_map(tmp_path / "empty.png", [], class_names=CLASSES) == []


def test_studio_requests_write_fresh_files(tmp_path, model_path):
    from drumdiff.app.actions import Studio

    model = load_model(model_path, device="cpu")
    studio = Studio(model, Workspace(tmp_path))
    options = SamplingOptions(steps=2)
    made = studio.generate(class_name="kick", n=2, seed=5, options=options)
    again = studio.generate(class_name="kick", n=2, seed=5, options=options)
    assert [c.label for c in made.clips] == ["kick_seed5_000", "kick_seed6_001"]
    assert made.clips[0].path != again.clips[0].path  # a fresh folder per request
    np.testing.assert_array_equal(made.clips[0].audio, again.clips[0].audio)  # same seed, same sound
    for clip in made.clips:
        assert sf.info(str(clip.path)).subtype == "PCM_24" and clip.path.with_suffix(".png").is_file()
    assert sorted(zipfile.ZipFile(made.zip_path).namelist()) == ["kick_seed5_000.wav", "kick_seed6_001.wav"]
    clip = made.clips[0].tensor()
    varied = studio.vary(clip, source="k", strength=0.5, class_name=None, n=1, seed=1, options=options)
    painted = studio.inpaint(clip, source="k", keep_ms=20, class_name="kick", n=1, seed=1, options=options)
    blend = studio.interpolate(
        clip, made.clips[1].tensor(), sources=("a", "b"), frames=3, class_name=None, options=options
    )
    assert [len(r.clips) for r in (varied, painted, blend)] == [1, 1, 3]
    keep = round(20 * 44100 / 1000)
    torch.testing.assert_close(painted.clips[0].tensor()[:, :keep], clip[:, :keep], rtol=0, atol=2**-22)
    with pytest.raises(DrumdiffError, match="keep must be between"):
        studio.inpaint(clip, source="k", keep_ms=500, class_name=None, n=1, seed=1, options=options)
    kept = zip_clips(tmp_path / "kept.zip", [made.clips[0], made.clips[0]], studio.workspace)
    assert zipfile.ZipFile(kept).namelist() == ["kick_seed5_000.wav", "kick_seed5_000-1.wav"]


def test_studio_kit_writes_a_kit_its_picture_and_a_zip(tmp_path, model_path):
    from PIL import Image

    from drumdiff.app.actions import Studio

    studio = Studio(load_model(model_path, device="cpu"), Workspace(tmp_path))
    requests = studio.workspace.root / "requests"
    seen: list[tuple[int, int, str]] = []
    asked = dict(pads=["kick", "snare"], round_robins=2, seed=3, name="Test Kit", loudness_lufs=-20.0,
                 options=SamplingOptions(steps=2))  # fmt: skip
    made = studio.kit(**asked, progress=lambda *report: seen.append(report))
    folder = made.kit.folder
    assert folder.parent.parent == requests and folder.name == "Test_Kit"
    assert made.message.startswith("kit: 2 pads x 2 take(s), seed 3")
    assert seen[0] == (0, seen[0][1], "sampling") and seen[-1] == (seen[0][1], seen[0][1], "sampling")
    assert made.picture == folder / "kit.png" and "kit.png" in made.kit.files
    with Image.open(made.picture) as image:
        assert image.format == "PNG" and image.size[1] > 200
    assert [(label, path.relative_to(folder).as_posix()) for label, path in made.first_takes] == [
        ("36 kick", "samples/36_kick_1.wav"),
        ("38 snare", "samples/38_snare_1.wav"),
    ]
    assert made.zip_path.parent == folder.parent and made.zip_path.name == "Test_Kit.zip"
    with zipfile.ZipFile(made.zip_path) as archive:  # the kit folder, relative paths under one top folder
        names = archive.namelist()
        assert sorted(names) == sorted(f"Test_Kit/{f}" for f in made.kit.files)
        assert archive.read("Test_Kit/kit.json") == (folder / "kit.json").read_bytes()
    wanted = [
        "kit.json",
        "kit.png",
        "Test_Kit.sfz",
        "drumkit.xml",
        "samples/36_kick_1.wav",
        "samples/38_snare_2.wav",
    ]
    assert {f"Test_Kit/{f}" for f in wanted} <= set(names)
    again = studio.kit(**asked)  # a fresh folder, never the same one; same seed, same sounds
    assert again.kit.folder != folder
    kick = "samples/36_kick_1.wav"
    assert (again.kit.folder / kick).read_bytes() == (folder / kick).read_bytes()

    with pytest.raises(DrumdiffError, match="no pads given"):
        studio.kit(**{**asked, "pads": []})
    unconditional = load_model(tiny_model_file(tmp_path / "plain.safetensors"), device="cpu")
    plain = Studio(unconditional, studio.workspace)
    with pytest.raises(DrumdiffError, match=r"pad kick \(note 36\) needs class kick"):
        plain.kit(**asked)
    made_folders = sorted([folder.parent, again.kit.folder.parent])
    assert sorted(requests.iterdir()) == made_folders  # the failed requests left nothing


def test_cli_needs_a_model_and_generate_does_not_import_gradio(tmp_path, capsys):
    from drumdiff.cli import main

    missing = tmp_path / "missing.safetensors"
    assert main(["app", "--model", str(missing)]) == 2  # before any server starts
    assert capsys.readouterr().err == f"drumdiff app: error: model file not found: {missing}\n"
    code = (
        "import sys; from drumdiff.cli import build_parser; build_parser(); import drumdiff.commands.generate; "
        "import drumdiff.pipeline; assert 'gradio' not in sys.modules, 'gradio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_page_builds_with_every_tab(model_path, tmp_path, monkeypatch):
    require("gradio")
    # Gradio writes into its cache when a page is built; keep it out of the shared /tmp/gradio
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr("gradio.routes.DEFAULT_TEMP_DIR", str(tmp_path / "gradio"), raising=False)
    from drumdiff.app.actions import Studio
    from drumdiff.app.page import build_app
    from drumdiff.app.soundmap import Embedder

    demo = build_app(Studio(load_model(model_path, device="cpu"), Workspace(tmp_path)), Embedder())
    labels = [block.label for block in demo.blocks.values() if type(block).__name__ == "Tab"]
    assert labels == ["Generate", "Vary", "Interpolate", "Inpaint", "Kit", "Map"]
    assert demo.analytics_enabled is False


# ---------------------------------------------------------------------------------------------- the browser


class ProxyRecorder:
    """A fake HTTP(S) proxy on localhost: any request the server makes to another host arrives here."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.requests.append(conn.recv(200).decode(errors="replace").split("\r\n")[0])
                except OSError:
                    self.requests.append("(connection)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(model_path, tmp_path):
    """`drumdiff app` on a free localhost port, with a recording proxy; stopped (SIGTERM) afterwards."""
    require("gradio")
    port, proxy = free_port(), ProxyRecorder()
    env = dict(os.environ)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = f"http://127.0.0.1:{proxy.port}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    log = (tmp_path / "server.log").open("w")
    command = [sys.executable, "-m", "drumdiff", "app", "--port", str(port), "--model", str(model_path)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the app did not start:\n{(tmp_path / 'server.log').read_text()}")
                time.sleep(0.5)
        yield url, proxy
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()
        proxy.close()
    output = (tmp_path / "server.log").read_text()
    folder = re.search(r"files of this server go to (\S+)", output)
    assert folder and not Path(folder.group(1)).exists(), f"temporary folder left behind:\n{output}"
    assert proxy.requests == [], f"the server tried to reach the internet: {proxy.requests}"


def chromium_page(playwright, tmp_path, outside: list[str]):
    """Debian's chromium, headless, fresh profile; requests to any host but this machine are refused."""
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is required in CI (scripts/setup.sh installs it)")
        pytest.skip("chromium not installed")
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-default-apps",
        ],
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )  # fmt: skip
    context.set_default_timeout(90_000)  # generous: CI machines are small and may be busy

    def guard(route) -> None:
        host = re.match(r"^[a-z]+://([^/:]+)", route.request.url)
        if host and host.group(1) not in ("127.0.0.1", "localhost"):
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    return context, context.pages[0] if context.pages else context.new_page()


def set_number(page, selector: str, value: int) -> None:
    page.fill(f"{selector} input[type=number]", str(value))
    page.press(f"{selector} input[type=number]", "Enter")


def download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def test_browser_session(server, tmp_path):
    sync_api = require("playwright.sync_api")
    url, _ = server
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context, page = chromium_page(playwright, tmp_path, outside)
        try:
            session(page, url, tmp_path)
            two_users_at_once(context, url)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)  # to see what went wrong
            raise
        finally:
            context.close()
    assert outside == [], f"the page asked other hosts: {outside}"


def session(page, url: str, tmp_path: Path) -> None:
    """What a person does: generate, download, keep, vary, upload a bad file, make a kit, explore the map."""
    page.goto(url)
    page.wait_for_selector("#generate-button")

    # Generate: four players, each with its picture; a valid WAV download; the zip of all.
    set_number(page, "#generate-steps", 2)
    page.fill("#generate-seed input", "42")
    page.click("#generate-button")
    page.wait_for_selector("#generate-status:has-text('4 clip(s), seed 42')")
    for i in range(4):
        page.wait_for_selector(
            f"#generate-clip-{i}-audio [data-testid='audio-player-kick_seed{42 + i}_{i:03d}']",
            state="attached",
        )
        page.wait_for_selector(f"#generate-clip-{i}-picture img")
    assert not page.is_visible("#generate-clip-4-audio")
    page.wait_for_timeout(500)  # let the players draw their waveforms
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if os.environ.get("DRUMDIFF_SCREENSHOT"):
        shutil.copy(tmp_path / "app.png", os.environ["DRUMDIFF_SCREENSHOT"])
    wav = download(page, "#generate-clip-0-download", tmp_path)
    info = sf.info(str(wav))
    assert wav.name == "kick_seed42_000.wav" and np.isfinite(sf.read(str(wav))[0]).all()
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, TEST_LENGTH, "PCM_24")
    names = zipfile.ZipFile(download(page, "#generate-zip", tmp_path)).namelist()
    assert sorted(names) == [f"kick_seed{42 + i}_{i:03d}.wav" for i in range(4)]

    # Keep one into the session's collection; use another as the input of Vary.
    page.click("#generate-clip-1-keep")
    page.wait_for_selector("#kept-note:has-text('1 kept: kick_seed43_001')")
    page.click("#generate-clip-0-use")
    page.wait_for_selector("#vary-note:has-text('from this session: kick_seed42_000')")
    set_number(page, "#vary-steps", 2)
    set_number(page, "#vary-n", 2)
    page.click("#vary-button")
    page.wait_for_selector("#vary-status:has-text('vary: 2 clip(s)')")
    page.wait_for_selector("#vary-clip-1-picture img")

    # A file that is not audio: a clear message, and it is not used.
    page.get_by_role("tab", name="Inpaint").click()
    bad = tmp_path / "notes.wav"
    bad.write_text("these are my notes, not a sound")
    page.set_input_files("#inpaint-input input[type=file]", str(bad))
    page.wait_for_selector("#inpaint-note:has-text('notes.wav is not a sound drumdiff can read')")
    # ... then a sound from this session instead: keep its attack, regenerate its tail.
    page.click("#inpaint-pick input")
    page.get_by_role("option", name=re.compile("kick_seed43_001")).click()
    page.wait_for_selector("#inpaint-note:has-text('from this session: kick_seed43_001')")
    set_number(page, "#inpaint-steps", 2)
    set_number(page, "#inpaint-n", 1)
    page.click("#inpaint-button")
    page.wait_for_selector("#inpaint-status:has-text('inpaint: 1 clip(s)')")

    # Kit: no pads is the page's error message; two pads give the picture, a player each and the zip.
    page.get_by_role("tab", name="Kit").click()
    page.click("#kit-no-pads")
    page.click("#kit-button")
    page.wait_for_selector("[data-testid='toast-body']:has-text('no pads given')")
    page.get_by_label("Snare (38)").check()
    page.get_by_label("Kick (36)").check()  # ticked second, still the first pad: the boxes' order
    set_number(page, "#kit-steps", 2)
    page.click("#kit-button")
    page.wait_for_selector("#kit-status:has-text('kit: 2 pads x 1 take(s)')")
    page.wait_for_selector("#kit-picture img")
    for i, label in enumerate(["36 kick", "38 snare"]):
        page.wait_for_selector(f"#kit-pad-{i}-audio [data-testid='audio-player-{label}']", state="attached")
    assert not page.is_visible("#kit-pad-2-audio")
    names = set(zipfile.ZipFile(download(page, "#kit-zip", tmp_path)).namelist())
    assert {f"drumdiff_kit/{f}" for f in ("kit.json", "kit.png", "samples/38_snare_1.wav")} <= names

    # Map: click a point, hear it, ask for more like it.
    page.get_by_role("tab", name="Map").click()
    page.wait_for_selector("#map-image img")
    x, y = marker_position(page.locator("#map-image img").screenshot(path=str(tmp_path / "map.png")))
    page.locator("#map-image img").click(position={"x": x, "y": y})
    page.wait_for_selector("#map-picked:has-text('heard as')")
    page.wait_for_selector("#map-audio [data-testid^='audio-player-']", state="attached")
    page.click("#map-more")
    page.wait_for_selector("#map-status:has-text('vary: 4 clip(s)')")


def two_users_at_once(context, url: str) -> None:
    """Two more browser tabs (two sessions) press Generate together: both are served, one after the other."""
    pages = [context.new_page() for _ in range(2)]
    for seed, page in enumerate(pages, start=100):
        page.goto(url)
        page.wait_for_selector("#generate-button")
        set_number(page, "#generate-steps", 2)
        set_number(page, "#generate-n", 1)
        page.fill("#generate-seed input", str(seed))
    for page in pages:
        page.click("#generate-button")
    for seed, page in enumerate(pages, start=100):
        page.wait_for_selector(f"#generate-status:has-text('1 clip(s), seed {seed}')")
        assert page.locator("#kept-note").inner_text().startswith("Nothing kept")  # sessions are separate


def marker_position(png: bytes) -> tuple[float, float]:
    """Where a map marker is in a screenshot of the map: the leftmost strongly coloured pixel, nudged in."""
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 80  # markers; the axes and text are grey
    ys, xs = np.nonzero(colourful)
    assert len(xs), "no marker on the map"
    left = xs.argmin()
    return float(xs[left] + 3), float(ys[left])
