"""Image folders a user brings, in one of three layouts (detected in this order):

1. CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
   ``classes.txt`` and ``images/`` in the folder (or in its ``CUB_200_2011/``). The
   official test split is the test set; the validation set is carved out of the
   official train split, stratified by class, from the seed.
2. ImageFolder with splits: ``root/train/<class>/*``, ``root/val/<class>/*`` (also
   ``valid``, ``validation``) and optionally ``root/test/<class>/*``. The class sets
   must be the same. Without a val folder, the validation set is carved out of train.
3. Flat ImageFolder: ``root/<class>/*``, split 70/15/15 by class from the seed.

Class names are the sub-folder names (or CUB's ``classes.txt``), sorted, indexed from 0.
Every failure is a one-line ``DataError`` that names the folder, file or line at fault.
"""
from __future__ import annotations

from pathlib import Path

from scansearch.data.bundle import DataBundle, DataError, stratified_split
from scansearch.data.images import (FolderLoader, ImageFileDataset, Sample, default_workers, is_image_file,
                                    normalisation, require_pil)

DEFAULT_IMG_SIZE = 224
FLAT_FRACTIONS = (0.70, 0.15, 0.15)
VAL_FROM_TRAIN = 0.10
VAL_NAMES = ("val", "valid", "validation")
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def scan_class_folders(root: Path) -> tuple[list[str], list[Sample]]:
    """Class names (sorted sub-folders) and every image below each class folder."""
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise DataError(f"{root / name}: class folder has no image files")
        samples.extend((path, label) for path in files)
    return classes, samples


def _pick(samples: list[Sample], indices) -> list[Sample]:
    return [samples[i] for i in indices.tolist()]


def _carve(samples: list[Sample], fractions: tuple[float, ...], seed: int) -> list[list[Sample]]:
    parts = stratified_split([label for _, label in samples], fractions, seed)
    return [_pick(samples, part) for part in parts]


def _check_same_classes(train_root: Path, train: list[str], other_root: Path, other: list[str]) -> None:
    if train != other:
        only_train, only_other = sorted(set(train) - set(other)), sorted(set(other) - set(train))
        raise DataError(f"{other_root}: classes differ from {train_root} "
                        f"(only in {train_root.name}: {only_train[:5]}, only in {other_root.name}: {only_other[:5]})")


def read_split_imagefolder(root: Path, seed: int) -> tuple[list[str], list[Sample], list[Sample], list[Sample] | None]:
    """Layout 2: train/ (+ val/, test/) folders of class folders."""
    classes, train = scan_class_folders(root / "train")
    val_dir = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
    if val_dir is None:
        train, val = _carve(train, (1 - VAL_FROM_TRAIN, VAL_FROM_TRAIN), seed)
    else:
        val_classes, val = scan_class_folders(val_dir)
        _check_same_classes(root / "train", classes, val_dir, val_classes)
    test = None
    if (root / "test").is_dir():
        test_classes, test = scan_class_folders(root / "test")
        _check_same_classes(root / "train", classes, root / "test", test_classes)
    return classes, train, val, test


def _read_table(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """Rows of a CUB text file as (line number, fields); the first field must be an integer id."""
    if not path.is_file():
        raise DataError(f"{path}: missing (a CUB-200-2011 folder needs {', '.join(CUB_FILES)} and images/)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=columns - 1)
            if len(parts) != columns or not parts[0].isdigit():
                raise DataError(f"{path}:{number}: expected {columns} fields '<id> ...', got {line.strip()!r}")
            rows.append((number, parts))
    return rows


def _int_field(path: Path, number: int, text: str, allowed: set[int] | None = None) -> int:
    if not text.strip().isdigit() or (allowed is not None and int(text) not in allowed):
        raise DataError(f"{path}:{number}: unexpected value {text.strip()!r}")
    return int(text)


def read_cub(root: Path, seed: int) -> tuple[list[str], list[Sample], list[Sample], list[Sample]]:
    """Layout 1: CUB-200-2011 metadata files; val carved out of the official train split."""
    class_rows = _read_table(root / "classes.txt", 2)
    class_ids = sorted(int(parts[0]) for _, parts in class_rows)
    class_names = {int(parts[0]): parts[1].strip() for _, parts in class_rows}
    label_of_class = {cid: i for i, cid in enumerate(class_ids)}
    paths = {int(p[0]): (n, p[1].strip()) for n, p in _read_table(root / "images.txt", 2)}
    labels_path, split_path = root / "image_class_labels.txt", root / "train_test_split.txt"
    labels = {int(p[0]): _int_field(labels_path, n, p[1], set(label_of_class)) for n, p in _read_table(labels_path, 2)}
    is_train = {int(p[0]): _int_field(split_path, n, p[1], {0, 1}) for n, p in _read_table(split_path, 2)}
    if not paths:
        raise DataError(f"{root / 'images.txt'}: lists no images")
    train: list[Sample] = []
    test: list[Sample] = []
    for image_id, (number, rel) in sorted(paths.items()):
        for table, path in ((labels, labels_path), (is_train, split_path)):
            if image_id not in table:
                raise DataError(f"{path}: no entry for image id {image_id} (images.txt line {number})")
        file = root / "images" / rel
        if not file.is_file():
            raise DataError(f"{root / 'images.txt'}:{number}: image file not found: {file}")
        (train if is_train[image_id] else test).append((file, label_of_class[labels[image_id]]))
    train, val = _carve(train, (1 - VAL_FROM_TRAIN, VAL_FROM_TRAIN), seed)
    return [class_names[c] for c in class_ids], train, val, test


def cub_root(root: Path) -> Path | None:
    """The folder holding CUB's images.txt: root itself or root/CUB_200_2011, else None."""
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def load_folder(root: str | Path, *, img_size: int | None = None, in_chans: int | None = None, batch_size: int = 64,
                seed: int = 0, workers: int | None = None, augment: bool = True) -> DataBundle:
    """A DataBundle from an image folder in any of the layouts of the module docstring."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder" if root.exists() else f"no such folder: {root}")
    require_pil()
    size = DEFAULT_IMG_SIZE if img_size is None else int(img_size)
    chans = 3 if in_chans is None else int(in_chans)
    if size < 1:
        raise DataError(f"{root}: img_size must be positive, got {img_size}")
    if chans not in (1, 3):
        raise DataError(f"{root}: in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
    if (cub := cub_root(root)) is not None:
        layout, (classes, train, val, test) = "cub-200-2011", read_cub(cub, seed)
    elif (root / "train").is_dir():
        layout, (classes, train, val, test) = "imagefolder-splits", read_split_imagefolder(root, seed)
    else:
        classes, samples = scan_class_folders(root)
        layout, (train, val, test) = "imagefolder-flat", _carve(samples, FLAT_FRACTIONS, seed)
    for split, samples in (("train", train), ("val", val)):
        if not samples:
            raise DataError(f"{root}: the {split} split is empty (too few images to split)")
    workers = default_workers() if workers is None else workers

    def loader(samples: list[Sample] | None, train_split: bool) -> FolderLoader | None:
        if not samples:
            return None
        dataset = ImageFileDataset(samples, size, chans, train=train_split and augment, seed=seed)
        return FolderLoader(dataset, batch_size, shuffle=train_split, workers=workers, seed=seed)

    mean, std = normalisation(chans)
    return DataBundle(
        name=root.name, train=loader(train, True), val=loader(val, False), test=loader(test, False),
        num_classes=len(classes), class_names=classes, img_size=size, in_chans=chans, mean=mean, std=std,
        details={"source": str(root), "layout": layout, "seed": seed, "workers": workers, "augment": bool(augment)},
    )
