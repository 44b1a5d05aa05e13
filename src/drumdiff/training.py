"""Training on PyTorch Lightning: the module, the data stream, EMA, checkpoints, previews, memory probing.

Imported only by `drumdiff train` / `drumdiff export` (it imports Lightning).

Determinism, the design in one paragraph: every example the run ever sees has a *stream position* p
(0, 1, 2, ... across steps, ranks and micro-batches). The clip at p is `perm(epoch)[p % N]` with a
permutation seeded by (seed, epoch), and its noise, its t and its guidance dropout come from a generator
seeded by (seed, p). So the data order and all training randomness are pure functions of the step: a resumed
run (weights, EMA, optimizer and step restored) continues bit-exactly on CPU, and `--devices 2 --batch-size B`
sees exactly the examples, noise and t of one process at batch 2B.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from drumdiff import __version__
from drumdiff.config import ModelConfig, load_preset
from drumdiff.diffusion import v_loss
from drumdiff.errors import DrumdiffError, ModelFileError
from drumdiff.files import atomic_path

CHECKPOINT_FORMAT = "drumdiff-train-checkpoint"
CHECKPOINT_VERSION = 1
GIB = 1024**3
# Memory that a CUDA process needs outside PyTorch's allocator (context, kernels, cuDNN/cuBLAS workspaces):
# with a 2 GiB card this leaves 1.6 GiB for `max_memory_reserved`.
CUDA_CONTEXT_BYTES = int(0.4 * GIB)
# A probe's peak must stay this far under the limit: a real run adds a little (validation, Lightning, loaders);
# on an H200 a batch probed at 1.564 GiB reserved peaked at 1.602 GiB over 50 steps.
PROBE_MARGIN = 0.95
VAL_SEED = 20240607  # fixed: the validation loss is comparable across steps and runs
VAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed t grid of the validation loss
DEFAULT_CHECKPOINT_SECONDS = 300.0  # "--checkpoint-every 0": about every 5 minutes of work
DEFAULT_PREVIEW_SECONDS = 900.0  # "--preview-every 0": about every 15 minutes


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
    grad_clip: float = 1.0
    ema_beta: float = 0.995
    ema_power: float = 0.7
    cfg_dropout: float = 0.1  # probability of the null class, conditional models only
    augment: bool = False  # drumdiff.data.Augment's defaults: gain, polarity, stereo swap/width, onset shift
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


# ----------------------------------------------------------------------------------------------- sizes


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


# --------------------------------------------------------------------------------------------- the data


def _key_seed(*parts: object) -> int:
    """A 63-bit generator seed from any parts; distinct parts never collide by arithmetic."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class StreamBatchSampler:
    """Yields batches of (clip index, stream position) forever, starting at batch `start_batch`.

    Global batch b holds positions b*B*W .. (b+1)*B*W - 1 (B per rank, W ranks); rank r takes its slice.
    The clip at position p is perm_e[p mod N] with e = p // N and perm_e seeded by (seed, e).
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if num_items < 1:
            raise ValueError("StreamBatchSampler needs at least one item")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_batch, self.rank, self.world = start_batch, rank, world
        self._perms: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        """The clip index at stream position `position` (the last three epochs' permutations are cached)."""
        epoch, k = divmod(position, self.num_items)
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(_key_seed("order", self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.num_items, generator=g).tolist()
        return self._perms[epoch][k]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            first = (batch * self.world + self.rank) * self.batch_size
            yield [(self.index(p), p) for p in range(first, first + self.batch_size)]
            batch += 1


class TrainItems(Dataset):
    """(clip index, position) -> clip, class and the example's own noise, t and guidance dropout.

    Picklable (spawn workers): it holds the dataset and plain numbers only.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        seed: int,
        cfg_dropout: float,
        augment: Any = None,
        sample_rate: int = 44100,
    ) -> None:
        self.dataset, self.seed, self.cfg_dropout = dataset, seed, cfg_dropout
        self.augment, self.sample_rate = augment, sample_rate  # augment: a drumdiff.data.Augment or None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, Tensor, Tensor, bool]:
        index, position = key
        audio, class_index = self.dataset[index]  # (C, T)
        if self.augment is not None:  # its own generator: turning augmentation on changes nothing else
            g_aug = torch.Generator().manual_seed(_key_seed("augment", self.seed, position))
            audio = self.augment(audio, generator=g_aug, sample_rate=self.sample_rate)
        g = torch.Generator().manual_seed(_key_seed("train", self.seed, position))
        t = torch.rand((), generator=g)
        drop = bool(torch.rand((), generator=g) < self.cfg_dropout)
        noise = torch.randn(audio.shape, generator=g)  # (C, T)
        return audio, int(class_index), noise, t, drop


@dataclass(frozen=True)
class DataInfo:
    """What the prepared folder holds: checked before anything heavy starts."""

    root: Path
    class_names: list[str]
    sample_rate: int
    length: int
    channels: int
    num_train: int
    num_val: int


def inspect_data_dir(data_dir: str | os.PathLike) -> DataInfo:
    """Check DATA_DIR is a folder made by `drumdiff data prepare`; raise DrumdiffError naming the problem."""
    root = Path(data_dir)
    if not root.exists():
        raise DrumdiffError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DrumdiffError(f"data folder {root} is not a folder")
    if not any(root.iterdir()):
        raise DrumdiffError(f"data folder {root} is empty; make one with `drumdiff data prepare`")
    from drumdiff.data import MANIFEST, load_manifest

    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DrumdiffError(
            f"{root} was not prepared by `drumdiff data prepare` (no {MANIFEST}); "
            f"run `drumdiff data prepare SOURCE --out {root}` first"
        )
    manifest = load_manifest(root)  # unreadable JSON, another format or version: a DrumdiffError naming it
    items = manifest.get("items") or []
    num_train = sum(1 for item in items if item.get("split", "train") == "train")
    num_val = sum(1 for item in items if item.get("split") == "val")
    if num_train == 0:
        raise DrumdiffError(f"data folder {root} has no training clips (manifest lists {len(items)} items)")
    try:
        return DataInfo(
            root=root,
            class_names=list(manifest["classes"]),
            sample_rate=int(manifest["sample_rate"]),
            length=int(manifest["length"]),
            channels=int(manifest["channels"]),
            num_train=num_train,
            num_val=num_val,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DrumdiffError(f"{manifest_path} lacks a field: {error}") from error


def _open_split(root: Path, split: str) -> Dataset:
    from drumdiff.data import PreparedDataset

    return PreparedDataset(root, split=split, augment=None, progress=_is_rank_zero())


# ------------------------------------------------------------------------------------------------- EMA


def ema_beta(step: int, *, beta: float, power: float) -> float:
    """EMA decay after `step` updates: 1 - (1 + step)^-power, capped at `beta` (0 at the first update)."""
    return min(beta, 1.0 - (1.0 + step) ** -power)


@torch.no_grad()
def ema_update(shadow: nn.Module, net: nn.Module, *, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * net for the parameters; buffers are copied from `net`."""
    shadow_params = list(shadow.parameters())
    net_params = [
        p.detach().to(s.device, non_blocking=False)
        for s, p in zip(shadow_params, net.parameters(), strict=True)
    ]
    torch._foreach_lerp_(shadow_params, net_params, 1.0 - decay)
    for s_buf, n_buf in zip(shadow.buffers(), net.buffers(), strict=True):
        s_buf.copy_(n_buf)


# ------------------------------------------------------------------------------------------ checkpoints


def _serialize(obj: Any, file: Any) -> None:
    """Write `obj` to an open binary file; tests replace this to simulate a full disk or a kill."""
    torch.save(obj, file)


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: temp file in the same folder, fsync, rename. A failure leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _serialize(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise DrumdiffError(f"cannot write checkpoint {path}: {reason}{kept}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # make the rename itself durable, where the filesystem can fsync a folder
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with `torch.load(weights_only=True)`; ModelFileError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        # torch's weights-only errors wrap one useful line in several lines of advice: keep that line.
        boilerplate = ("Weights only load failed", "Please file", "Check the documentation", "(1)", "(2)")
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        useful = [line for line in lines if not line.startswith(boilerplate)]
        detail = (useful or lines or [""])[0].replace("WeightsUnpickler error:", "").strip()
        raise ModelFileError(
            f"{path} is not a readable drumdiff training checkpoint (damaged, truncated, or holding more than "
            f"plain tensors): {type(error).__name__}: {detail[:160]}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a drumdiff training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ModelFileError(
            f"{path} has checkpoint version {state.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    return state


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _clean_temp_files(folder: Path) -> None:
    """Remove temp files left by a process killed during a checkpoint write."""
    for tmp in folder.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- the module


class DiffusionTrainer(pl.LightningModule):
    """v-objective training of a `UNet1d`, manual optimization so that every step is explicit.

    One optimizer step = `accumulate` micro-batches. A non-finite loss (decided on all ranks together)
    skips the whole step; `max_bad_steps` of them in a row stop the run with a DrumdiffError.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        model_config: ModelConfig,
        train_config: TrainConfig,
        class_names: Sequence[str],
        run_dir: Path,
        val_dataset: Dataset | None,
        train_dataset: Dataset,
        provenance: dict[str, Any],
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.ema_net = _frozen_copy(net)
        self.model_config, self.cfg = model_config, train_config
        self.class_names = list(class_names)
        self.run_dir = run_dir
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.provenance = provenance
        self.step = 0  # optimizer steps done (skipped ones included)
        self.ema_updates = 0
        self.bad_in_a_row = 0
        self.val_history: list[list[float]] = []  # [step, val_loss (EMA), val_loss (raw)]
        self.resume_state: dict[str, Any] | None = None
        self.last_loss = float("nan")
        self.last_val = float("nan")
        self._micro = 0
        self._window_bad = False
        self._window_loss = 0.0
        self._last_checkpoint_time = time.monotonic()
        self._last_preview_time = time.monotonic()

    # ----- data
    def train_dataloader(self) -> DataLoader:
        cfg = self.cfg
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        sampler = StreamBatchSampler(
            len(self.train_dataset),  # type: ignore[arg-type]
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            start_batch=self.step * cfg.accumulate,
            rank=rank,
            world=world,
        )
        from drumdiff.data import Augment

        items = TrainItems(
            self.train_dataset,
            seed=cfg.seed,
            cfg_dropout=cfg.cfg_dropout if self.model_config.conditional else 0,
            augment=Augment() if cfg.augment else None,
            sample_rate=self.model_config.sample_rate,
        )
        workers = cfg.num_workers
        if workers < 0:
            workers = 0 if not torch.cuda.is_available() else min(4, max(0, (os.cpu_count() or 1) - 1))
        return DataLoader(
            items,
            batch_sampler=sampler,
            num_workers=workers,
            multiprocessing_context="spawn" if workers > 0 else None,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    # ----- optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _adamw(self.net, self.cfg)

    def on_fit_start(self) -> None:
        if self.cfg.ema_on_cpu:
            self.ema_net.to("cpu")
        state = self.resume_state
        if state is None:
            return
        self.optimizers(use_pl_optimizer=False).load_state_dict(state["optimizer"])
        scaler = self._scaler()
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.resume_state = None

    def _scaler(self) -> Any:
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _loss(self, batch: Sequence[Tensor]) -> Tensor:
        audio, class_index, noise, t, drop = batch  # (B, C, T), (B,), (B, C, T), (B,), (B,)
        class_id = None
        if self.model_config.conditional:
            null = torch.full_like(class_index, self.model_config.num_classes)
            class_id = torch.where(drop, null, class_index)
        return v_loss(self.net, audio, noise, t, class_id=class_id).mean()

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        cfg = self.cfg
        opt = self.optimizers()
        loss = self._loss(batch)
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss.detach())), all=True)
        if finite:
            self.manual_backward(loss / cfg.accumulate)
            self._window_loss += float(loss.detach()) / cfg.accumulate
        else:
            self._window_bad = True
        self._micro += 1
        if self._micro % cfg.accumulate != 0:
            return
        if not self._window_bad:
            self._window_bad = not self._optimizer_step(opt)
        if self._window_bad:
            opt.zero_grad(set_to_none=True)
            self.bad_in_a_row += 1
            msg = f"step {self.step + 1}: non-finite loss or gradients; step skipped ({self.bad_in_a_row} in a row)"
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
            if self.bad_in_a_row >= cfg.max_bad_steps:
                ckpt = self.run_dir / "checkpoints" / "last.ckpt"
                kept = (
                    f"the last good checkpoint {ckpt} is kept"
                    if ckpt.is_file()
                    else "no checkpoint was written"
                )
                raise DrumdiffError(
                    f"stopped after {self.bad_in_a_row} non-finite losses in a row at step {self.step + 1}; "
                    f"{kept} (try a lower --lr or --precision 32)"
                )
        else:
            self.bad_in_a_row = 0
            self.last_loss = self._window_loss
        self.step += 1
        self._window_bad, self._window_loss = False, 0.0
        self._after_step()

    def _optimizer_step(self, opt: Any) -> bool:
        """Warm-up LR, clip, step, EMA. Returns False when the gradients were not finite (no update)."""
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (self.step + 1) / max(1, cfg.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        if self._scaler() is None:
            norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm):
                return False
        # with a GradScaler, clipping happens in on_before_optimizer_step (after unscaling) and the
        # scaler itself skips steps whose gradients overflowed.
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = ema_beta(self.ema_updates, beta=cfg.ema_beta, power=cfg.ema_power)
        ema_update(self.ema_net, self.net, decay=decay)
        self.ema_updates += 1
        return True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._scaler() is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)

    # ----- periodic work, rank 0 only (no collectives inside)
    def _after_step(self) -> None:
        cfg = self.cfg
        last = self.step >= cfg.max_steps
        now = time.monotonic()
        if cfg.checkpoint_every > 0:
            do_checkpoint = self.step % cfg.checkpoint_every == 0
        else:
            do_checkpoint = now - self._last_checkpoint_time >= DEFAULT_CHECKPOINT_SECONDS
        if cfg.preview_every > 0:
            do_preview = self.step % cfg.preview_every == 0
        else:
            do_preview = cfg.preview_every == 0 and now - self._last_preview_time >= DEFAULT_PREVIEW_SECONDS
        if self.trainer.is_global_zero:
            self._log({"loss": self.last_loss, "lr": self.optimizers().param_groups[0]["lr"]})
            if do_checkpoint or last:
                self.validate_now()
                self.save_checkpoint()
            if (do_preview or (last and cfg.preview_every >= 0)) and cfg.preview_count > 0:
                self.preview()
        if do_checkpoint or last:
            self._last_checkpoint_time = time.monotonic()
        if do_preview:
            self._last_preview_time = time.monotonic()
        if last:
            self.trainer.should_stop = True

    def _log(self, metrics: dict[str, float]) -> None:
        logger = self.logger
        if logger is not None:
            logger.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=self.step)

    @torch.no_grad()
    def validation_loss(self, net: nn.Module) -> float:
        """Mean v-loss over the val clips x the fixed t grid, with noise fixed per clip (fp32)."""
        dataset = self.val_dataset
        if dataset is None:
            return float("nan")
        was_training = net.training
        net.eval()
        count = min(len(dataset), self.cfg.val_items)  # type: ignore[arg-type]
        total, n = 0.0, 0
        chunk = max(1, self.cfg.batch_size)
        device = self.device
        for start in range(0, count, chunk):
            rows = []
            for i in range(start, min(count, start + chunk)):
                audio, class_index = dataset[i]
                g = torch.Generator().manual_seed(_key_seed("val", VAL_SEED, i))
                rows.append((audio, class_index, torch.randn(audio.shape, generator=g)))
            audio = torch.stack([r[0] for r in rows]).to(device)  # (b, C, T)
            noise = torch.stack([r[2] for r in rows]).to(device)
            classes = torch.tensor([int(r[1]) for r in rows], device=device)
            for t_value in VAL_T:
                t = torch.full((len(rows),), t_value, device=device)
                class_id = classes if self.model_config.conditional else None
                with torch.autocast(device.type, enabled=False):
                    loss = v_loss(net, audio, noise, t, class_id=class_id)
                total += float(loss.sum())
                n += len(rows)
        net.train(was_training)
        return total / max(1, n)

    def validate_now(self) -> None:
        """Validation loss of the EMA and the raw weights at this step, logged and kept in `val_history`."""
        if self.val_history and self.val_history[-1][0] == self.step:
            return
        with self._ema_on_device():
            ema_val = self.validation_loss(self.ema_net)
        raw_val = self.validation_loss(self.net)
        self.val_history.append([self.step, ema_val, raw_val])
        self.last_val = ema_val
        self._log({"val_loss": ema_val, "val_loss_raw": raw_val})

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero and not self.val_history:
            self.validate_now()  # the curve starts at step 0

    # ----- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (loadable with `weights_only=True`)."""
        scaler = self._scaler()
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "samples_seen": self.step * self.cfg.accumulate * self.cfg.batch_size * self.trainer.world_size,
            "ema_updates": self.ema_updates,
            "bad_in_a_row": self.bad_in_a_row,
            "model": _cpu_state(self.net),
            "ema": _cpu_state(self.ema_net),
            "optimizer": self.optimizers(use_pl_optimizer=False).state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": _rng_state(),
            "data_order": {"seed": self.cfg.seed, "next_batch": self.step * self.cfg.accumulate},
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
            "world_size": self.trainer.world_size,
            "class_names": self.class_names,
            "val_history": self.val_history,
            "provenance": _plain(self.provenance),
        }

    def save_checkpoint(self) -> Path:
        """Write `RUN/checkpoints/last.ckpt` atomically and flush the logger; returns the path."""
        path = self.run_dir / "checkpoints" / "last.ckpt"
        write_checkpoint(path, self.checkpoint_state())
        if self.logger is not None:
            self.logger.save()  # the logged curve is on disk whenever a checkpoint is (CSV buffers otherwise)
        return path

    # ----- previews
    @torch.no_grad()
    def preview(self) -> list[Path]:
        """A few clips from the EMA model through the same pipeline as `drumdiff generate`."""
        from drumdiff import audio as audio_io
        from drumdiff.pipeline import DrumPipeline
        from drumdiff.plots import save_clips_png

        was_training = self.ema_net.training
        self.ema_net.eval()
        with self._ema_on_device(), torch.autocast(self.device.type, enabled=False):
            clips, titles = self._preview_clips(
                DrumPipeline.from_network(self.ema_net, self.model_config, class_names=self.class_names)
            )
        self.ema_net.train(was_training)
        folder = self.run_dir / "previews" / f"step-{self.step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        rate = self.model_config.sample_rate
        for i, (clip, title) in enumerate(zip(clips, titles, strict=True)):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", title.split(" ")[0])
            paths.append(audio_io.write(folder / f"{i:02d}-{name}.wav", clip.float().cpu(), rate))
        png = folder.with_suffix(".png")
        stacked = torch.stack([c.float().cpu() for c in clips])  # (N, C, T)
        save_clips_png(png, stacked, sample_rate=rate, titles=titles)
        self._log_media(stacked, titles, png)
        return [*paths, png]

    def _preview_clips(self, pipe: Any) -> tuple[list[Tensor], list[str]]:
        cfg = self.cfg
        clips, titles = [], []
        if self.model_config.conditional:
            for i in range(cfg.preview_count):
                name = self.class_names[i % len(self.class_names)]
                clips.append(pipe.generate(n=1, seed=i, steps=cfg.preview_steps, class_name=name)[0])
                titles.append(f"{name} (seed {i})")
        else:
            out = pipe.generate(n=cfg.preview_count, seed=0, steps=cfg.preview_steps)
            clips = list(out)
            titles = [f"seed {i}" for i in range(cfg.preview_count)]
        return clips, titles

    @contextlib.contextmanager
    def _ema_on_device(self) -> Iterator[None]:
        """With `ema_on_cpu`, bring the EMA copy to the training device for validation and previews."""
        if not self.cfg.ema_on_cpu:
            yield
            return
        self.ema_net.to(self.device)
        try:
            yield
        finally:
            self.ema_net.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _log_media(self, clips: Tensor, titles: list[str], png: Path) -> None:
        logger = self.logger
        if logger is None:
            return
        rate = self.model_config.sample_rate
        try:
            from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

            if isinstance(logger, TensorBoardLogger):
                import matplotlib.image

                writer = logger.experiment
                for i, clip in enumerate(clips):
                    writer.add_audio(f"preview/{i}", clip.mean(0).clamp(-1, 1), self.step, sample_rate=rate)
                writer.add_image("preview/png", matplotlib.image.imread(png), self.step, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                import wandb

                media = {
                    f"preview/{i}": wandb.Audio(c.numpy().T, sample_rate=rate) for i, c in enumerate(clips)
                }
                media["preview/png"] = wandb.Image(str(png))
                logger.experiment.log(media, step=self.step)
        except Exception as error:  # noqa: BLE001 - a logger's trouble must not stop training
            warnings.warn(f"could not log previews: {error}", RuntimeWarning, stacklevel=1)


def _adamw(net: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The training optimizer (also what --memory-budget probes with); one fused kernel on a CPU or GPU."""
    # Fused: one pass over each tensor instead of ~10 (3x faster on a CPU), no per-step temporaries on a GPU.
    fused = True if next(net.parameters()).device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(
        net.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
    )


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _frozen_copy(net: nn.Module) -> nn.Module:
    import copy

    shadow = copy.deepcopy(net)
    shadow.requires_grad_(False)
    shadow.eval()
    return shadow


# ------------------------------------------------------------------------------------- progress bar


class ProgressBar(pl.Callback):
    """One tqdm bar over optimizer steps with loss, validation loss and samples/s (rank 0 only)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: pl.Trainer, module: DiffusionTrainer) -> None:  # type: ignore[override]
        if not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=module.cfg.max_steps, initial=module.step, desc="train", unit="step", dynamic_ncols=True
        )
        self._t0, self._step0 = time.monotonic(), module.step

    def on_train_batch_end(self, trainer: pl.Trainer, module: DiffusionTrainer, *args: Any) -> None:  # type: ignore[override]
        if self.bar is None or module.step == self.bar.n:
            return
        cfg = module.cfg
        elapsed = max(1e-9, time.monotonic() - self._t0)
        samples = (module.step - self._step0) * cfg.batch_size * cfg.accumulate * trainer.world_size
        self.bar.update(module.step - self.bar.n)
        self.bar.set_postfix(
            loss=f"{module.last_loss:.4f}", val=f"{module.last_val:.4f}", sps=f"{samples / elapsed:.2f}"
        )

    def on_train_end(self, trainer: pl.Trainer, module: DiffusionTrainer) -> None:  # type: ignore[override]
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, module)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- memory budget


@dataclass(frozen=True)
class MemoryChoice:
    """What `--memory-budget` chose and the probe measurements behind it."""

    batch_size: int
    accumulate: int
    precision: str
    grad_checkpointing: bool
    peak_bytes: int
    limit_bytes: int
    probes: tuple[tuple[int, bool, int | None], ...]  # (batch, checkpointing, peak bytes or None for OOM)
    reason: str
    ema_on_cpu: bool = False


def _peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found")


def use_expandable_segments() -> None:
    """Let the CUDA allocator grow segments in place, so reserved memory stays close to allocated memory.

    Through PYTORCH_CUDA_ALLOC_CONF for an allocator that has not started yet (a user's own setting wins),
    and through the allocator's settings for one that has.
    """
    if not torch.cuda.is_initialized():
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        return
    with contextlib.suppress(Exception):  # a private API: without it, memory is only less compact
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")


def probe_memory(
    model_config: ModelConfig,
    *,
    budget_bytes: int,
    device: torch.device,
    target_batch: int,
    precision: str | None = None,
    grad_checkpointing: bool | None = None,
    train_config: TrainConfig | None = None,
    log: Any = print,
) -> MemoryChoice:
    """Choose batch size, accumulation, precision and checkpointing by running real training steps.

    Each candidate runs 2 steps (forward, backward, clipping, AdamW, EMA) at the real clip length.
    CUDA: `max_memory_reserved` must stay under budget - CUDA_CONTEXT_BYTES; CPU: the process's peak RSS
    under the budget. Picks the largest batch that fits (no checkpointing when both fit), then accumulation
    so that batch x accumulate reaches `target_batch`.
    """
    cfg = train_config or TrainConfig()
    from drumdiff.nn.unet1d import UNet1d

    reasons = []
    if device.type == "cuda":
        use_expandable_segments()
        limit = budget_bytes - CUDA_CONTEXT_BYTES
        if limit <= 0:
            raise DrumdiffError(
                f"memory budget {format_size(budget_bytes)} leaves nothing after the CUDA context"
            )
        if precision is None:
            bf16 = torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(device)[0] >= 8
            precision = "bf16-mixed" if bf16 else "16-mixed"
            reasons.append(
                f"{precision}: mixed precision halves activation memory"
                + ("" if bf16 else " (no fast bf16 on this GPU)")
            )
        measure = "max_memory_reserved"
    elif device.type == "cpu":
        limit = budget_bytes
        if precision is None:
            precision = "32"
            reasons.append("32-bit: mixed precision is slower than fp32 on most CPUs")
        if not _peak_rss_reset():
            raise DrumdiffError(
                "--memory-budget on CPU needs Linux's /proc/self/clear_refs; set --batch-size instead"
            )
        measure = "peak RSS"
    else:
        raise DrumdiffError(f"--memory-budget cannot probe device {device.type}; set --batch-size instead")

    torch.manual_seed(0)
    net = UNet1d(model_config).to(device)
    # On a GPU the EMA copy lives in host memory: it is needed only for validation, previews and export.
    state: dict[str, Any] = {"net": net, "shadow": _frozen_copy(net).to("cpu")}
    state["opt"] = _adamw(net, cfg)
    autocast_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    shape = (model_config.audio_channels, model_config.length)

    def run_steps(batch: int, checkpointing: bool) -> int | None:
        net, shadow, opt = state["net"], state["shadow"], state["opt"]
        scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        net.grad_checkpointing = checkpointing
        try:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            else:
                _peak_rss_reset()
            for _ in range(2):
                x0 = torch.randn(batch, *shape, device=device)
                noise = torch.randn_like(x0)
                t = torch.rand(batch, device=device)
                class_id = (
                    torch.zeros(batch, dtype=torch.long, device=device) if model_config.conditional else None
                )
                with torch.autocast(
                    device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
                ):
                    loss = v_loss(net, x0, noise, t, class_id=class_id).mean()
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                ema_update(shadow, net, decay=0.99)
                del x0, noise, t, loss
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                return int(torch.cuda.max_memory_reserved(device))
            return _peak_rss()
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            return None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= target_batch]
    if target_batch not in batches:
        batches.append(target_batch)
    options = [grad_checkpointing] if grad_checkpointing is not None else [False, True]
    probes: list[tuple[int, bool, int | None]] = []
    best: tuple[int, bool, int] | None = None
    for checkpointing in options:
        for batch in batches:
            peak = run_steps(batch, checkpointing)
            probes.append((batch, checkpointing, peak))
            shown = "out of memory" if peak is None else format_size(peak)
            log(
                f"memory probe: batch {batch}, checkpointing {'on' if checkpointing else 'off'}: {measure} {shown}"
            )
            if peak is None or peak > limit * PROBE_MARGIN:
                break
            if best is None or batch > best[0]:
                best = (batch, checkpointing, peak)
        if best is not None and best[0] >= target_batch:
            break  # no need to try checkpointing: the whole target batch fits without it
    state.clear()
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if best is None:
        raise DrumdiffError(
            f"memory budget {format_size(budget_bytes)} is too small: even batch 1 with gradient checkpointing "
            f"needs more than {format_size(limit)} ({measure}) for preset layout with length {model_config.length}"
        )
    batch, checkpointing, peak = best
    accumulate = max(1, math.ceil(target_batch / batch))
    if checkpointing and False in options:
        reasons.append("gradient checkpointing on: without it a larger batch does not fit")
    elif not checkpointing:
        reasons.append("gradient checkpointing off: not needed, and it costs up to twice the step time")
    reasons.append(
        f"batch {batch} is the largest that fits ({measure} {format_size(peak)} <= {PROBE_MARGIN:.0%} of "
        f"{format_size(limit)})"
    )
    if accumulate > 1:
        reasons.append(f"accumulate {accumulate} to reach an effective batch of {batch * accumulate}")
    return MemoryChoice(
        batch_size=batch,
        accumulate=accumulate,
        precision=precision,
        grad_checkpointing=checkpointing,
        peak_bytes=peak,
        limit_bytes=limit,
        probes=tuple(probes),
        reason="; ".join(reasons),
        ema_on_cpu=device.type == "cuda",
    )


# ------------------------------------------------------------------------------------ the whole run


@dataclass(frozen=True)
class TrainRequest:
    """What `drumdiff train` was asked: flags left None take defaults (or, on --resume, the checkpoint's)."""

    data_dir: Path
    run_dir: Path
    overrides: dict[str, Any]
    resume: bool = False
    overwrite: bool = False
    init_from: str | None = None
    memory_budget: str | None = None


# Flags that may change on --resume without breaking the run (the rest come from the checkpoint).
RESUMABLE_OVERRIDES = ("max_steps", "checkpoint_every", "preview_every", "logger", "num_workers")


def _make_logger(name: str, run_dir: Path) -> Any:
    from lightning.pytorch import loggers

    if name == "none":
        return False
    if name == "tensorboard":
        return loggers.TensorBoardLogger(
            save_dir=str(run_dir), name="logs", version="", default_hp_metric=False
        )
    if name == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name="logs", version="")
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError as error:
            raise DrumdiffError("--logger wandb needs the wandb package: pip install wandb") from error
        return loggers.WandbLogger(project="drumdiff", save_dir=str(run_dir), name=run_dir.name)
    raise DrumdiffError(f"unknown logger {name!r}; choose tensorboard, wandb, csv or none")


def _load_model_file(model_path: str) -> Any:
    from drumdiff.modelfile import load_model_file

    if not Path(model_path).is_file():
        raise DrumdiffError(f"--init-from: model file {model_path} does not exist")
    return load_model_file(model_path, device="cpu")


def _init_weights(
    net: nn.Module, loaded: Any, model_path: str, model_config: ModelConfig, log: Any
) -> dict[str, Any]:
    """Load a model file into `net`: same layout required; class embeddings may start fresh."""
    from drumdiff.nn.unet1d import UNet1d

    source = loaded.net.state_dict()
    target = net.state_dict()
    # Names that exist only because of class conditioning (or change shape with it) may start fresh.
    plain = UNet1d(model_config.replace(num_classes=0)).state_dict()
    class_keys = {k for k in target if k not in plain or plain[k].shape != target[k].shape}
    class_keys |= {k for k in source if k not in plain}
    mismatched = sorted(
        k
        for k in set(source) | set(target)
        if k not in class_keys and (k not in source or k not in target or source[k].shape != target[k].shape)
    )
    if mismatched:
        shown = ", ".join(mismatched[:8]) + (
            f" and {len(mismatched) - 8} more" if len(mismatched) > 8 else ""
        )
        raise DrumdiffError(
            f"--init-from {model_path}: its layout differs from the {model_config.channels} layout being trained "
            f"(mismatching weights: {shown}); pick the matching --preset"
        )
    fresh = sorted(
        k for k in class_keys if k not in source or k not in target or source[k].shape != target[k].shape
    )
    state = {k: v for k, v in source.items() if k in target and k not in fresh}
    net.load_state_dict(state, strict=False)
    if fresh and model_config.conditional:
        log(
            f"--init-from {model_path}: the model has no matching class embedding; "
            f"class embeddings for {model_config.num_classes} classes start fresh"
        )
    elif fresh:
        log(
            f"--init-from {model_path}: training an unconditional model; the file's class embedding is dropped"
        )
    return {"init_from": str(model_path), "init_from_metadata": _plain(loaded.metadata)}


def _plain(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON through a temp file and a rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _probe_device() -> torch.device:
    """The device `--memory-budget` probes: the CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _is_rank_zero() -> bool:
    """True in the process that prints and writes RUN/config.json (plain, Lightning DDP, torchrun, SLURM)."""
    return all(
        int(os.environ.get(var, "0") or 0) == 0 for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")
    )


def _check_train_config(cfg: TrainConfig) -> None:
    """Refuse settings that no run can use, naming the flag, before any probing or training."""
    for name in ("max_steps", "batch_size", "accumulate", "devices", "num_nodes"):
        if getattr(cfg, name) < 1:
            raise DrumdiffError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.precision not in ("32", "16-mixed", "bf16-mixed"):
        raise DrumdiffError(f"--precision {cfg.precision!r}: choose 32, 16-mixed or bf16-mixed")
    if cfg.strategy not in ("auto", "ddp"):
        raise DrumdiffError(f"--strategy {cfg.strategy!r}: choose auto or ddp")


def _make_trainer(cfg: TrainConfig, run_dir: Path, *, callbacks: Sequence[pl.Callback]) -> pl.Trainer:
    """The Lightning Trainer for `DiffusionTrainer`, which does its own stopping, progress bar, checkpoints,
    validation and data sharding: Lightning's versions of those are switched off.
    """
    strategy: Any = cfg.strategy
    if cfg.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    return pl.Trainer(
        accelerator="auto",
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=cfg.precision,
        logger=_make_logger(cfg.logger, run_dir),
        callbacks=[ProgressBar(), *callbacks],
        max_epochs=-1,
        max_steps=-1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        log_every_n_steps=1,
    )


def _choose_by_memory(
    request: TrainRequest, cfg: TrainConfig, model_config: ModelConfig, info: DataInfo, log: Any
) -> tuple[TrainConfig, MemoryChoice]:
    """--memory-budget: probe real steps on one device and return `cfg` with the chosen batch layout.

    Flags the user set (--batch-size as the target, --precision, --grad-checkpointing, --accumulate) win.
    """
    budget = parse_size(str(request.memory_budget))
    if cfg.devices * cfg.num_nodes > 1:
        raise DrumdiffError(
            "--memory-budget probes a single device; for several processes run it once with --devices 1 "
            "and pass the --batch-size, --accumulate, --precision and checkpointing it prints"
        )
    device = _probe_device()
    target = min(request.overrides.get("batch_size") or 16, info.num_train)
    log(f"memory budget {format_size(budget)} on {device.type}: probing real training steps ...")
    memory_choice = probe_memory(
        model_config,
        budget_bytes=budget,
        device=device,
        target_batch=target,
        precision=request.overrides.get("precision"),
        grad_checkpointing=request.overrides.get("grad_checkpointing"),
        train_config=cfg,
        log=log,
    )
    log(
        f"memory budget chose batch {memory_choice.batch_size} x accumulate {memory_choice.accumulate}, "
        f"precision {memory_choice.precision}, gradient checkpointing "
        f"{'on' if memory_choice.grad_checkpointing else 'off'}: {memory_choice.reason}"
    )
    cfg = dataclasses.replace(
        cfg,
        batch_size=memory_choice.batch_size,
        accumulate=request.overrides.get("accumulate") or memory_choice.accumulate,
        precision=memory_choice.precision,
        grad_checkpointing=memory_choice.grad_checkpointing,
        ema_on_cpu=memory_choice.ema_on_cpu,
    )
    return cfg, memory_choice


def train(
    request: TrainRequest, *, callbacks: Sequence[pl.Callback] = (), log: Any = None
) -> DiffusionTrainer:
    """Run (or resume) training as `drumdiff train` does; returns the finished LightningModule."""
    from drumdiff.nn.unet1d import UNet1d

    if log is None:

        def log(message: str) -> None:
            if _is_rank_zero():
                print(message, file=sys.stderr, flush=True)

    info = inspect_data_dir(request.data_dir)
    run_dir = request.run_dir
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    overrides = {k: v for k, v in request.overrides.items() if v is not None}

    resume_state = None
    loaded = None
    if request.resume:
        if request.overwrite:
            raise DrumdiffError("--resume and --overwrite contradict each other; choose one")
        if request.init_from:
            raise DrumdiffError(
                "--init-from cannot be combined with --resume (the checkpoint has the weights)"
            )
        if ckpt_path.parent.is_dir():
            _clean_temp_files(ckpt_path.parent)
        if not ckpt_path.is_file():
            raise DrumdiffError(f"--resume: {ckpt_path} does not exist; start a new run without --resume")
        resume_state = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(resume_state["train_config"])
        changed = {
            k: v for k, v in overrides.items() if k not in RESUMABLE_OVERRIDES and getattr(saved, k) != v
        }
        if changed:
            log(
                f"--resume: keeping the run's own settings, ignoring {', '.join(f'--{k}' for k in sorted(changed))}"
            )
        cfg = dataclasses.replace(saved, **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES})
        model_config = ModelConfig.from_dict(resume_state["model_config"])
        class_names = list(resume_state["class_names"])
        if class_names != info.class_names:
            raise DrumdiffError(
                f"--resume: {request.data_dir} has classes {info.class_names}, the run was trained on {class_names}"
            )
        if cfg.devices * cfg.num_nodes != resume_state.get("world_size", 1):
            log(
                "--resume: the number of processes changed; the data order continues but is no longer bit-exact"
            )
    else:
        if ckpt_path.parent.is_dir() and any(ckpt_path.parent.iterdir()) and not request.overwrite:
            raise DrumdiffError(
                f"{run_dir} already has checkpoints; use --resume to continue it or --overwrite to start over"
            )
        if request.overwrite:
            for sub in ("checkpoints", "previews", "logs"):
                shutil.rmtree(run_dir / sub, ignore_errors=True)
        cfg = TrainConfig(**overrides)
        preset = cfg.preset
        loaded = _load_model_file(request.init_from) if request.init_from else None
        if loaded is not None and "preset" not in overrides:
            base, preset = loaded.config, f"layout of {request.init_from}"
            cfg = dataclasses.replace(cfg, preset=preset)
        else:
            try:
                base = load_preset(preset)
            except ValueError as error:
                raise DrumdiffError(str(error)) from error
        num_classes = len(info.class_names) if len(info.class_names) > 1 else 0
        try:
            model_config = base.replace(
                audio_channels=info.channels,
                sample_rate=info.sample_rate,
                length=info.length,
                num_classes=num_classes,
            )
        except ValueError as error:
            raise DrumdiffError(f"{request.data_dir}: {error} (preset {preset})") from error
        class_names = info.class_names

    _check_train_config(cfg)

    world = cfg.devices * cfg.num_nodes
    memory_choice = None
    if request.memory_budget and resume_state is None:
        cfg, memory_choice = _choose_by_memory(request, cfg, model_config, info, log)

    if cfg.batch_size * world > info.num_train:
        raise DrumdiffError(
            f"batch size {cfg.batch_size}{f' x {world} processes' if world > 1 else ''} is larger than the "
            f"{info.num_train} training clips in {request.data_dir}; use --batch-size {max(1, info.num_train // world)} "
            "or less"
        )

    torch.manual_seed(cfg.seed)
    net = UNet1d(model_config)
    net.grad_checkpointing = cfg.grad_checkpointing
    provenance: dict[str, Any] = {
        "drumdiff_version": __version__,
        "torch_version": str(torch.__version__),
        "lightning_version": str(pl.__version__),
        "data_dir": str(request.data_dir.resolve()),
        "run_dir": str(run_dir.resolve()),
        "classes": class_names,
        "num_train": info.num_train,
        "num_val": info.num_val,
    }
    if resume_state is not None:
        provenance = {**resume_state.get("provenance", {}), **provenance}
    elif loaded is not None:
        provenance.update(_init_weights(net, loaded, str(request.init_from), model_config, log))

    train_set = _open_split(info.root, "train")
    val_set = _open_split(info.root, "val") if info.num_val else None
    if val_set is None:
        log(f"{request.data_dir} has no val clips; the validation loss uses the first training clips instead")
        val_set = train_set

    module = DiffusionTrainer(
        net,
        model_config=model_config,
        train_config=cfg,
        class_names=class_names,
        run_dir=run_dir,
        val_dataset=val_set,
        train_dataset=train_set,
        provenance=provenance,
    )
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        module.ema_net.load_state_dict(resume_state["ema"])
        module.step = int(resume_state["step"])
        module.ema_updates = int(resume_state["ema_updates"])
        module.bad_in_a_row = int(resume_state["bad_in_a_row"])
        module.val_history = [list(v) for v in resume_state["val_history"]]
        if module.val_history:
            module.last_val = module.val_history[-1][1]
        module.resume_state = resume_state
        if module.step >= cfg.max_steps:
            log(f"{ckpt_path} is already at step {module.step} (--max-steps {cfg.max_steps}); nothing to do")
            return module
        log(f"resuming {run_dir} at step {module.step}")

    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_rank_zero():
        record = {
            "model": model_config.to_dict(),
            "train": cfg.to_dict(),
            "data": {
                "dir": str(request.data_dir),
                "classes": class_names,
                "train": info.num_train,
                "val": info.num_val,
            },
            "init_from": request.init_from,
            "memory_budget": request.memory_budget,
            "memory_choice": dataclasses.asdict(memory_choice) if memory_choice else None,
            "resumed_at_step": module.step if resume_state is not None else None,
            "command": sys.argv,
            "provenance": provenance,
        }
        _write_json(run_dir / "config.json", record)
        kind = (
            f"class-conditional ({len(class_names)} classes, guidance dropout {cfg.cfg_dropout})"
            if model_config.conditional
            else "unconditional"
        )
        log(
            f"training {kind} preset {cfg.preset}: {sum(p.numel() for p in net.parameters()):,} parameters, "
            f"{info.num_train} train / {info.num_val} val clips, batch {cfg.batch_size} x {cfg.accumulate} x {world}, "
            f"precision {cfg.precision}, run folder {run_dir}"
        )

    trainer = _make_trainer(cfg, run_dir, callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|infinite|inf\\b).*")
        warnings.filterwarnings(
            "ignore", message=".*module\\(s\\) in eval mode.*"
        )  # the EMA copy, on purpose
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(module)
    if trainer.is_global_zero and module.step >= cfg.max_steps:
        log(f"done: step {module.step}, checkpoint {ckpt_path}")
    return module


# ------------------------------------------------------------------------------------------- export


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, fp16: bool = False) -> Path:
    """EMA weights of a run (RUN folder or .ckpt) -> an inference `.safetensors` model file."""
    from drumdiff.modelfile import save_model_file

    source = Path(source)
    ckpt = source / "checkpoints" / "last.ckpt" if source.is_dir() else source
    if source.is_dir() and not ckpt.is_file():
        raise DrumdiffError(f"{source} has no checkpoints/last.ckpt; train first or name a .ckpt file")
    state = load_checkpoint(ckpt)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise DrumdiffError(f"output {out} must end in .safetensors")
    provenance = {
        **state.get("provenance", {}),
        "checkpoint": str(ckpt.resolve()),
        "step": int(state["step"]),
        "samples_seen": int(state.get("samples_seen", 0)),
        "val_loss": state["val_history"][-1][1] if state.get("val_history") else None,
        "train_config": state["train_config"],
        "weights": "ema",
    }
    save_model_file(
        out,
        state_dict=state["ema"],
        config=ModelConfig.from_dict(state["model_config"]),
        class_names=list(state["class_names"]),
        provenance=provenance,
        fp16=fp16,
    )
    return out
