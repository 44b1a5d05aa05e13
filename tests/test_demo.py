"""The README's first command, `bash scripts/demo.sh`: 4 clips of every class and their pictures, from the
shipped model, with the python3 that runs the tests (so that nothing is installed here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_generates_every_class_with_pictures() -> None:
    out = ROOT / "demo" / "out"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "2"}
    env.pop("PYTHONPATH", None)
    # A python3 beside sys.executable (a venv has one) is what the script finds first.
    assert shutil.which("python3", path=env["PATH"]) is not None
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "pip" not in done.stderr  # it used this environment, it installed nothing
        for class_name in ("kick", "snare", "hihat", "percussion"):
            wavs = sorted(out.glob(f"{class_name}_seed*.wav"))
            assert len(wavs) == 4, (class_name, wavs)
            info = sf.info(wavs[0])
            assert (info.samplerate, info.channels, info.frames) == (44100, 2, 32768)
            assert len(list(out.glob(f"{class_name}_seed1_000.png"))) == 1
    finally:
        shutil.rmtree(ROOT / "demo" / "out", ignore_errors=True)
