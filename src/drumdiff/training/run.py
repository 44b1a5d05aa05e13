"""`drumdiff train`: plan the run (fresh, resume or init-from), build it, run it on Lightning."""

from __future__ import annotations

import csv
import dataclasses
import math
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from drumdiff import __version__
from drumdiff.config import ModelConfig, load_preset
from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path, write_json
from drumdiff.training import checkpoint, console
from drumdiff.training.config import TrainConfig, format_size, parse_size
from drumdiff.training.memory import MemoryChoice, probe_memory
from drumdiff.training.module import DiffusionTrainer, InterruptWatch, ProgressBar
from drumdiff.training.stream import DataInfo, inspect_data_dir, is_rank_zero, open_split


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


# Flags that may change on --resume without breaking the run (the rest come from the checkpoint). The data
# order and all randomness stay exact; --lr sets the peak learning rate from the resumed step on,
# --decay-steps (with --max-steps) ends a copy of a run with a decay, --class-balance draws the clips from the
# resumed step on with the new weights, and --crop-length/--crop-steps crop the steps before step
# --crop-steps (counted from the run's start).
RESUMABLE_OVERRIDES = (
    "max_steps",
    "checkpoint_every",
    "preview_every",
    "logger",
    "num_workers",
    "lr",
    "decay_steps",
    "class_balance",
    "crop_length",
    "crop_steps",
)


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before a network exists: settings, layout, classes and where the weights start."""

    cfg: TrainConfig
    model_config: ModelConfig
    class_names: list[str]
    info: DataInfo
    resume_state: dict[str, Any] | None = None  # --resume: the checkpoint
    init_model: Any = None  # --init-from: the loaded model file
    memory_choice: MemoryChoice | None = None


def train(
    request: TrainRequest, *, callbacks: Sequence[pl.Callback] = (), log: Any = None
) -> DiffusionTrainer:
    """Run (or resume) training as `drumdiff train` does; returns the finished LightningModule."""
    log = log or _log_on_rank_zero
    plan = plan_run(request, log)
    module = build_run(request, plan, log)
    ckpt_path = checkpoint.checkpoint_path(request.run_dir)
    if module.step >= plan.cfg.max_steps:
        log(f"{ckpt_path} is already at step {module.step} (--max-steps {plan.cfg.max_steps}); nothing to do")
        return module
    resumed_at = module.step if plan.resume_state is not None else None
    watch = InterruptWatch()
    with console.plain_warnings(log), console.quiet_lightning():
        trainer = _make_trainer(
            plan.cfg, request.run_dir, callbacks=[watch, *callbacks], resumed_at=resumed_at, module=module
        )
        try:
            with console.stop_on_ctrl_c(module, world=plan.cfg.devices * plan.cfg.num_nodes, log=log):
                trainer.fit(module)
        except SystemExit:  # Lightning's answer to a KeyboardInterrupt: exit 1 after its own text
            if watch.interrupted:
                raise KeyboardInterrupt(console.resume_hint(request, module, stopped=False)) from None
            raise
    if module.stopped_at is not None:
        raise KeyboardInterrupt(console.resume_hint(request, module, stopped=True))
    if trainer.is_global_zero and module.step >= plan.cfg.max_steps:
        log(f"done: step {module.step}, checkpoint {ckpt_path}")
    return module


def _log_on_rank_zero(message: str) -> None:
    if is_rank_zero():
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- planning


def plan_run(request: TrainRequest, log: Any) -> RunPlan:
    """Check the data and the flags, and settle the run's settings: fresh, --resume or --init-from."""
    info = inspect_data_dir(request.data_dir)
    overrides = {k: v for k, v in request.overrides.items() if v is not None}
    if request.resume:
        plan = _plan_resume(request, info, overrides, log)
    else:
        plan = _plan_fresh(request, info, overrides)
    plan.cfg.check()
    crop, length, factor = plan.cfg.crop_length, plan.model_config.length, plan.model_config.downsampling
    if crop and (crop >= length or crop % factor):
        raise DrumdiffError(
            f"--crop-length {crop} must be shorter than the clips ({length}) and a multiple of the "
            f"layout's downsampling ({factor})"
        )
    if request.memory_budget and plan.resume_state is None:
        cfg, memory_choice = _choose_by_memory(request, plan.cfg, plan.model_config, info, log)
        plan = dataclasses.replace(plan, cfg=cfg, memory_choice=memory_choice)
    world = plan.cfg.devices * plan.cfg.num_nodes
    if plan.cfg.batch_size * world > info.num_train:
        raise DrumdiffError(
            f"batch size {plan.cfg.batch_size}{f' x {world} processes' if world > 1 else ''} is larger than the "
            f"{info.num_train} training clips in {request.data_dir}; use --batch-size {max(1, info.num_train // world)} "
            "or less"
        )
    return plan


def _plan_resume(request: TrainRequest, info: DataInfo, overrides: dict[str, Any], log: Any) -> RunPlan:
    if request.overwrite:
        raise DrumdiffError("--resume and --overwrite contradict each other; choose one")
    if request.init_from:
        raise DrumdiffError("--init-from cannot be combined with --resume (the checkpoint has the weights)")
    ckpt_path = checkpoint.checkpoint_path(request.run_dir)
    if ckpt_path.parent.is_dir():
        checkpoint.clean_temp_files(ckpt_path.parent)
    if not ckpt_path.is_file():
        raise DrumdiffError(f"--resume: {ckpt_path} does not exist; start a new run without --resume")
    state = checkpoint.load_checkpoint(ckpt_path)
    saved = TrainConfig.from_dict(state["train_config"])
    changed = {k: v for k, v in overrides.items() if k not in RESUMABLE_OVERRIDES and getattr(saved, k) != v}
    if changed:
        log(
            f"--resume: keeping the run's own settings, ignoring {', '.join(f'--{k}' for k in sorted(changed))}"
        )
    cfg = dataclasses.replace(saved, **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES})
    class_names = list(state["class_names"])
    if class_names != info.class_names:
        raise DrumdiffError(
            f"--resume: {request.data_dir} has classes {info.class_names}, the run was trained on {class_names}"
        )
    if cfg.devices * cfg.num_nodes != state.get("world_size", 1):
        log("--resume: the number of processes changed; the data order continues but is no longer bit-exact")
    return RunPlan(
        cfg=cfg,
        model_config=ModelConfig.from_dict(state["model_config"]),
        class_names=class_names,
        info=info,
        resume_state=state,
    )


def _plan_fresh(request: TrainRequest, info: DataInfo, overrides: dict[str, Any]) -> RunPlan:
    ckpt_dir = checkpoint.checkpoint_path(request.run_dir).parent
    if ckpt_dir.is_dir() and any(ckpt_dir.iterdir()) and not request.overwrite:
        raise DrumdiffError(
            f"{request.run_dir} already has checkpoints; use --resume to continue it or --overwrite to start over"
        )
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
    return RunPlan(
        cfg=cfg, model_config=model_config, class_names=info.class_names, info=info, init_model=loaded
    )


def _load_model_file(model_path: str) -> Any:
    from drumdiff.modelfile import load_model_file

    if not Path(model_path).is_file():
        what = "is a folder, not a model file" if Path(model_path).is_dir() else "does not exist"
        raise DrumdiffError(f"--init-from: model file {model_path} {what}")
    return load_model_file(model_path, device="cpu")


def _probe_device() -> torch.device:
    """The device `--memory-budget` probes: the CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


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


# ------------------------------------------------------------------------------------------- building


def build_run(request: TrainRequest, plan: RunPlan, log: Any) -> DiffusionTrainer:
    """The network (fresh, from the model file or from the checkpoint), the datasets and the module;
    clears the run folder on --overwrite and writes RUN/config.json."""
    from drumdiff.nn.unet1d import UNet1d

    cfg, info, run_dir = plan.cfg, plan.info, request.run_dir
    if request.overwrite:
        for sub in ("checkpoints", "previews", "logs"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    torch.manual_seed(cfg.seed)
    net = UNet1d(plan.model_config)
    net.grad_checkpointing = cfg.grad_checkpointing
    provenance: dict[str, Any] = {
        "drumdiff_version": __version__,
        "torch_version": str(torch.__version__),
        "lightning_version": str(pl.__version__),
        "data_dir": str(request.data_dir.resolve()),
        "run_dir": str(run_dir.resolve()),
        "classes": plan.class_names,
        "num_train": info.num_train,
        "num_val": info.num_val,
    }
    if plan.resume_state is not None:
        provenance = {**plan.resume_state.get("provenance", {}), **provenance}
    elif plan.init_model is not None:
        provenance.update(_init_weights(net, plan.init_model, str(request.init_from), plan.model_config, log))

    train_set = open_split(info.root, "train")
    val_set = open_split(info.root, "val") if info.num_val else None
    if val_set is None:
        log(f"{request.data_dir} has no val clips; the validation loss uses the first training clips instead")
        val_set = train_set
    module = DiffusionTrainer(
        net,
        model_config=plan.model_config,
        train_config=cfg,
        class_names=plan.class_names,
        run_dir=run_dir,
        val_dataset=val_set,
        train_dataset=train_set,
        provenance=provenance,
    )
    if plan.resume_state is not None:
        module.load_resume_state(plan.resume_state)
        if module.step >= cfg.max_steps:
            return module
        log(f"resuming {run_dir} at step {module.step}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        _write_run_record(request, plan, module, provenance, log)
    return module


def _write_run_record(
    request: TrainRequest, plan: RunPlan, module: DiffusionTrainer, provenance: dict[str, Any], log: Any
) -> None:
    cfg, info = plan.cfg, plan.info
    record = {
        "model": plan.model_config.to_dict(),
        "train": cfg.to_dict(),
        "data": {
            "dir": str(request.data_dir),
            "classes": plan.class_names,
            "train": info.num_train,
            "val": info.num_val,
        },
        "init_from": request.init_from,
        "memory_budget": request.memory_budget,
        "memory_choice": dataclasses.asdict(plan.memory_choice) if plan.memory_choice else None,
        "resumed_at_step": module.step if plan.resume_state is not None else None,
        "command": sys.argv,
        "provenance": provenance,
    }
    write_json(request.run_dir / "config.json", record)
    kind = (
        f"class-conditional ({len(plan.class_names)} classes, guidance dropout {cfg.cfg_dropout})"
        if plan.model_config.conditional
        else "unconditional"
    )
    world = cfg.devices * cfg.num_nodes
    parameters = sum(p.numel() for p in module.net.parameters())
    log(
        f"training {kind} preset {cfg.preset}: {parameters:,} parameters, "
        f"{info.num_train} train / {info.num_val} val clips, batch {cfg.batch_size} x {cfg.accumulate} x {world}, "
        f"precision {cfg.precision}, run folder {request.run_dir}"
    )


def _init_weights(
    net: nn.Module, loaded: Any, model_path: str, model_config: ModelConfig, log: Any
) -> dict[str, Any]:
    """Load a model file into `net`: same layout required; class embeddings may start fresh."""
    from drumdiff.nn.unet1d import UNet1d

    source = loaded.net.state_dict()
    target = net.state_dict()
    # Names that exist only because of class conditioning (or change shape with it) may start fresh, and so
    # may the position projections (zeros at the start, so they add nothing until trained).
    plain_layout = UNet1d(model_config.replace(num_classes=0, position_features=0)).state_dict()
    optional = {k for k in target if k not in plain_layout or plain_layout[k].shape != target[k].shape}
    optional |= {k for k in source if k not in plain_layout}
    mismatched = sorted(
        k
        for k in set(source) | set(target)
        if k not in optional and (k not in source or k not in target or source[k].shape != target[k].shape)
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
        k for k in optional if k not in source or k not in target or source[k].shape != target[k].shape
    )
    fresh_positions = [k for k in fresh if ".position." in k]
    fresh = [k for k in fresh if ".position." not in k]
    state = {k: v for k, v in source.items() if k in target and k not in fresh}
    net.load_state_dict(state, strict=False)
    units = [
        f"{name} {getattr(loaded.config, name)} -> {getattr(model_config, name)}"
        for name in ("sigma_data", "skip_scale", "output_skip")
        if getattr(loaded.config, name) != getattr(model_config, name)
    ]
    if fresh_positions and model_config.position_features:
        log(f"--init-from {model_path}: the clip-position projections start fresh (at zero)")
    elif fresh_positions:
        log(
            f"--init-from {model_path}: training without clip positions; the file's position projections are dropped"
        )
    if units:
        log(
            f"--init-from {model_path}: the run's parameterisation differs ({', '.join(units)}); the weights "
            "start as a different function, a warm start and not a continuation"
        )
    if fresh and model_config.conditional:
        log(
            f"--init-from {model_path}: the model has no matching class embedding; "
            f"class embeddings for {model_config.num_classes} classes start fresh"
        )
    elif fresh:
        log(
            f"--init-from {model_path}: training an unconditional model; the file's class embedding is dropped"
        )
    return {"init_from": str(model_path), "init_from_metadata": checkpoint.plain(loaded.metadata)}


# -------------------------------------------------------------------------------------------- running


def _make_logger(name: str, run_dir: Path, *, resumed_at: int | None, module: DiffusionTrainer) -> Any:
    """The metrics logger. On --resume every logger keeps the run's history up to the checkpoint's step
    (`resumed_at`) and continues it: what was logged after that step, and lost with the process, is dropped."""
    from lightning.pytorch import loggers

    if name == "none":
        return False
    if name == "tensorboard":
        # purge_step hides the earlier event files' steps after the checkpoint (the new run logs them again)
        purge = {"purge_step": resumed_at + 1} if resumed_at is not None else {}
        return loggers.TensorBoardLogger(
            save_dir=str(run_dir), name="logs", version="", default_hp_metric=False, **purge
        )
    if name == "csv":
        return _history_csv_logger(run_dir, keep_through=-1 if resumed_at is None else resumed_at)
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError as error:
            raise DrumdiffError("--logger wandb needs the wandb package: pip install wandb") from error
        # one W&B run per drumdiff run: its id travels in the checkpoint, so --resume continues the same run
        run_id = module.provenance.setdefault("wandb_run_id", secrets.token_hex(4))
        return loggers.WandbLogger(
            project="drumdiff", save_dir=str(run_dir), name=run_dir.name, id=run_id, resume="allow"
        )
    raise DrumdiffError(f"unknown logger {name!r}; choose tensorboard, wandb, csv or none")


def _history_csv_logger(run_dir: Path, *, keep_through: int) -> Any:
    """Lightning's CSVLogger, except that an existing RUN/logs/metrics.csv is continued, not deleted: its
    rows up to step `keep_through` stay (-1: none, a fresh run)."""
    from lightning.pytorch import loggers
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    class HistoryWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
            self.metrics_keys = _keep_csv_rows(Path(self.metrics_file_path), keep_through)

    class HistoryCSVLogger(loggers.CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = HistoryWriter(log_dir=self.log_dir)
            return self._experiment

    return HistoryCSVLogger(save_dir=str(run_dir), name="logs", version="")


def _keep_csv_rows(path: Path, keep_through: int) -> list[str]:
    """Rewrite a metrics CSV with only its rows of step <= keep_through (atomically); returns its columns."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = [row for row in reader if _csv_step(row) <= keep_through]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return sorted(columns)


def _csv_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return math.inf


def _make_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    callbacks: Sequence[pl.Callback],
    resumed_at: int | None = None,
    module: DiffusionTrainer,
) -> pl.Trainer:
    """The Lightning Trainer for `DiffusionTrainer`, which does its own stopping, progress bar, checkpoints,
    validation, data sharding and mixed precision: Lightning's versions of those are switched off.
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
        precision="32-true",  # autocast and the GradScaler belong to TrainStep (cfg.precision)
        logger=_make_logger(cfg.logger, run_dir, resumed_at=resumed_at, module=module),
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
