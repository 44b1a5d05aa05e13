"""The model shipped inside the package: the default of `generate` and the Python API, small, documented, and
giving real audio for every class.

Sampling uses 3 steps instead of the default to keep the suite short: the checks are about the file and the
wiring (finite, non-silent, 44.1 kHz stereo, 32768 samples, same seed same sound), not about quality, which
`drumdiff evaluate` measures (docs/model.md).
"""

from __future__ import annotations

import torch

import drumdiff
from drumdiff.modelfile import SHIPPED_DIR, read_header, resolve_model

SHIPPED = SHIPPED_DIR / "drums.safetensors"
CARD = SHIPPED_DIR / "MODEL_CARD.md"
CLASSES = ["kick", "snare", "hihat", "percussion"]


def test_the_shipped_model_is_the_default_and_fits_the_budget() -> None:
    assert resolve_model(None) == SHIPPED
    assert SHIPPED.stat().st_size <= 32 * 1024 * 1024
    header = read_header(SHIPPED)
    dtypes = {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    assert dtypes == {"F16"}, dtypes
    # The originality index that generate and kit use by default sits beside it.
    assert (SHIPPED_DIR / "drums.index.safetensors").is_file()


def test_the_model_card_has_its_sections() -> None:
    card = CARD.read_text(encoding="utf-8")
    for heading in (
        "## Data",
        "## Layout",
        "## Training",
        "## Recipe",
        "## Sampling defaults",
        "## Evaluation",
        "## Known weaknesses",
    ):
        assert heading in card, f"MODEL_CARD.md lacks {heading!r}"


def test_every_class_gives_real_audio_and_one_seed_one_sound() -> None:
    model = drumdiff.load_model()  # no name: the shipped model
    assert sorted(model.class_names) == sorted(CLASSES)
    assert model.sample_rate == 44100
    for class_name in CLASSES:
        audio = model.generate(n=1, seed=7, class_name=class_name, steps=3)
        assert audio.shape == (1, 2, 32768), (class_name, audio.shape)
        assert torch.isfinite(audio).all(), class_name
        assert audio.abs().max() > 0.05, f"{class_name}: silent"
    again = model.generate(n=1, seed=7, class_name="percussion", steps=3)
    assert torch.equal(again, audio)
    other = model.generate(n=1, seed=8, class_name="percussion", steps=3)
    assert not torch.allclose(other, audio)
