"""`drumdiff average`: the weighted mean of model files, and every input it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from drumdiff.cli import main
from drumdiff.files import file_digest
from drumdiff.modelfile import load_model_file, read_metadata
from tests.helpers import tiny_model_file


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    a = tiny_model_file(tmp_path / "a.safetensors", num_classes=2, seed=1)
    b = tiny_model_file(tmp_path / "b.safetensors", num_classes=2, seed=2)
    return a, b


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip()


def test_average_is_the_weighted_mean_and_records_its_inputs(tmp_path: Path, two_models) -> None:
    a, b = two_models
    out = tmp_path / "soup.safetensors"
    assert main(["average", str(a), str(b), "--out", str(out), "--weights", "3,1"]) == 0
    wa, wb, mean = load_file(str(a)), load_file(str(b)), load_file(str(out))
    assert set(mean) == set(wa)
    for name in wa:
        assert torch.allclose(mean[name], 0.75 * wa[name] + 0.25 * wb[name], atol=1e-6), name
    assert not torch.allclose(mean["class_embedding.weight"], wa["class_embedding.weight"])
    meta = read_metadata(out)
    assert meta["config"] == read_metadata(a)["config"] and meta["class_names"] == ["class0", "class1"]
    inputs = meta["provenance"]["average_of"]
    assert [i["file"] for i in inputs] == [str(a), str(b)] and [i["weight"] for i in inputs] == [0.75, 0.25]
    assert inputs[0]["sha256"] == file_digest(a) and inputs[1]["provenance"] == {"made_by": "tests"}
    loaded = load_model_file(out)  # a usable model
    assert loaded.class_names == ["class0", "class1"]


def test_average_of_equal_weights_in_fp16(tmp_path: Path, two_models) -> None:
    a, b = two_models
    out = tmp_path / "soup.safetensors"
    assert main(["average", str(a), str(b), "-o", str(out), "--fp16"]) == 0
    wa, wb, mean = load_file(str(a)), load_file(str(b)), load_file(str(out))
    assert all(t.dtype == torch.float16 for t in mean.values())
    for name in wa:
        assert torch.allclose(mean[name].float(), (wa[name] + wb[name]) / 2, atol=1e-3, rtol=1e-3), name
    assert json.loads(json.dumps(read_metadata(out)["provenance"]))["average_of"][1]["weight"] == 0.5


def test_average_refuses_models_that_do_not_fit(tmp_path: Path, two_models, capsys) -> None:
    """Another layout, other class names, one file, bad weights, a damaged file: exit 2 naming it, no file."""
    a, b = two_models
    out = tmp_path / "soup.safetensors"
    wider = tiny_model_file(tmp_path / "wider.safetensors", num_classes=2, modulation_features=32)
    renamed = tiny_model_file(tmp_path / "renamed.safetensors", num_classes=2, class_names=["kick", "snare"])
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    cases = [
        ([str(a), str(wider)], "wider.safetensors: its layout (config) differs"),
        ([str(a), str(renamed)], "renamed.safetensors: its class names differ"),
        ([str(a)], "at least two model files"),
        ([str(a), str(b), "--weights", "1"], "1 weights for 2 model files"),
        ([str(a), str(b), "--weights", "1,-1"], "weights must be finite, not negative"),
        ([str(a), str(b), "--weights", "0,0"], "not all 0"),
        ([str(a), str(broken)], "broken.safetensors"),
    ]
    for args, message in cases:
        assert main(["average", *args, "--out", str(out)]) == 2, args
        assert message in _error(capsys), args
        assert not out.exists()
    with pytest.raises(SystemExit):
        main(["average", str(a), str(b), "--out", str(out), "--weights", "1,x"])
    assert "not a comma-separated list of numbers" in _error(capsys)


def test_average_keeps_an_existing_file_unless_forced(tmp_path: Path, two_models, capsys) -> None:
    a, b = two_models
    out = tmp_path / "soup.safetensors"
    out.write_bytes(b"keep me")
    assert main(["average", str(a), str(b), "--out", str(out)]) == 2
    assert "already exists" in _error(capsys) and out.read_bytes() == b"keep me"
    assert main(["average", str(a), str(b), "--out", str(out), "--force"]) == 0
    assert read_metadata(out)["provenance"]["average_of"][0]["file"] == str(a)
    # the output may be one of the inputs: every input is read before the file is replaced
    assert main(["average", str(out), str(b), "--out", str(out), "--force"]) == 0
    wa, wb, mean = load_file(str(a)), load_file(str(b)), load_file(str(out))
    name = "class_embedding.weight"
    assert torch.allclose(mean[name], 0.25 * wa[name] + 0.75 * wb[name], atol=1e-6)
