"""The inference model file: `.safetensors` with EMA weights only and the config as JSON metadata.

Metadata keys (all strings, as safetensors requires):
    format          "drumdiff-model"
    format_version  "1"
    config          ModelConfig as JSON
    class_names     JSON list: the class of each class id for a conditional model; for an unconditional
                    model at most one descriptive name (e.g. "kick" for a converted kick model)
    provenance      JSON object: where the weights came from (training run, data, conversion source, ...)
Nothing in the file is executable. Loading checks the format version, the config, the class names against
the class embedding, every tensor's shape and that every weight is finite, and blames the file for each.

Also here, without importing torch (so that `drumdiff models` is instant): where model files are found
(`list_models`, `resolve_model`) and what kind of file a path holds (`file_kind`).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drumdiff.config import ModelConfig
from drumdiff.errors import DrumdiffError, ModelFileError
from drumdiff.files import atomic_path, check_format

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

FORMAT = "drumdiff-model"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).parent / "weights"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


@dataclass
class LoadedModel:
    """A network ready for inference, with what the file says about it."""

    net: nn.Module
    config: ModelConfig
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# ---------------------------------------------------------------------------------------------- the file


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a `.safetensors` file (tensor table + `__metadata__`), read without torch.

    Raises ModelFileError naming the file when it is missing, empty, truncated or not safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = path.stat().st_size
            if len(head) < 8:
                what = "empty file (0 bytes)" if not head else f"only {len(head)} bytes"
                raise ModelFileError(f"{path}: not a .safetensors model file ({what})")
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER, size - 8):
                raise ModelFileError(
                    f"{path}: not a .safetensors model file ({_what_instead(path, length, size)})"
                )
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error
    except ValueError as error:
        raise ModelFileError(f"{path}: not a .safetensors model file (damaged header: {error})") from error
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a .safetensors model file (its header is not a JSON object)")
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets") or ()) == 2
    ]
    if 8 + length + max(ends, default=0) > size:
        raise ModelFileError(
            f"{path}: truncated .safetensors file ({size} bytes; its header describes "
            f"{8 + length + max(ends)})"
        )
    return header


def _what_instead(path: Path, length: int, size: int) -> str:
    """What a file that is not safetensors looks like, for the message."""
    kind = file_kind(path)
    if kind == "torch":
        return "it is a PyTorch file: `drumdiff export` makes a model file of a training checkpoint, `drumdiff convert` of an original one"
    if kind == "text":
        return "it is a text file"
    return f"damaged or truncated: its header claims {length} bytes, the file has {size}"


def file_kind(path: str | os.PathLike) -> str:
    """What a file holds, from its first bytes: "empty", "safetensors", "torch" (zip or pickle), "text" or
    "unknown". A `.safetensors` whose header does not read is "unknown"."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return "unknown"
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"  # torch.save's zip format, or a (legacy) pickle
    if len(head) > 8 and head[8:9] == b"{":
        try:
            read_header(path)
            return "safetensors"
        except ModelFileError:
            return "unknown"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text" if all(c.isprintable() or c.isspace() for c in text) else "unknown"


def check_new_file(path: Path, *, force: bool) -> None:
    """Refuse to replace an existing file unless `force` (`export`, `convert`: never silently)."""
    if path.is_dir():
        raise DrumdiffError(f"{path} is a folder; name the .safetensors file to write")
    if path.exists() and not force:
        raise DrumdiffError(f"{path} already exists; pass --force to replace it")


def save_model_file(
    path: str | os.PathLike,
    *,
    state_dict: dict[str, Tensor],
    config: ModelConfig,
    class_names: list[str] | tuple[str, ...] = (),
    provenance: dict[str, Any] | None = None,
    fp16: bool = False,
) -> Path:
    """Write weights + config atomically (temp file, then rename). Returns the path written.

    Refuses (ModelFileError) weights that hold NaN or Inf, also when fp16 would turn large weights into Inf.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    class_names = list(class_names)
    if config.conditional and len(class_names) != config.num_classes:
        raise ValueError(f"a model of {config.num_classes} classes needs as many names, got {class_names}")
    if not config.conditional and len(class_names) > 1:
        raise ValueError(f"an unconditional model takes at most one class name, got {class_names}")
    dtype = torch.float16 if fp16 else torch.float32
    # safetensors wants contiguous tensors that share no memory: clone each one once.
    tensors = {
        name: t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous().clone()
        for name, t in state_dict.items()
    }
    bad = non_finite(tensors)
    if bad:
        overflow = fp16 and not non_finite(state_dict)
        why = "weights beyond float16's range (export without --fp16)" if overflow else "NaN or Inf weights"
        raise ModelFileError(f"refusing to write {path}: {_tensor_list(bad, len(tensors))} hold {why}")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict()),
        "class_names": json.dumps(class_names),
        "provenance": json.dumps(provenance or {}, default=str),
        "dtype": "float16" if fp16 else "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def non_finite(tensors: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an Inf."""
    import torch

    def finite(t: Tensor) -> bool:
        if not t.is_floating_point() or t.numel() == 0:
            return True
        low, high = torch.aminmax(t)  # both propagate NaN; a few times faster than an isfinite mask
        return bool(torch.isfinite(low) & torch.isfinite(high))

    return [k for k, t in tensors.items() if not finite(t)]


def _tensor_list(names: list[str], total: int) -> str:
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} of {total} weight tensors ({shown})"


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a model file (config, class names, provenance), checked for format and sense.

    Every problem is a ModelFileError naming the file: the config must describe audio drumdiff can write
    and the class names must fit the class embedding.
    """
    path = Path(path)
    raw = read_header(path).get("__metadata__") or {}
    check_format(
        raw,
        source=path,
        kind="drumdiff model file",
        format=FORMAT,
        version=str(FORMAT_VERSION),  # safetensors metadata holds strings only
        version_key="format_version",
        error=ModelFileError,
    )
    version = raw["format_version"]
    try:
        meta = {
            "format": raw["format"],
            "format_version": int(version),
            "config": ModelConfig.from_dict(json.loads(raw["config"])),
            "class_names": json.loads(raw.get("class_names", "[]")),
            "provenance": json.loads(raw.get("provenance", "{}")),
            "dtype": raw.get("dtype", "float32"),
        }
    except (KeyError, ValueError, TypeError) as error:
        raise ModelFileError(f"{path}: damaged model metadata ({error})") from error
    _check_config(meta["config"], source=path)
    meta["class_names"] = _check_class_names(meta["class_names"], meta["config"], source=path)
    return meta


def _check_config(config: ModelConfig, *, source: Path) -> None:
    """Refuse a config that no audio file can come from (e.g. `sample_rate` 0), blaming the model file."""
    from drumdiff.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    checks = {
        "sample_rate": MIN_SAMPLE_RATE <= config.sample_rate <= MAX_SAMPLE_RATE,
        "audio_channels": 1 <= config.audio_channels <= 8,
        "length": config.length >= 1,
    }
    for name, ok in checks.items():
        value = getattr(config, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and ok):
            limits = (
                f" (drumdiff works from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)" if "rate" in name else ""
            )
            raise ModelFileError(f"{source}: damaged model config: {name} {value!r} is impossible{limits}")


def _check_class_names(names: Any, config: ModelConfig, *, source: Path) -> list[str]:
    """The class names, which must be distinct strings, one per class id of a conditional model."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ModelFileError(f"{source}: damaged model metadata: class_names must be a list of names")
    if len(set(names)) != len(names):
        raise ModelFileError(f"{source}: damaged model metadata: class names repeat ({', '.join(names)})")
    if config.conditional and len(names) != config.num_classes:
        raise ModelFileError(
            f"{source}: the model has a class embedding of {config.num_classes} classes but "
            f"{len(names)} class names ({', '.join(names) or 'none'}); the file is damaged"
        )
    if not config.conditional and len(names) > 1:
        raise ModelFileError(
            f"{source}: an unconditional model with {len(names)} class names ({', '.join(names)}); "
            "the file is damaged"
        )
    return names


def check_state_dict(expected: dict[str, Tensor], given: dict[str, Tensor], *, source: str) -> None:
    """Raise ModelFileError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(given)
        if given[k].shape != expected[k].shape
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes)):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ModelFileError(f"{source}: weights do not fit the model layout; " + "; ".join(problems))


def read_weights(path: str | os.PathLike, *, expected: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The tensors of a model file as stored, checked against `expected` (names and shapes) when given, and for
    NaN or Inf: every problem is a ModelFileError naming the file."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ModelFileError(f"{path}: cannot read weights ({error})") from error
    if expected is not None:
        check_state_dict(expected, tensors, source=str(path))
    bad = non_finite(tensors)
    if bad:
        raise ModelFileError(
            f"{path}: {_tensor_list(bad, len(tensors))} hold NaN or Inf; the file is damaged or its "
            "training diverged (export it again from a good checkpoint)"
        )
    return tensors


def load_model_file(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network the file describes and load its weights (as float32) in eval mode."""
    import torch

    from drumdiff.nn.unet1d import UNet1d

    path = Path(path)
    meta = read_metadata(path)
    config: ModelConfig = meta["config"]
    try:
        # parameters on the meta device: no random initialisation, every one is replaced from the file
        with torch.device("meta"):
            net = UNet1d(config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ModelFileError(f"{path}: damaged model config ({error})") from error
    tensors = read_weights(path, expected=net.state_dict())
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
    net.eval().requires_grad_(False).to(device)
    return LoadedModel(net=net, config=config, class_names=meta["class_names"], metadata=meta, path=path)


# ---------------------------------------------------------------------------------------------- locating


def user_model_dir() -> Path:
    """`$DRUMDIFF_HOME/models`, else the platform's user data folder + `drumdiff/models`."""
    home = os.environ.get("DRUMDIFF_HOME")
    if home:
        return Path(home).expanduser() / "models"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "drumdiff" / "models"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    origin: str  # "shipped" or "user"
    problem: str | None = None  # why the file cannot be used, for `drumdiff models` to say


def _model_files(folder: Path, origin: str) -> list[ModelEntry]:
    """The model files in `folder`; unusable ones carry their problem, other kinds of file are left out."""
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.glob("*.safetensors")):
        problem = None
        try:
            kind = (read_header(path).get("__metadata__") or {}).get("format")
            if kind != FORMAT and kind is not None:
                continue  # another drumdiff file, e.g. the evaluation classifier
            if kind is None:
                problem = "not a drumdiff model file (no format in its metadata)"
        except ModelFileError as error:
            problem = f"unreadable ({str(error).removeprefix(f'{path}: ')})"
        entries.append(ModelEntry(name=path.stem, path=path, origin=origin, problem=problem))
    return entries


def list_models() -> list[ModelEntry]:
    """Shipped models first, then the user's models folder (unusable files included, with their problem)."""
    return _model_files(SHIPPED_DIR, "shipped") + _model_files(user_model_dir(), "user")


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """A path, else a shipped model name, else a user model name; None means the first shipped model."""
    if name_or_path is None:
        shipped = [e for e in _model_files(SHIPPED_DIR, "shipped") if e.problem is None]
        if not shipped:
            raise DrumdiffError(
                f"no shipped model in {SHIPPED_DIR} (this installation lacks drumdiff's weights/drums.safetensors: "
                "reinstall drumdiff), or pass --model PATH to a .safetensors file (train one with `drumdiff "
                "train` + `drumdiff export`, or convert one with `drumdiff convert`)"
            )
        return shipped[0].path
    if not str(name_or_path).strip():
        raise DrumdiffError("the model name is empty; give a model name or a .safetensors path")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for entry in list_models():
        if entry.name == str(name_or_path):
            return entry.path
    if path.is_dir():
        raise DrumdiffError(f"model {name_or_path} is a folder; name a .safetensors model file")
    if path.suffix or os.sep in str(name_or_path):
        raise DrumdiffError(f"model file not found: {name_or_path}")
    known = ", ".join(e.name for e in list_models()) or "none installed"
    raise DrumdiffError(
        f"unknown model {name_or_path!r} (known models: {known}; user folder {user_model_dir()})"
    )
