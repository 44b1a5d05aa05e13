"""The built wheel: it carries the package data (presets, weights/ with the shipped model and its card) and
`drumdiff generate snare -n 4 --out x/` runs offline on the shipped model, with no --model.

The test builds drumdiff's wheel, installs it without [train] into a fresh virtual environment that borrows
this environment's packages (torch, numpy, ...) but not drumdiff, and runs `drumdiff generate` there with the
network switched off (`unshare -rn`, where the kernel allows it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "drumdiff"


def _fresh_venv(tmp_path: Path) -> Path:
    """A virtual environment that sees this one's packages except drumdiff itself."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # A .pth path line adds the folder but does not run its .pth files: drumdiff's editable hook stays out.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_carries_its_data_and_generates_offline(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    (wheel,) = wheels.glob("drumdiff-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = [p for p in (*PACKAGE.glob("weights/*"), *PACKAGE.glob("presets/*")) if p.is_file()]
    shipped = {"drumdiff/weights/drums.safetensors", "drumdiff/weights/MODEL_CARD.md"}
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    for path in data:
        assert path.relative_to(PACKAGE.parent).as_posix() in names, f"{path.name} is missing from the wheel"

    venv = _fresh_venv(tmp_path)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRUMDIFF_HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)  # the installed package only
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, env=env)
    found = subprocess.run(
        [python, "-c", "import drumdiff; print(drumdiff.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert str(venv) in found.stdout, found.stdout  # the installed wheel, not this checkout

    out = tmp_path / "x"
    # The shipped model (no --model); 2 steps instead of the default keep the test short.
    command = [str(venv / "bin" / "drumdiff"), "generate", "snare", "-n", "4", "--steps", "2"]
    command += ["--out", str(out), "--no-progress"]
    offline = shutil.which("unshare")
    if offline and subprocess.run([offline, "-rn", "true"], capture_output=True).returncode == 0:
        command = [offline, "-rn", *command]  # a network namespace with nothing in it
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    wavs = sorted(out.glob("snare_seed*.wav"))
    assert len(wavs) == 4
    audio, rate = sf.read(wavs[0])
    assert rate == 44100 and audio.shape[1] == 2
