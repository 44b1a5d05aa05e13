"""The training data stream: which clip, noise, t and guidance dropout each stream position gets.

Every example has a stream position p (0, 1, 2, ... across steps, ranks and micro-batches); everything random
about it is drawn from generators seeded by (seed, p) with `drumdiff.files.stable_seed`, so the stream is a
pure function of the step (exact resume, and DDP ranks that see one global order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from drumdiff.errors import DrumdiffError
from drumdiff.files import stable_seed


class StreamBatchSampler:
    """Yields batches of (clip index, stream position) forever, starting at batch `start_batch`.

    Global batch b holds positions b*B*W .. (b+1)*B*W - 1 (B per rank, W ranks); rank r takes its slice.
    The clip at position p is order_e[p mod N] with e = p // N: a permutation seeded by (seed, e), or with
    `labels` and `class_balance` > 0, N draws (with replacement, seeded the same way) where a clip of a class
    with n clips has weight n**-class_balance (1: every class equally often; 0.5: the square-root middle).
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
        labels: Sequence[int] | None = None,
        class_balance: float = 0.0,
    ) -> None:
        if num_items < 1:
            raise ValueError("StreamBatchSampler needs at least one item")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_batch, self.rank, self.world = start_batch, rank, world
        self._weights = class_weights(labels, class_balance) if class_balance > 0 else None
        if self._weights is not None and len(self._weights) != num_items:
            raise ValueError(f"{len(self._weights)} labels for {num_items} items")
        self._orders: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        """The clip index at stream position `position` (the last three epochs' orders are cached)."""
        epoch, k = divmod(position, self.num_items)
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            g = torch.Generator().manual_seed(stable_seed("order", self.seed, epoch))
            if self._weights is None:
                order = torch.randperm(self.num_items, generator=g)
            else:
                order = torch.multinomial(self._weights, self.num_items, replacement=True, generator=g)
            self._orders[epoch] = order.tolist()
        return self._orders[epoch][k]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            first = (batch * self.world + self.rank) * self.batch_size
            yield [(self.index(p), p) for p in range(first, first + self.batch_size)]
            batch += 1


def class_weights(labels: Sequence[int] | None, class_balance: float) -> Tensor:
    """Per-clip drawing weights n_c**-class_balance (n_c: clips of the clip's class), as float64."""
    if labels is None:
        raise ValueError("class balancing needs the clips' class labels")
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    counts = torch.bincount(labels_t).to(torch.float64)
    return counts[labels_t] ** -class_balance


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
            g_aug = torch.Generator().manual_seed(stable_seed("augment", self.seed, position))
            audio = self.augment(audio, generator=g_aug, sample_rate=self.sample_rate)
        g = torch.Generator().manual_seed(stable_seed("train", self.seed, position))
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


def open_split(root: Path, split: str) -> Dataset:
    """The prepared clips of one split, decoded into the training cache (progress shown on rank 0)."""
    from drumdiff.data import PreparedDataset

    return PreparedDataset(root, split=split, augment=None, progress=is_rank_zero())


def is_rank_zero() -> bool:
    """True in the process that prints and writes RUN/config.json (plain, Lightning DDP, torchrun, SLURM)."""
    return all(
        int(os.environ.get(var, "0") or 0) == 0 for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")
    )
