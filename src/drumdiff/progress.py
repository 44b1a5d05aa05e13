"""Progress on stderr: a tqdm bar on a terminal, plain lines in a log file or pipe (no `\\r` frames there).

    bar = Progress(total=80, desc="generate", unit="step")
    bar.update(1); bar.set_postfix(loss="0.12"); bar.close()

Plain mode prints `desc: 40/80 steps (50%) ...` at most every `interval` seconds, and once more at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """One progress display; `close()` it before printing anything else (an error line, a summary)."""

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        initial: int = 0,
        stream: TextIO | None = None,
        interval: float = 10.0,
        leave: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval = interval
        self.postfix = ""
        self._bar: Any = None
        self._last = time.monotonic()
        self._printed_at = initial
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                leave=leave,
                dynamic_ncols=True,
            )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last >= self.interval:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def write(self, line: str, *, file: TextIO | None = None) -> None:
        """Print a line (default: to stdout) without tearing the bar, which is redrawn below it."""
        file = file if file is not None else sys.stdout
        if self._bar is not None:
            self._bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self) -> None:
        """End the display: the bar is cleared (or kept with `leave`); plain mode prints its last count."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.n != self._printed_at:
            self._line()

    def _line(self) -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{pct}{extra}", file=self.stream, flush=True)
        self._last, self._printed_at = time.monotonic(), self.n
