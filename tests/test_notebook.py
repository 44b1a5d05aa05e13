"""examples/inference.ipynb runs from top to bottom (nbclient, a real Jupyter kernel) on a tiny model."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from tests.conftest import ROOT, require
from tests.helpers import TEST_LENGTH, tiny_model_file

NOTEBOOK = ROOT / "examples" / "inference.ipynb"


def test_inference_notebook_runs(tmp_path: Path, monkeypatch) -> None:
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    model = tiny_model_file(
        tmp_path / "tiny.safetensors", num_classes=4, class_names=["kick", "snare", "hihat", "percussion"]
    )
    monkeypatch.setenv("DRUMDIFF_MODEL", str(model))  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "commit the notebook without outputs"
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    players = [o for o in outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(players) == 4 + 1 + 3 + 5 and len(pictures) == 2  # clips, sample, variations, blend
    out = tmp_path / "notebook-out"
    saved = sorted(p.name for p in out.glob("*.wav"))
    assert saved == sorted(
        [f"kick_seed{i}.wav" for i in range(1, 5)] + [f"blend_{i}.wav" for i in range(5)] + ["my_snare.wav"]
    )
    assert sf.info(str(out / "kick_seed1.wav")).frames == TEST_LENGTH
