"""The labeled and unlabeled parts of semi-supervised training.

``split_labeled(data, ratio, seed)`` keeps ``ratio`` of each class's training images
labeled (at least one per class) and hands the rest over as unlabeled images whose true
labels are kept only to measure pseudo-label precision; the validation and test splits
are untouched. ``unlabeled_folder(DIR, like=loader)`` reads every image below ``DIR``
as unlabeled (label -1: unknown), decoded like the labeled folder's training images.
Both return loaders of the kind the data set already uses (in-memory or image files),
with the same augmentation, so the weak view of an unlabeled image is the labeled
images' training view.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from scansearch.data.bundle import DataBundle, DataError, TensorLoader
from scansearch.data.images import FolderLoader, ImageFileDataset, is_image_file

UNKNOWN = -1  # the label of an unlabeled image whose class nobody knows


def labeled_indices(labels: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """A boolean mask: ``round(ratio * n)`` images of each class (at least one), chosen by ``seed``."""
    if not 0 < ratio < 1:
        raise DataError(f"--labeled-ratio must lie in (0, 1), got {ratio}")
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        keep = max(1, round(ratio * len(members)))
        mask[members[torch.randperm(len(members), generator=gen)[:keep]]] = True
    return mask


def _loader_labels(loader) -> torch.Tensor:
    if isinstance(loader, TensorLoader):
        return loader.labels
    if isinstance(loader, FolderLoader):
        return torch.tensor([label for _, label in loader.dataset.samples], dtype=torch.long)
    raise DataError(f"semi-supervised training cannot split a {type(loader).__name__}")


def _subset(loader, mask: torch.Tensor, batch_size: int, seed: int):
    """The images of ``loader`` where ``mask`` holds, in a new shuffled training loader."""
    if isinstance(loader, TensorLoader):
        return TensorLoader(loader.images[mask], loader.labels[mask], batch_size, shuffle=True,
                            augment=loader.augment, seed=seed)
    dataset = loader.dataset
    samples = [s for s, keep in zip(dataset.samples, mask.tolist()) if keep]
    return FolderLoader(_dataset_like(dataset, samples), batch_size, shuffle=True,
                        workers=loader.loader.num_workers, seed=seed)


def _dataset_like(dataset: ImageFileDataset, samples) -> ImageFileDataset:
    chans = 3 if dataset.mode == "RGB" else 1
    return ImageFileDataset(samples, dataset.img_size, chans, train=dataset.train, seed=dataset.seed)


def split_labeled(data: DataBundle, ratio: float, seed: int, batch_size: int, unlabeled_batch: int):
    """(labeled loader, unlabeled loader) from the training split of ``data``."""
    labels = _loader_labels(data.train)
    mask = labeled_indices(labels, ratio, seed)
    if bool(mask.all()):
        raise DataError(f"{data.name}: --labeled-ratio {ratio} leaves no unlabeled training images "
                        f"({len(labels)} images, {len(torch.unique(labels))} classes, at least one labeled each)")
    return (_subset(data.train, mask, batch_size, seed), _subset(data.train, ~mask, unlabeled_batch, seed + 1))


def unlabeled_folder(root: str | Path, data: DataBundle, batch_size: int, seed: int) -> FolderLoader:
    """Every image file below ``root`` as unlabeled, decoded like ``data``'s training images.

    An image whose bytes are also in the validation or test split is refused: it would
    train on what the model is scored on (a CUB user pointing at ``CUB_200_2011/images``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--unlabeled {root}: " + ("not a folder" if root.exists() else "no such folder"))
    like = data.train
    if not isinstance(like, FolderLoader):
        raise DataError("--unlabeled DIR goes with an image-folder data set (--data PATH); for the built-in and "
                        "IDX sets use --labeled-ratio")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"--unlabeled {root}: no image files below it")
    held_out = {_digest(path): path for loader in (data.val, data.test) if isinstance(loader, FolderLoader)
                for path, _ in loader.dataset.samples}
    clashes = [(path, held_out[d]) for path in files if (d := _digest(path)) in held_out]
    if clashes:
        path, twin = clashes[0]
        raise DataError(f"--unlabeled {root}: {len(clashes)} of its images are in the validation or test split "
                        f"(e.g. {path} is {twin}); unlabeled images must not include the images scored")
    dataset = _dataset_like(like.dataset, [(path, UNKNOWN) for path in files])
    return FolderLoader(dataset, batch_size, shuffle=True, workers=like.loader.num_workers, seed=seed + 1)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from None
