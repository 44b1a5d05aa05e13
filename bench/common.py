"""Helpers shared by the benchmarks."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from drumdiff.files import write_json


def cpu_name() -> str:
    """The processor's model name (for the benchmark JSON), or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's JSON, and write it to `out` (atomically) when one is given."""
    print(json.dumps(result, indent=2))
    if out is not None:
        write_json(out, result)
