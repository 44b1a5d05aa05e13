"""The Lightning module: manual optimization around `TrainStep`, periodic checkpoints, validation, previews.

Lightning runs the loop, the devices, DDP and the logger; what a step does is `drumdiff.training.step`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from drumdiff.config import ModelConfig
from drumdiff.errors import DrumdiffError
from drumdiff.training import checkpoint
from drumdiff.training.config import DEFAULT_CHECKPOINT_SECONDS, DEFAULT_PREVIEW_SECONDS, TrainConfig
from drumdiff.training.step import (
    TrainStep,
    Update,
    batch_loss,
    crop_batch,
    ema_beta,
    frozen_copy,
    make_adamw,
    validation_loss,
)
from drumdiff.training.stream import StreamBatchSampler, TrainItems


class DiffusionTrainer(pl.LightningModule):
    """v-objective training of a `UNet1d`, manual optimization so that every step is explicit.

    One optimizer step = `accumulate` micro-batches. A non-finite loss (decided on all ranks together)
    skips the whole step; `max_bad_steps` of them in a row stop the run with a DrumdiffError.
    Mixed precision (autocast, GradScaler) is the step's own: the Trainer runs at "32-true".
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
        self.ema_net = frozen_copy(net)
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
        self.train_step: TrainStep | None = None  # built in on_fit_start, once the optimizer exists
        self._micro = 0
        self._window_bad = False
        self._window_loss = 0.0
        self._last_checkpoint_time = time.monotonic()
        self._last_preview_time = time.monotonic()
        # Ctrl-C in a single-process run sets stop_requested (drumdiff.training.run): the step finishes, a
        # checkpoint is written and the run stops at `stopped_at`.
        self.stop_requested = False
        self.stopped_at: int | None = None

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
            labels=getattr(self.train_dataset, "labels", None),
            class_balance=cfg.class_balance,
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
        return make_adamw(self.net, self.cfg)

    def on_fit_start(self) -> None:
        if self.cfg.ema_on_cpu:
            self.ema_net.to("cpu")
        self.train_step = TrainStep(
            self.net,
            self.optimizers(use_pl_optimizer=False),
            shadow=self.ema_net,
            precision=self.cfg.precision,
            grad_clip=self.cfg.grad_clip,
            device_type=self.device.type,
            backward=self.manual_backward,  # Lightning's: DDP's gradient sync under manual optimization
        )
        state = self.resume_state
        if state is None:
            return
        self.train_step.optimizer.load_state_dict(state["optimizer"])
        self.train_step.load_state_dict(state.get("scaler") or {})
        checkpoint.set_rng_state(state["rng"])
        self.resume_state = None

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        cfg, step = self.cfg, self.train_step
        assert step is not None
        num_classes = self.model_config.num_classes if self.model_config.conditional else 0
        if cfg.crop_length and self.step < cfg.crop_steps:
            batch = crop_batch(batch, cfg.crop_length)
        loss = step.loss(
            lambda: batch_loss(
                self.net,
                batch,
                num_classes=num_classes,
                loss_weight=cfg.loss_weight,
                min_snr_gamma=cfg.min_snr_gamma,
                log_snr_shift=cfg.log_snr_shift,
                quiet_weight=cfg.quiet_weight,
                sigma_data=self.model_config.sigma_data,
                skip_scale=self.model_config.skip_scale,
            )
        )
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss.detach())), all=True)
        if finite:
            step.backward(loss, scale=1.0 / cfg.accumulate)
            self._window_loss += float(loss.detach()) / cfg.accumulate
        else:
            self._window_bad = True
        self._micro += 1
        if self._micro % cfg.accumulate != 0:
            return
        if not self._window_bad:
            lr = cfg.learning_rate(self.step)
            decay = ema_beta(self.ema_updates, beta=cfg.ema_beta, power=cfg.ema_power)
            update = step.update(ema_decay=decay, lr=lr)
            self._window_bad = update is Update.NON_FINITE
            if update is Update.APPLIED:
                self.ema_updates += 1
        if self._window_bad:
            step.optimizer.zero_grad(set_to_none=True)
            self.bad_in_a_row += 1
            msg = f"step {self.step + 1}: non-finite loss or gradients; step skipped ({self.bad_in_a_row} in a row)"
            warnings.warn(msg, RuntimeWarning, stacklevel=1)
            if self.bad_in_a_row >= cfg.max_bad_steps:
                ckpt = checkpoint.checkpoint_path(self.run_dir)
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
        stop = self.stop_requested and not last
        if self.trainer.is_global_zero:
            self._log({"loss": self.last_loss, "lr": self.optimizers().param_groups[0]["lr"]})
            if do_checkpoint or last or stop:
                self.validate_now()
                self.save_checkpoint()
            if (do_preview or (last and cfg.preview_every >= 0)) and cfg.preview_count > 0 and not stop:
                self.preview()
        if do_checkpoint or last:
            self._last_checkpoint_time = time.monotonic()
        if do_preview:
            self._last_preview_time = time.monotonic()
        if stop:
            self.stopped_at = self.step
        if last or stop:
            self.trainer.should_stop = True

    def _log(self, metrics: dict[str, float]) -> None:
        logger = self.logger
        if logger is not None:
            logger.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=self.step)

    def _val_loss(self, net: nn.Module) -> float:
        """Fixed-noise v-loss of `net` on the val clips (`drumdiff.training.step.validation_loss`)."""
        if self.val_dataset is None:
            return float("nan")
        return validation_loss(
            net,
            self.val_dataset,
            items=self.cfg.val_items,
            batch_size=self.cfg.batch_size,
            conditional=self.model_config.conditional,
            device=self.device,
            sigma_data=self.model_config.sigma_data,
            skip_scale=self.model_config.skip_scale,
        )

    def validate_now(self) -> None:
        """Validation loss of the EMA and the raw weights at this step, logged and kept in `val_history`."""
        if self.val_history and self.val_history[-1][0] == self.step:
            return
        with self._ema_on_device():
            ema_val = self._val_loss(self.ema_net)
        raw_val = self._val_loss(self.net)
        self.val_history.append([self.step, ema_val, raw_val])
        self.last_val = ema_val
        self._log({"val_loss": ema_val, "val_loss_raw": raw_val})

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero and not self.val_history:
            self.validate_now()  # the curve starts at step 0

    # ----- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (loadable with `weights_only=True`)."""
        assert self.train_step is not None
        return {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "version": checkpoint.CHECKPOINT_VERSION,
            "step": self.step,
            "samples_seen": self.step * self.cfg.accumulate * self.cfg.batch_size * self.trainer.world_size,
            "ema_updates": self.ema_updates,
            "bad_in_a_row": self.bad_in_a_row,
            "model": checkpoint.cpu_state(self.net),
            "ema": checkpoint.cpu_state(self.ema_net),
            "optimizer": self.train_step.optimizer.state_dict(),
            "scaler": self.train_step.state_dict(),
            "rng": checkpoint.rng_state(),
            "data_order": {"seed": self.cfg.seed, "next_batch": self.step * self.cfg.accumulate},
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
            "world_size": self.trainer.world_size,
            "class_names": self.class_names,
            "val_history": self.val_history,
            "provenance": checkpoint.plain(self.provenance),
        }

    def save_checkpoint(self) -> Path:
        """Write `RUN/checkpoints/last.ckpt` atomically and flush the logger; returns the path."""
        path = checkpoint.checkpoint_path(self.run_dir)
        checkpoint.write_checkpoint(path, self.checkpoint_state())
        if self.logger is not None:
            self.logger.save()  # the logged curve is on disk whenever a checkpoint is (CSV buffers otherwise)
        return path

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Weights, EMA, counters and history from a checkpoint; optimizer, scaler and RNG at fit start."""
        self.net.load_state_dict(state["model"])
        self.ema_net.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.ema_updates = int(state["ema_updates"])
        self.bad_in_a_row = int(state["bad_in_a_row"])
        self.val_history = [list(v) for v in state["val_history"]]
        if self.val_history:
            self.last_val = self.val_history[-1][1]
        self.resume_state = state

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
                clips.append(pipe.generate(n=1, seed=i, class_name=name, steps=cfg.preview_steps)[0])
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


class ProgressBar(pl.Callback):
    """Progress over optimizer steps with loss, validation loss and samples/s (rank 0 only): a bar on a
    terminal, a plain line about every 10 s in a log (`drumdiff.progress.Progress`)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: pl.Trainer, module: DiffusionTrainer) -> None:  # type: ignore[override]
        if not trainer.is_global_zero:
            return
        from drumdiff.progress import Progress

        self.bar = Progress(module.cfg.max_steps, initial=module.step, desc="train", unit="step", leave=True)
        self._t0, self._step0 = time.monotonic(), module.step

    def on_train_batch_end(self, trainer: pl.Trainer, module: DiffusionTrainer, *args: Any) -> None:  # type: ignore[override]
        if self.bar is None or module.step == self.bar.n:
            return
        cfg = module.cfg
        elapsed = max(1e-9, time.monotonic() - self._t0)
        samples = (module.step - self._step0) * cfg.batch_size * cfg.accumulate * trainer.world_size
        self.bar.set_postfix(
            loss=f"{module.last_loss:.4f}", val=f"{module.last_val:.4f}", sps=f"{samples / elapsed:.2f}"
        )
        self.bar.update(module.step - self.bar.n)

    def on_train_end(self, trainer: pl.Trainer, module: DiffusionTrainer) -> None:  # type: ignore[override]
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, module)  # type: ignore[arg-type]


class InterruptWatch(pl.Callback):
    """Notes whether Lightning's fit ended on a KeyboardInterrupt (which Lightning turns into exit 1)."""

    interrupted = False

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
