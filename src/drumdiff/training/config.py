"""Every training hyper-parameter in one frozen dataclass, the run's fixed constants, and memory sizes."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from drumdiff.errors import DrumdiffError

GIB = 1024**3
VAL_SEED = 20240607  # fixed: the validation loss is comparable across steps and runs
VAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed t grid of the validation loss
DEFAULT_CHECKPOINT_SECONDS = 300.0  # "--checkpoint-every 0": about every 5 minutes of work
DEFAULT_PREVIEW_SECONDS = 900.0  # "--preview-every 0": about every 15 minutes
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
LOSS_WEIGHTS = ("v", "min-snr")
SEED_MAX = 2**64 - 1  # torch.manual_seed's range


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyper-parameter; CLI flags override these defaults, `RUN/config.json` records them.

    Optimizer defaults are the original tiny-audio-diffusion's (AdamW lr 1e-4, betas (0.95, 0.999),
    eps 1e-6, weight decay 1e-3; EMA 0.995 with power-0.7 warm-up).
    """

    preset: str = "small"
    max_steps: int = 20000
    batch_size: int = 8  # per device, per micro-batch
    accumulate: int = 1
    precision: str = "32"
    grad_checkpointing: bool = False
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-6
    weight_decay: float = 1e-3
    warmup_steps: int = 200
    decay_steps: int = 0  # the last decay_steps before max_steps take the lr linearly down to 0; 0: none
    grad_clip: float = 1.0
    ema_beta: float = 0.995
    ema_power: float = 0.7
    cfg_dropout: float = 0.1  # probability of the null class, conditional models only
    augment: bool = False  # drumdiff.data.Augment's defaults: gain, polarity, stereo swap/width, onset shift
    class_balance: float = 0.0  # clip weight (clips in its class)**-class_balance; 0: each once an epoch
    # The loss recipe (see drumdiff.training.step.batch_loss): weighting over noise levels, where training
    # noise levels sit, and a curriculum of short crops of the attack before full-length clips.
    loss_weight: str = "v"  # "v": plain v-MSE (the original's); "min-snr": Min-SNR-gamma (Hang et al. 2023)
    min_snr_gamma: float = 5.0
    log_snr_shift: float = 0.0  # added to log(alpha/sigma) of each drawn t; < 0 trains at more noise
    quiet_weight: float = 1.0  # weight of the error where the clean clip is quiet (its tail); 1: plain MSE
    crop_length: int = 0  # samples of each clip (from its start) trained on during the first crop_steps
    crop_steps: int = 0
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0: about every DEFAULT_CHECKPOINT_SECONDS
    preview_every: int = 0  # steps; 0: about every DEFAULT_PREVIEW_SECONDS; -1: never
    preview_count: int = 4
    preview_steps: int = 20
    val_items: int = 32  # clips of the val split used by the validation loss
    max_bad_steps: int = 5  # non-finite losses in a row that stop the run
    ema_on_cpu: bool = False  # keep the EMA copy in host memory (chosen by --memory-budget on a GPU)
    num_workers: int = -1  # -1: automatic (0 on CPU, up to 4 spawn workers with a GPU)
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    logger: str = "tensorboard"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for `RUN/config.json` and the checkpoint (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys (from another drumdiff version) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)

    def learning_rate(self, step: int) -> float:
        """The lr of optimizer step `step` (0-based): linear warm-up, flat, then the optional linear decay.

        Warm-up-stable-decay: a run can go on at the flat rate and any copy of it can decay to finish
        (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations").
        """
        factor = min(1.0, (step + 1) / max(1, self.warmup_steps))
        if self.decay_steps:
            factor = min(factor, (self.max_steps - step) / self.decay_steps)
        return self.lr * max(0.0, factor)

    def check(self) -> None:
        """Refuse settings that no run can use, naming the flag, before any probing or training."""
        for name in ("max_steps", "batch_size", "accumulate", "devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise DrumdiffError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if self.precision not in PRECISIONS:
            raise DrumdiffError(f"--precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        if self.strategy not in ("auto", "ddp"):
            raise DrumdiffError(f"--strategy {self.strategy!r}: choose auto or ddp")
        if self.loss_weight not in LOSS_WEIGHTS:
            raise DrumdiffError(f"--loss-weight {self.loss_weight!r}: choose {', '.join(LOSS_WEIGHTS)}")
        if not (
            math.isfinite(self.lr) and self.lr >= 0
        ):  # 0 is allowed: the weights stay (a test of a setup)
            raise DrumdiffError(f"--lr must be a positive number (or 0), got {self.lr}")
        if not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0):
            raise DrumdiffError(f"--min-snr-gamma must be a positive number, got {self.min_snr_gamma}")
        if not math.isfinite(self.log_snr_shift):
            raise DrumdiffError(f"--log-snr-shift must be a finite number, got {self.log_snr_shift}")
        if not (math.isfinite(self.quiet_weight) and self.quiet_weight >= 1):
            raise DrumdiffError(
                f"--quiet-weight must be a number of at least 1 (1: off), got {self.quiet_weight}"
            )
        if not 0 <= self.decay_steps <= self.max_steps:
            raise DrumdiffError(
                f"--decay-steps must be from 0 (off) to --max-steps ({self.max_steps}), got {self.decay_steps}"
            )
        if not (math.isfinite(self.class_balance) and 0 <= self.class_balance <= 1):
            raise DrumdiffError(
                f"--class-balance must be a number from 0 (off) to 1 (classes equally often), got {self.class_balance}"
            )
        if not 0 <= self.seed <= SEED_MAX:
            raise DrumdiffError(f"--seed must be a whole number from 0 to {SEED_MAX}, got {self.seed}")
        if self.checkpoint_every < 0:
            raise DrumdiffError(
                f"--checkpoint-every must be 0 (about every 5 min) or more, got {self.checkpoint_every}"
            )
        if self.preview_every < -1:
            raise DrumdiffError(
                f"--preview-every must be -1 (never), 0 (about every 15 min) or more, got {self.preview_every}"
            )
        if self.crop_length < 0 or self.crop_steps < 0 or bool(self.crop_length) != bool(self.crop_steps):
            raise DrumdiffError(
                "--crop-length and --crop-steps go together and must be positive "
                f"(got {self.crop_length} and {self.crop_steps})"
            )


def parse_size(text: str) -> int:
    """'2GB', '1.5GiB', '800MB', '512M' or a byte count -> bytes. GB and GiB both mean 2**30 (card sizes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(text).lower())
    if not match:
        raise DrumdiffError(f"memory budget {text!r} is not a size like 2GB, 1.5GiB or 800MB")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if value <= 0:
        raise DrumdiffError(f"memory budget {text!r} must be positive")
    return int(value)


def format_size(n: float) -> str:
    """Bytes as '1.50 GiB', or '800 MiB' under a quarter GiB (probe logs and errors)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 1024**2:.0f} MiB"
