"""What every data source hands to training: a ``DataBundle`` of three loaders, plus the
small pieces the sources share (seeded stratified splits, an in-memory batcher).

Every loader here yields ``(images, labels)`` with images float ``(B, C, H, W)``, already
normalised, and labels long ``(B,)``. Every loader has ``set_epoch(epoch)``: shuffling and
augmentation draw from generators seeded by ``(seed, epoch)``, never from the global RNG,
so an epoch sees the same batches whether the run went straight through or resumed from a
checkpoint, and whatever the number of worker processes.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from scansearch.errors import InputError


class DataError(InputError):
    """Data that cannot be used; the message is one line saying what is wrong and where."""


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream), so that runs can be replayed."""
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + epoch * 1_009 + stream) % (2**63))
    return gen


def stratified_split(labels: Sequence[int] | torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Split sample indices into parts with the given fractions, class by class.

    Each class is shuffled with a generator seeded by ``seed`` and cut at the rounded
    cumulative fractions; the last part takes what is left. Parts come back sorted, so
    the split depends on the seed and the labels only.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        bounds = [0]
        for frac in fractions[:-1]:
            bounds.append(min(len(members), bounds[-1] + round(frac * len(members))))
        bounds.append(len(members))
        for i in range(len(fractions)):
            parts[i].append(members[bounds[i]:bounds[i + 1]])
    return [torch.sort(torch.cat(p)).values if p else torch.zeros(0, dtype=torch.long) for p in parts]


# augment(images, generator) -> images: a batched, seeded transform (train only)
BatchAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorLoader:
    """Batches of in-memory tensors, shuffled and augmented from seeded generators.

    The built-in data sets are small enough to live in memory as one tensor, so batching
    is slicing: no worker processes, no collation, nothing to compete with the model for
    the CPU cores.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, augment: BatchAugment | None = None, seed: int = 0):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def independent(self) -> TensorLoader:
        """The same batches from a loader whose epoch and iterators are its own."""
        return copy.copy(self)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else None
        aug_gen = epoch_generator(self.seed, self.epoch, stream=1)
        for start in range(0, n, self.batch_size):
            if order is None:
                x, y = self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                x, y = self.images[idx], self.labels[idx]
            if self.augment is not None:
                x = self.augment(x, aug_gen)
            yield x, y


@dataclass
class DataBundle:
    """Train/val/test loaders of one data set and what a model needs to know about it.

    ``test`` is None when the source has no test split. ``mean``/``std`` are the
    per-channel normalisation constants (to undo it for display).
    """

    name: str
    train: Any
    val: Any
    test: Any | None
    num_classes: int
    class_names: list[str]
    img_size: int
    in_chans: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary: sizes, shapes, classes, where the data came from."""
        def count(loader: Any) -> int | None:
            if loader is None:
                return None
            return getattr(loader, "num_samples", None) or len(getattr(loader, "dataset", ()))

        names = self.class_names if len(self.class_names) <= 20 else self.class_names[:20] + ["..."]
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": names,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "n_train": count(self.train),
            "n_val": count(self.val),
            "n_test": count(self.test),
            "batch_size": getattr(self.train, "batch_size", None),
            "mean": list(self.mean),
            "std": list(self.std),
            **self.details,
        }


def repeat_channels(images: torch.Tensor, in_chans: int | None, source: str) -> torch.Tensor:
    """Grey images (N, 1, H, W) as ``in_chans`` channels: 1 stays, 3 repeats the grey."""
    if in_chans is None or in_chans == images.shape[1]:
        return images
    if images.shape[1] == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise DataError(f"{source}: cannot make {in_chans}-channel images from {images.shape[1]}-channel data")
