"""The resumable training checkpoint (`RUN/checkpoints/last.ckpt`) and export to an inference model file.

A checkpoint is a plain dictionary of tensors and plain values, read with `torch.load(weights_only=True)`
(no pickled code): weights, EMA weights, AdamW state, GradScaler state, step, data-order seed, RNG state,
model and training config, class names, validation history and provenance. No Lightning here: `drumdiff
export` only reads a checkpoint and writes a model file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from drumdiff.config import ModelConfig
from drumdiff.errors import DrumdiffError, ModelFileError
from drumdiff.files import atomic_path, check_format
from drumdiff.modelfile import check_new_file, file_kind, non_finite

CHECKPOINT_FORMAT = "drumdiff-train-checkpoint"
CHECKPOINT_VERSION = 1
TEMP_SUFFIX = ".tmp"  # a checkpoint being written is `.last.ckpt.<random>.tmp` beside it


def checkpoint_path(run_dir: Path) -> Path:
    """Where a run keeps its resumable state: RUN/checkpoints/last.ckpt."""
    return run_dir / "checkpoints" / "last.ckpt"


def _serialize(obj: Any, file: Any) -> None:
    """Write `obj` to an open binary file; tests replace this to simulate a full disk or a kill."""
    torch.save(obj, file)


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file, fsync, rename). A failure leaves the previous checkpoint intact.

    Refuses weights that hold NaN or Inf (the run diverged): the last good checkpoint stays the resumable one.
    """
    bad = [part for part in ("model", "ema") if part in state and non_finite(state[part])]
    if bad:
        kept = f"the last good {path.name} is kept" if path.exists() else "no checkpoint was written"
        raise DrumdiffError(
            f"step {state.get('step')}: the {' and '.join(bad)} weights hold NaN or Inf (training diverged); "
            f"{kept}; start again with a lower --lr"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=TEMP_SUFFIX, fsync=True) as tmp, open(tmp, "wb") as handle:
            _serialize(state, handle)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as a RuntimeError
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise DrumdiffError(
            f"cannot write checkpoint {path}: {_write_failure(path, state, error)}{kept}"
        ) from error


def _write_failure(path: Path, state: dict[str, Any], error: BaseException) -> str:
    """Why a checkpoint write failed, in words ("the disk is full" when it looks like that)."""
    if isinstance(error, OSError):
        return (
            "the disk is full"
            if error.errno in (errno.ENOSPC, errno.EDQUOT)
            else error.strerror or str(error)
        )
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < _tensor_bytes(state):
        return f"the disk is full ({free / 1e6:.0f} MB free)"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"torch could not write it ({first[:120]}; is the disk full?)"


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a nest of dicts and lists: about the size of the checkpoint."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with `torch.load(weights_only=True)`; ModelFileError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    kind = file_kind(path)
    if kind == "safetensors":
        raise ModelFileError(f"{path} is a .safetensors file, not a drumdiff training checkpoint")
    if kind != "torch":
        what = {"empty": "an empty file", "text": "a text file"}.get(kind, "not a PyTorch file")
        raise ModelFileError(f"{path} is not a drumdiff training checkpoint ({what})")
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
    if isinstance(state, dict) and "format" not in state:
        raise ModelFileError(
            f"{path} is not a drumdiff training checkpoint (it has no format); an original "
            "tiny-audio-diffusion checkpoint becomes a model file with `drumdiff convert`"
        )
    check_format(
        state,
        source=path,
        kind="drumdiff training checkpoint",
        format=CHECKPOINT_FORMAT,
        version=CHECKPOINT_VERSION,
        error=ModelFileError,
    )
    return state


def clean_temp_files(folder: Path) -> None:
    """Remove temp files left by a process killed during a checkpoint write."""
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """The global torch (and CUDA) RNG state, for a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """A module's state dict copied to the CPU (checkpoints never hold device tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def plain(value: Any) -> Any:
    """`value` as plain JSON values (anything else as its string), for checkpoints and config.json."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def export_model(
    source: str | os.PathLike, out: str | os.PathLike, *, fp16: bool = False, force: bool = False
) -> Path:
    """EMA weights of a run (RUN folder or .ckpt) -> an inference `.safetensors` model file.

    An existing `out` is replaced only with `force`; weights that hold NaN or Inf are refused.
    """
    from drumdiff.modelfile import save_model_file

    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise DrumdiffError(f"output {out} must end in .safetensors")
    check_new_file(out, force=force)
    ckpt = checkpoint_path(source) if source.is_dir() else source
    if source.is_dir() and not ckpt.is_file():
        raise DrumdiffError(f"{source} has no checkpoints/last.ckpt; train first or name a .ckpt file")
    state = load_checkpoint(ckpt)
    bad = non_finite(state["ema"])
    if bad:
        raise DrumdiffError(
            f"{ckpt}: the EMA weights of step {state['step']} hold NaN or Inf in {len(bad)} tensors "
            f"({', '.join(bad[:3])}): training diverged; nothing exported"
        )
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


def average_models(
    sources: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    weights: list[float] | None = None,
    fp16: bool = False,
    force: bool = False,
) -> Path:
    """The weighted mean of model files of one layout and class list -> a new model file.

    Averaging the weights of runs fine-tuned from one model ("model soups", Wortsman et al. 2022; "stochastic
    weight averaging", Izmailov et al. 2018) often scores better than each run. `weights` (default equal) are
    normalised to sum to 1. Every input is checked before anything is written; an existing `out` is replaced
    only with `force`.
    """
    from drumdiff.files import file_digest
    from drumdiff.modelfile import read_metadata, read_weights, save_model_file
    from drumdiff.nn.unet1d import UNet1d

    paths, out = [Path(p) for p in sources], Path(out)
    if len(paths) < 2:
        raise DrumdiffError(f"averaging needs at least two model files, got {len(paths)}")
    if out.suffix != ".safetensors":
        raise DrumdiffError(f"output {out} must end in .safetensors")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths):
        raise DrumdiffError(f"{len(weights)} weights for {len(paths)} model files; give one weight per file")
    if not all(w >= 0 and w != float("inf") for w in weights) or sum(weights) <= 0:
        raise DrumdiffError(f"weights must be finite, not negative and not all 0, got {weights}")
    check_new_file(out, force=force)
    first = read_metadata(paths[0])
    with torch.device("meta"):  # the names and shapes the layout needs, without allocating weights
        layout = UNet1d(first["config"]).state_dict()
    total = sum(weights)
    mean: dict[str, Tensor] = {}
    inputs = []
    for path, weight in zip(paths, weights, strict=True):
        meta = read_metadata(path)
        for field, what in (("config", "layout (config) differs"), ("class_names", "class names differ")):
            if meta[field] != first[field]:
                raise DrumdiffError(
                    f"{path}: its {what} from {paths[0]}'s; only models of one layout and class list can "
                    "be averaged"
                )
        tensors = read_weights(path, expected=layout)
        for name, tensor in tensors.items():
            share = tensor.double() * (weight / total)  # float64: the mean is rounded once, when saved
            mean[name] = mean[name] + share if name in mean else share
        inputs.append(
            {
                "file": str(path),
                "sha256": file_digest(path),
                "weight": weight / total,
                "provenance": meta["provenance"],
            }
        )
    provenance = {"average_of": inputs}
    save_model_file(
        out,
        state_dict=mean,
        config=first["config"],
        class_names=first["class_names"],
        provenance=provenance,
        fp16=fp16,
    )
    return out
