"""A small drum classifier: log-mel front end built in torch, a compact CNN, and a fixed embedding.

It gives `drumdiff evaluate` an in-domain feature space (the DrumGAN / CRASH approach) that works offline:
Frechet distance and KID are computed on `DrumClassifier.embed`, class accuracy on its logits.

The front end is gain invariant (the log-mel image is taken relative to its own loudest bin), so a clip and
the same clip 12 dB quieter embed identically; the embedding is standardised with the training set's mean and
standard deviation (buffers saved with the weights) so that distances have a fixed, documented scale.

The classifier file is a `.safetensors` file whose metadata holds the format name and version, the config, the
class names and the training provenance (JSON strings).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from drumdiff.errors import ModelFileError
from drumdiff.files import atomic_path, check_format

DEFAULT_CLASSIFIER = Path(__file__).resolve().parents[1] / "weights" / "drum_classifier.safetensors"
FILE_FORMAT = "drumdiff-classifier"
FILE_VERSION = 1
_JSON_FIELDS = ("config", "class_names", "provenance")


@dataclass(frozen=True)
class ClassifierConfig:
    """Front end and network layout of the drum classifier."""

    class_names: tuple[str, ...] = ("hihat", "kick", "percussion", "snare")
    sample_rate: int = 44100
    length: int = 32768
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 20000.0
    top_db: float = 100.0  # log-mel floor below the clip's loudest bin
    channels: tuple[int, ...] = (16, 32, 64, 128)
    # "global": mean and max over frequency and time (files written without a `pool` key use it);
    # "time": over time only, per frequency row, so the embedding knows where in the spectrum energy sits.
    pool: str = "global"
    embed_dim: int = 64
    dropout: float = 0.3
    # Training sub-classes (percussion split into drums, cymbals, shakers, ...): the head has one logit per
    # sub-class, `subclass_of[j]` is its class index, and a class's logit is the logsumexp of its sub-classes'
    # (so class probabilities are sums of sub-class probabilities). Empty: one logit per class.
    subclass_of: tuple[int, ...] = ()
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # room for later options; files written so far hold {}

    def __post_init__(self) -> None:
        if self.pool not in ("global", "time"):
            raise ValueError(f"pool must be 'global' or 'time', got {self.pool!r}")
        if self.subclass_of and sorted(set(self.subclass_of)) != list(range(len(self.class_names))):
            raise ValueError(f"subclass_of must name every class index at least once, got {self.subclass_of}")

    @property
    def pooled_dim(self) -> int:
        """Features after pooling: 2 C' for "global", 2 C' M' for "time" (M' = n_mels halved per block)."""
        rows = self.n_mels // 2 ** len(self.channels) if self.pool == "time" else 1
        return 2 * self.channels[-1] * rows

    @property
    def num_classes(self) -> int:
        """K, the number of classes (logits per clip)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the file's JSON metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        """Inverse of `to_dict` (JSON lists become tuples)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def hz_to_mel(freq: Tensor) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """Triangular mel filters, area-normalised (Slaney style): `[n_mels, n_fft // 2 + 1]`."""
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mels = torch.linspace(
        hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
        hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = mel_to_hz(mels)  # (n_mels + 2,)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (bins[None, :] - lower) / (center - lower)
    falling = (upper - bins[None, :]) / (upper - center)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, F)
    filters = filters * (2.0 / (upper - lower))  # equal area per band
    return filters.float()


class LogMel(nn.Module):
    """Mono mix -> relative log-mel image in dB/`top_db`, roughly in [-1, 0]: `[B, C, T] -> [B, 1, M, N]`."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.top_db = config.top_db
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        fb = mel_filterbank(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
        )
        self.register_buffer("filters", fb, persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() != 3:
            raise ValueError(f"expected audio [B, C, T], got shape {tuple(audio.shape)}")
        mono = audio.float().mean(dim=1)  # (B, T)
        spec = torch.stft(
            mono,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, F, N)
        power = spec.real.square() + spec.imag.square()
        mel = torch.einsum("mf,bfn->bmn", self.filters, power)  # (B, M, N)
        db = 10.0 * torch.log10(mel + 1e-12)
        db = db - db.amax(dim=(1, 2), keepdim=True)  # gain invariant: 0 dB is the loudest bin
        db = torch.clamp(db, min=-self.top_db) / self.top_db  # (B, M, N) in [-1, 0]
        return db.unsqueeze(1)


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU layers, then 2x2 max pooling: `[B, C_in, M, N] -> [B, C_out, M/2, N/2]`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DrumClassifier(nn.Module):
    """Log-mel CNN: `forward(audio [B, C, T]) -> logits [B, K]`; `embed(audio) -> [B, D]` (standardised)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = LogMel(config)
        blocks = []
        cin = 1
        for cout in config.channels:
            blocks.append(ConvBlock(cin, cout))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.project = nn.Linear(config.pooled_dim, config.embed_dim)
        outputs = len(config.subclass_of) or config.num_classes
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.embed_dim, outputs))
        self._members = [
            [j for j, c in enumerate(config.subclass_of) if c == k] for k in range(config.num_classes)
        ]  # sub-class indices of each class (unused without sub-classes)
        # Training-set statistics of the raw embedding; identity until `set_embedding_stats`.
        self.register_buffer("embed_mean", torch.zeros(config.embed_dim))
        self.register_buffer("embed_std", torch.ones(config.embed_dim))

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def features(self, image: Tensor) -> Tensor:
        """Log-mel image `[B, 1, M, N]` -> unstandardised embedding `[B, D]` (training masks the image first)."""
        x = self.blocks(image)  # (B, C', M', N')
        dims = (2, 3) if self.config.pool == "global" else (3,)
        pooled = torch.cat([x.mean(dim=dims), x.amax(dim=dims)], dim=1).flatten(1)  # (B, pooled_dim)
        return self.project(pooled)  # (B, D)

    def raw_embed(self, audio: Tensor) -> Tensor:
        """Unstandardised embedding `[B, D]` (what the head sees)."""
        return self.features(self.frontend(audio))

    def logits(self, raw: Tensor) -> Tensor:
        """Class logits `[B, K]` from a raw embedding `[B, D]` (sub-class logits merged by logsumexp)."""
        out = self.head(raw)  # (B, K) or (B, S) with sub-classes
        if not self.config.subclass_of:
            return out
        return torch.stack([out[:, members].logsumexp(dim=1) for members in self._members], dim=1)  # (B, K)

    def forward(self, audio: Tensor) -> Tensor:
        """Class logits `[B, K]` of audio `[B, C, T]`."""
        return self.logits(self.raw_embed(audio))  # (B, K)

    def embed(self, audio: Tensor) -> Tensor:
        """Embedding `[B, D]`, standardised with the training set's per-dimension mean and std."""
        return (self.raw_embed(audio) - self.embed_mean) / self.embed_std

    def embed_and_logits(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Both at once (one forward pass): `([B, D] standardised embedding, [B, K] logits)`."""
        raw = self.raw_embed(audio)
        return (raw - self.embed_mean) / self.embed_std, self.logits(raw)

    @torch.no_grad()
    def set_embedding_stats(self, raw_embeddings: Tensor) -> None:
        """Store the mean and std of `[N, D]` raw training embeddings for `embed`."""
        self.embed_mean.copy_(raw_embeddings.mean(dim=0))
        self.embed_std.copy_(raw_embeddings.std(dim=0).clamp_min(1e-6))


def save_classifier(
    path: str | os.PathLike, model: DrumClassifier, *, provenance: dict[str, Any], fp16: bool = True
) -> None:
    """Write weights + config + class names + provenance (safetensors metadata), atomically."""
    from safetensors.torch import save_file

    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if fp16 and value.is_floating_point() and not name.startswith("embed_"):
            value = value.half()
        tensors[name] = value
    metadata = {
        "format": FILE_FORMAT,
        "format_version": str(FILE_VERSION),  # safetensors metadata holds strings only
        "config": json.dumps(model.config.to_dict()),
        "class_names": json.dumps(list(model.config.class_names)),
        "provenance": json.dumps(provenance),
    }
    with atomic_path(path) as tmp:  # a failed write leaves the old file (if any) and no temp file behind
        save_file(tensors, str(tmp), metadata=metadata)


def classifier_path(path: str | os.PathLike | None = None) -> Path:
    """The classifier file to use: `path`, or the one shipped in the package when None."""
    return Path(path) if path is not None else DEFAULT_CLASSIFIER


def read_classifier_metadata(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The classifier file's metadata (default file: the shipped one), format checked, JSON fields decoded."""
    from safetensors import safe_open

    path = classifier_path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: classifier file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as error:  # a corrupt or foreign file: name it
        raise ModelFileError(f"{path}: cannot load classifier: {error}") from error
    check_format(
        {"format_version": "1", **metadata},  # files written before the version key existed are version 1
        source=path,
        kind="drumdiff classifier file",
        format=FILE_FORMAT,
        version=str(FILE_VERSION),
        version_key="format_version",
        error=ModelFileError,
    )
    try:
        for key in _JSON_FIELDS:
            if key in metadata:
                metadata[key] = json.loads(metadata[key])
    except ValueError as error:
        raise ModelFileError(f"{path}: cannot load classifier: {error}") from error
    return metadata


def load_classifier(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> DrumClassifier:
    """Load a classifier file (default: the one shipped in the package), in eval mode, fp32."""
    from safetensors.torch import load_file

    path = classifier_path(path)
    metadata = read_classifier_metadata(path)
    try:
        config = ClassifierConfig.from_dict(metadata["config"])
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        model = DrumClassifier(config)
        model.load_state_dict(state)
    except Exception as error:  # a corrupt or foreign file: name it
        raise ModelFileError(f"{path}: cannot load classifier: {error}") from error
    return model.to(device).eval()
