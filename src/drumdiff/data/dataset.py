"""Training on a prepared folder: `PreparedDataset` reads it through a float16 memory-mapped cache, so training
never decodes audio; `Augment` holds the one-shot augmentations, driven by a per-item seed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drumdiff import audio as audio_io
from drumdiff.data.manifest import MANIFEST, SPLITS, load_manifest
from drumdiff.errors import DrumdiffError
from drumdiff.files import atomic_path, check_writable, stable_seed
from drumdiff.progress import Progress

CACHE_DIR = ".cache"


@dataclass(frozen=True)
class Augment:
    """One-shot augmentations; each is off when its amount is 0. Deterministic given the generator.

    gain_db: random gain uniform in [-gain_db, 0] dB (never louder, so no clipping).
    polarity: probability of inverting the polarity.
    swap: probability of swapping left and right.
    width: side signal scaled by a factor uniform in [1 - width, 1 + width] (stereo only).
    shift_ms: onset delayed by up to this many milliseconds (zeros in front, tail cropped).
    pitch_semitones: varispeed pitch shift uniform in +-this (0 = off; changes duration like a sampler).
    """

    gain_db: float = 6.0
    polarity: float = 0.5
    swap: float = 0.5
    width: float = 0.2
    shift_ms: float = 2.0
    pitch_semitones: float = 0.0

    def __call__(self, audio: torch.Tensor, *, generator: torch.Generator, sample_rate: int) -> torch.Tensor:
        """Augment one clip `[C, T]`; the output has the same shape."""
        channels, length = audio.shape
        u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()  # one draw per augmentation
        x = audio
        if self.pitch_semitones > 0:
            semitones = (2 * u[5] - 1) * self.pitch_semitones
            ratio = 2 ** (semitones / 12)  # > 1: higher and shorter
            new_length = max(1, round(length / ratio))
            x = torch.nn.functional.interpolate(x[None], size=new_length, mode="linear", align_corners=False)
            x = audio_io.fit_length(x[0], length, fade_ms=5.0, sample_rate=sample_rate)  # (C, T)
        if self.shift_ms > 0:
            shift = int(u[4] * self.shift_ms * sample_rate / 1000)
            if shift > 0:
                x = torch.nn.functional.pad(x, (shift, 0))[:, :length]
        if channels == 2:
            if u[2] < self.swap:
                x = x.flip(0)
            if self.width > 0:
                factor = 1 + (2 * u[3] - 1) * self.width
                mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2 * factor
                x = torch.stack([mid + side, mid - side])
        sign = -1.0 if u[1] < self.polarity else 1.0
        gain = 10 ** (-u[0] * self.gain_db / 20)
        return (x * (sign * gain)).contiguous()


def _cache_key(manifest_bytes: bytes, split: str) -> str:
    return hashlib.sha1(manifest_bytes + split.encode()).hexdigest()[:16]


def build_cache(
    root: str | os.PathLike,
    *,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The float16 `[N, C, T]` `.npy` cache of a split, built (atomically) if missing or out of date."""
    root = Path(root)
    manifest_bytes = (root / MANIFEST).read_bytes()
    manifest = load_manifest(root)
    folder = Path(cache_dir) if cache_dir is not None else root / CACHE_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder)
    except OSError:  # a read-only dataset folder: cache in the user's cache folder instead
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        folder = base / "drumdiff" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-{_cache_key(manifest_bytes, split)}.npy"
    if path.is_file():
        return path
    items = _split_items(manifest, split)
    shape = (len(items), manifest["channels"], manifest["length"])
    try:
        with atomic_path(path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            bar = Progress(len(items), desc=f"cache {split}", unit="clip") if progress and items else None
            try:
                for i, item in enumerate(items):
                    clip, rate = audio_io.read(root / item["path"])
                    if rate != manifest["sample_rate"] or tuple(clip.shape) != shape[1:]:
                        raise DrumdiffError(
                            f"{root / item['path']}: {tuple(clip.shape)} at {rate} Hz does not match the "
                            f"manifest ({shape[1:]} at {manifest['sample_rate']} Hz); run `drumdiff data "
                            "prepare` again"
                        )
                    array[i] = clip.numpy().astype(np.float16)
                    if bar is not None:
                        bar.update()
            finally:
                if bar is not None:
                    bar.close()
            array.flush()
            del array
    except OSError as error:
        raise DrumdiffError(f"cannot write the dataset cache {path}: {error.strerror or error}") from error
    for old in folder.glob(f"{split}-*.npy"):  # caches of earlier manifests
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _split_items(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    if split not in (*SPLITS, "all"):
        raise DrumdiffError(f"split must be {', '.join(SPLITS)} or all, got {split!r}")
    return [it for it in manifest["items"] if split == "all" or it["split"] == split]


class PreparedDataset(torch.utils.data.Dataset):
    """A prepared folder as `(audio [C, T] float32, class_index)` pairs, read from a float16 memory map.

    The cache is built on first use (and rebuilt when the manifest changes); the object pickles without the
    memory map, so spawn-based DataLoader workers re-open it. With `augment`, item i of epoch e draws from
    `stable_seed("augment", seed, e, i)`: call `set_epoch(e)` each epoch (non-persistent workers pick it up).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: str = "train",
        augment: Augment | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        manifest = load_manifest(self.root)
        self.class_names: list[str] = list(manifest["classes"])
        self.sample_rate: int = int(manifest["sample_rate"])
        self.length: int = int(manifest["length"])
        self.channels: int = int(manifest["channels"])
        self.split = split
        self.items = _split_items(manifest, split)
        index = {name: i for i, name in enumerate(self.class_names)}
        self.labels = np.array([index[it["class"]] for it in self.items], dtype=np.int64)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache_path = build_cache(self.root, split=split, cache_dir=cache_dir, progress=progress)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation draw of this epoch."""
        self.epoch = epoch

    def _clips(self) -> np.ndarray:
        if self._array is None:
            # Copy-on-write only so that torch accepts the pages without a warning; nothing ever writes.
            self._array = np.load(self.cache_path, mmap_mode="c")  # (N, C, T) float16
        return self._array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        audio = torch.from_numpy(self._clips()[index]).float()  # (C, T), a copy (torch converts fastest)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(
                stable_seed("augment", self.seed, self.epoch, index % len(self))
            )
            audio = self.augment(audio, generator=generator, sample_rate=self.sample_rate)
        return audio, int(self.labels[index])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Several clips at once without augmentation: (audio `[B, C, T]` float32, labels `[B]`)."""
        order = np.asarray(indices, dtype=np.int64)
        clips = self._clips()
        audio = torch.empty(len(order), self.channels, self.length)  # (B, C, T)
        for k, i in enumerate(order):
            audio[k].copy_(torch.from_numpy(clips[i]))  # float16 -> float32 straight from the page cache
        return audio, torch.from_numpy(self.labels[order])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # memory maps do not pickle; workers re-open the file
        return state
