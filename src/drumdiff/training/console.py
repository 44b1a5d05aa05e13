"""What a training run says and hears on the console: one line per warning, no Lightning banners, Ctrl-C.

No Lightning import here: these are context managers around `Trainer.fit` (drumdiff.training.run).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from drumdiff.errors import DrumdiffError
from drumdiff.training import checkpoint


def resume_hint(request: Any, module: Any, *, stopped: bool) -> str:
    """The one line for Ctrl-C: where the run stands and the command that continues it."""
    command = shlex.join(
        ["drumdiff", "train", str(request.data_dir), "--run-dir", str(request.run_dir), "--resume"]
    )
    ckpt = checkpoint.checkpoint_path(request.run_dir)
    if stopped:
        return f"interrupted at step {module.stopped_at}, checkpoint written; continue with: {command}"
    try:
        kept = int(checkpoint.load_checkpoint(ckpt)["step"]) if ckpt.is_file() else None
    except DrumdiffError:
        kept = None
    if kept is None:
        return f"interrupted at step {module.step}, before its first checkpoint: nothing to resume"
    return (
        f"interrupted at step {module.step}; its checkpoint of step {kept} is kept; continue with: {command}"
    )


@contextlib.contextmanager
def stop_on_ctrl_c(module: Any, *, world: int, log: Any) -> Iterator[None]:
    """In a single-process run the first Ctrl-C asks the module to finish its step, write a checkpoint and
    stop; a second one stops at once. With several processes Ctrl-C stops at once. The SIGINT handler is
    restored afterwards (Lightning leaves SIGINT ignored after an interrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        module.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log("\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C again to stop at once)")

    previous = signal.getsignal(signal.SIGINT)
    if world == 1:
        signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def plain_warnings(log: Any) -> Iterator[None]:
    """Warnings during training as one `warning: ...` line each (not Python's file:line + source line)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|infinite|inf\\b).*")
        warnings.filterwarnings(
            "ignore", message=".*module\\(s\\) in eval mode.*"
        )  # the EMA copy, on purpose
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.showwarning = lambda message, *args, **kwargs: log(f"warning: {message}")
        yield


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's info lines (GPU/TPU available, tips, its KeyboardInterrupt text); warnings stay."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
