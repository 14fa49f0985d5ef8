"""Image files on disk as training batches: decoding, transforms, a seeded sampler, the loader.

Decoding uses Pillow. Transforms are a few lines of PIL, so torchvision is not needed:

* train: a light random resized crop (35-100% of the area, aspect 3/4..4/3) to
  ``img_size``, then a horizontal flip half of the time;
* eval: resize the shorter side to ``img_size / 0.875``, centre crop ``img_size``
  (the usual ImageNet evaluation).

Randomness comes from ``random.Random`` seeded by ``(seed, epoch, index)``: an image
gets the same crop in an epoch whichever worker decodes it, and a resumed run replays
the epoch exactly.

Workers: decoding JPEGs is the costly part, so it runs in ``workers`` processes while the
main process trains. ``default_workers()`` keeps one core for the model (on 2 cores: one
worker) and caps at 4; each worker runs torch single-threaded so that it does not fight
the model's threads. ``pin_memory`` is on only when CUDA is there (it buys nothing on a
CPU). Workers persist across epochs; the epoch travels with each index, not as state.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scansearch.data.bundle import DataError, epoch_generator

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)
EVAL_CROP_RATIO = 0.875
TRAIN_AREA, TRAIN_ASPECT = (0.35, 1.0), (3 / 4, 4 / 3)

Sample = tuple[Path, int]  # (image file, class index)


def require_pil():
    """The PIL.Image module, or a DataError saying how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def default_workers() -> int:
    """Decoding processes: all cores but one for the model, at most 4; none on one core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(4, cores - 1)


def normalisation(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else (GREY_MEAN, GREY_STD)


def _random_crop_box(width: int, height: int, rng: random.Random) -> tuple[float, float, float, float]:
    """A box covering a random share of the image with a random aspect ratio (else the whole image)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*TRAIN_AREA)
        aspect = math.exp(rng.uniform(math.log(TRAIN_ASPECT[0]), math.log(TRAIN_ASPECT[1])))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if w <= width and h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return left, top, left + w, top + h
    return 0.0, 0.0, float(width), float(height)


def _centre_crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square that an eval resize-then-crop keeps, in original pixels."""
    side = min(width, height) * EVAL_CROP_RATIO
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class ImageFileDataset(Dataset):
    """Decoded, transformed and normalised images from a list of (path, class) samples.

    Indexed by ``(index, epoch)`` (what ``EpochSampler`` yields) or by a plain index
    (epoch 0). Returns ``(image (C, S, S) float, class index)``.
    """

    def __init__(self, samples: Sequence[Sample], img_size: int, in_chans: int, *, train: bool, seed: int = 0):
        self.samples, self.img_size, self.train, self.seed = list(samples), img_size, train, seed
        self.mode = "RGB" if in_chans == 3 else "L"
        mean, std = normalisation(in_chans)
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[index]
        return self.load(path, random.Random(f"{self.seed}:{epoch}:{index}")), label

    def load(self, path: Path, rng: random.Random) -> torch.Tensor:
        Image = require_pil()
        size = self.img_size
        try:
            with Image.open(path) as img:
                img.draft(self.mode, (2 * size, 2 * size))  # JPEG: decode at reduced scale, much faster
                img = img.convert(self.mode)
                box = _random_crop_box(*img.size, rng) if self.train else _centre_crop_box(*img.size)
                img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
                if self.train and rng.random() < 0.5:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                data = bytearray(img.tobytes())
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        pixels = torch.frombuffer(data, dtype=torch.uint8).view(size, size, -1).permute(2, 0, 1)
        return (pixels.float().div_(255.0) - self.mean) / self.std


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``, shuffled from ``(seed, epoch)`` when ``shuffle``."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)).tolist()
                 if self.shuffle else range(self.n))
        return iter([(i, self.epoch) for i in order])


def _single_threaded_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


def _one_line(error: DataError) -> str:
    """A DataError raised in a worker comes back with the worker's traceback; keep its message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return str(error)
    last = lines[-1]
    return last.split("DataError: ", 1)[1] if "DataError: " in last else last


class FolderLoader:
    """A DataLoader over image files with ``set_epoch`` and one-line errors."""

    def __init__(self, dataset: ImageFileDataset, batch_size: int, *, shuffle: bool, workers: int, seed: int = 0):
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise DataError(f"workers must not be negative, got {workers}")
        self.dataset, self.batch_size = dataset, batch_size
        self.sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            worker_init_fn=_single_threaded_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),  # iter() never draws from the global RNG
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def independent(self) -> FolderLoader:
        """The same batches from a loader of its own: a persistent-worker DataLoader has one
        iterator, which a second reader (evaluation between epochs) would reset."""
        loader = FolderLoader(self.dataset, self.batch_size, shuffle=self.sampler.shuffle,
                              workers=self.loader.num_workers, seed=self.sampler.seed)
        loader.set_epoch(self.sampler.epoch)
        return loader

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            yield from self.loader
        except DataError as exc:
            raise DataError(_one_line(exc)) from None
