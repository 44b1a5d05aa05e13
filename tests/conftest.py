"""Shared test helpers. With CI=true a missing optional dependency fails the test instead of skipping it."""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for `bench.original_lib`

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str) -> types.ModuleType:
    """Import an optional dependency: skip locally when it is missing, fail in CI."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if IN_CI:
            pytest.fail(f"{module} is required in CI but cannot be imported: {error}")
        pytest.skip(f"{module} not installed")


def require_original() -> types.ModuleType:
    """The original audio-diffusion-pytorch 0.1.3 (see bench/original_lib.py)."""
    from bench.original_lib import import_original

    try:
        return import_original()
    except ImportError as error:
        if IN_CI:
            pytest.fail(f"audio-diffusion-pytorch 0.1.3 is required in CI: {error}")
        pytest.skip("audio-diffusion-pytorch not installed")
