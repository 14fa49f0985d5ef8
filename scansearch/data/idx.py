"""Folders of IDX files, the format MNIST, Fashion-MNIST, KMNIST and EMNIST ship in.

A folder is IDX when it holds ``train-images-idx3-ubyte`` (also ``train-images.idx3-ubyte``,
either gzipped as ``.gz``) and ``train-labels-idx1-ubyte``; the ``t10k-images-idx3-ubyte`` /
``t10k-labels-idx1-ubyte`` pair, when present, is the test split. An IDX file is two zero
bytes, a data type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), a byte with the number of dimensions, one big-endian uint32 per dimension,
then the values, big-endian, row-major. Images are (count, rows, cols), labels (count,).

Labels are mapped, sorted, to 0..C-1 and the original values become the class names
(EMNIST letters are labelled 1..26), unless a ``classes.txt`` in the folder names them,
one a line in label order. The validation split is a stratified, seeded tenth of train;
without t10k files the test split is carved too (70/15/15, like ``digits``).

Options follow the folder after a colon, ``PATH:n_train=2500,n_val=500,n_test=1000``:
each takes a stratified, seeded subset of that split, so a small CPU can train on a few
thousand images. Images stay uint8 in memory (60k 28x28 is 47 MB); only the subsets are
converted to float: uint8 pixels scaled to [0, 1], other types as stored, resized
bilinearly, normalised with the training subset's mean and std.
"""
from __future__ import annotations

import gzip
import math
import re
import struct
import sys
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from scansearch.data.bundle import DataBundle, DataError, TensorLoader, repeat_channels, stratified_split
from scansearch.data.digits import SHIFT_PROBABILITY, random_shift

# type byte -> (torch dtype, bytes per value)
IDX_TYPES = {0x08: (torch.uint8, 1), 0x09: (torch.int8, 1), 0x0B: (torch.int16, 2), 0x0C: (torch.int32, 4),
             0x0D: (torch.float32, 4), 0x0E: (torch.float64, 8)}
VAL_FROM_TRAIN = 0.10
FLAT_FRACTIONS = (0.70, 0.15, 0.15)
OPTIONS = ("n_train", "n_val", "n_test")
SHIFT_DIVISOR = 14  # up to 2 pixels at MNIST's 28: a stroke width, the class stays readable
_OPTIONS_RE = re.compile(r"^\s*\w+\s*=[^,=]*(,\s*\w+\s*=[^,=]*)*,?\s*$")


def idx_file(root: Path, stem: str, rank: int) -> Path | None:
    """The file for ``stem`` (e.g. ``train-images``) in any of the usual spellings, or None."""
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = root / f"{stem}{sep}idx{rank}-ubyte{suffix}"
            if path.is_file():
                return path
    return None


def is_idx_folder(root: Path) -> bool:
    return root.is_dir() and idx_file(root, "train-images", 3) is not None


def split_options(spec: str) -> tuple[str, str | None]:
    """``'PATH:k=v,...'`` -> (PATH, 'k=v,...'), when PATH is a folder; else (spec, None)."""
    head, colon, tail = spec.rpartition(":")
    if not colon or Path(spec).expanduser().exists() or not _OPTIONS_RE.match(tail):
        return spec, None
    return (head, tail) if Path(head).expanduser().is_dir() else (spec, None)


def parse_options(text: str | None, source: str) -> dict[str, int]:
    """``'n_train=2500,n_val=500'`` -> {'n_train': 2500, 'n_val': 500}; positive integers only."""
    options: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, raw = (s.strip() for s in item.partition("="))
        if key not in OPTIONS:
            raise DataError(f"{source}: unknown option {item!r} (valid: {', '.join(OPTIONS)})")
        if not raw.isdigit() or int(raw) < 1:
            raise DataError(f"{source}: {key} must be a positive integer, got {raw!r} (valid: {', '.join(OPTIONS)})")
        options[key] = int(raw)
    return options


def read_idx(path: Path) -> torch.Tensor:
    """The array stored in one IDX file (gzipped or not), in its own dtype and shape."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b" or path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(f"{path}: not an IDX file (starts with {data[:4].hex() or 'nothing'}, expected 0000 then "
                        "type and rank bytes)")
    if data[2] not in IDX_TYPES:
        known = ", ".join(f"0x{t:02X}" for t in IDX_TYPES)
        raise DataError(f"{path}: unknown IDX data type 0x{data[2]:02X} (known: {known})")
    dtype, width = IDX_TYPES[data[2]]
    rank, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes for {rank} dimensions)")
    dims = struct.unpack(f">{rank}I", data[4:header])
    count = math.prod(dims)
    if len(data) - header != count * width:
        raise DataError(f"{path}: {len(data) - header} data bytes but dimensions {list(dims)} need {count * width} "
                        "(truncated or wrong header)")
    if count == 0:
        return torch.zeros(dims, dtype=dtype)
    raw = torch.frombuffer(bytearray(memoryview(data)[header:]), dtype=torch.uint8)  # a copy: aligned, writable
    if width > 1 and sys.byteorder == "little":
        raw = raw.view(-1, width).flip(1).contiguous()  # IDX is big-endian
    return raw.view(dtype).view(dims)


def _read_pair(root: Path, prefix: str) -> tuple[Path, torch.Tensor, Path, torch.Tensor]:
    images_path, labels_path = idx_file(root, f"{prefix}-images", 3), idx_file(root, f"{prefix}-labels", 1)
    if images_path is None or labels_path is None:
        found = images_path or labels_path
        missing = f"{prefix}-labels-idx1-ubyte" if labels_path is None else f"{prefix}-images-idx3-ubyte"
        raise DataError(f"{found}: no matching {missing}[.gz] in {root}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: images must be 3-D (count, rows, cols), got dimensions {list(images.shape)}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must be 1-D (count,), got dimensions {list(labels.shape)}")
    if labels.is_floating_point():
        raise DataError(f"{labels_path}: labels must be integers, got {str(labels.dtype).replace('torch.', '')}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels but {images_path.name} holds {len(images)} images")
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    return images_path, images, labels_path, labels.long()


def stratified_subset(indices: torch.Tensor, labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Exactly ``n`` of ``indices`` (all when n is None or larger), classes in proportion, from the seed."""
    if n is None or n >= len(indices):
        return indices
    y = labels[indices]
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * n / len(indices)
    quota = exact.floor().long()
    # the largest remainders get one more image each; the stable sort breaks ties by class
    order = torch.argsort(exact - quota, descending=True, stable=True)
    quota[order[:n - int(quota.sum())]] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = [indices[y == c][torch.randperm(int(k), generator=gen)[:q]]
              for c, k, q in zip(classes.tolist(), counts.tolist(), quota.tolist())]
    return torch.sort(torch.cat(picked)).values


def _class_names(root: Path, values: list[int]) -> list[str]:
    path = root / "classes.txt"
    if not path.is_file():
        return [str(v) for v in values]
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(values):
        raise DataError(f"{path}: {len(names)} names for {len(values)} classes (labels {values[0]}..{values[-1]})")
    return names


def load_idx(root: str | Path, options: str | dict[str, int] | None = None, *, img_size: int | None = None,
             in_chans: int | None = None, batch_size: int = 64, seed: int = 0, augment: bool = True) -> DataBundle:
    """A DataBundle from an IDX folder; see the module docstring for files and options."""
    root = Path(root).expanduser()
    if isinstance(options, dict):  # checked like the spec string
        options = ",".join(f"{k}={v}" for k, v in options.items())
    opts = parse_options(options, str(root))
    train_path, train_images, train_labels_path, train_labels = _read_pair(root, "train")
    values, labels = torch.unique(train_labels, return_inverse=True)
    if len(values) < 2:
        raise DataError(f"{train_labels_path}: every label is {values[0].item()}; need at least 2 classes")
    if 2 * len(values) > len(labels):
        raise DataError(f"{train_labels_path}: {len(values)} distinct labels among {len(labels)} images; "
                        "not class labels?")
    has_test = idx_file(root, "t10k-images", 3) or idx_file(root, "t10k-labels", 1)
    if has_test:
        test_path, test_images, test_labels_path, test_raw = _read_pair(root, "t10k")
        if test_images.shape[1:] != train_images.shape[1:]:
            raise DataError(f"{test_path}: images are {'x'.join(map(str, test_images.shape[1:]))} but "
                            f"{train_path.name} holds {'x'.join(map(str, train_images.shape[1:]))}")
        pos = torch.searchsorted(values, test_raw).clamp(max=len(values) - 1)
        if not torch.equal(values[pos], test_raw):
            unseen = sorted(set(test_raw.tolist()) - set(values.tolist()))
            raise DataError(f"{test_labels_path}: labels {unseen[:5]} never occur in {train_labels_path.name}")
        train_idx, val_idx = stratified_split(labels, (1 - VAL_FROM_TRAIN, VAL_FROM_TRAIN), seed)
        test_idx = torch.arange(len(pos))
        split = f"train minus a stratified {VAL_FROM_TRAIN:.0%} for val; test from t10k"
    else:
        test_images, pos = train_images, labels
        train_idx, val_idx, test_idx = stratified_split(labels, FLAT_FRACTIONS, seed)
        split = "stratified 70/15/15 of train"
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        if len(idx) == 0:
            raise DataError(f"{root}: the {name} split is empty (too few images to split)")
    train_idx = stratified_subset(train_idx, labels, opts.get("n_train"), seed)
    val_idx = stratified_subset(val_idx, labels, opts.get("n_val"), seed)
    test_idx = stratified_subset(test_idx, pos, opts.get("n_test"), seed)

    rows, cols = train_images.shape[1:]
    if img_size is None and rows != cols:
        raise DataError(f"{train_path}: images are {rows}x{cols}, not square; pass img_size to resize them")
    size = rows if img_size is None else int(img_size)
    if size < 1:
        raise DataError(f"{root}: img_size must be positive, got {img_size}")
    scale = 255.0 if train_images.dtype == torch.uint8 else 1.0

    def floats(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = images[idx].unsqueeze(1).float().div_(scale)  # the subset only: the rest stays uint8
        if (rows, cols) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    x_train = floats(train_images, train_idx)
    mean, std = x_train.mean().item(), x_train.std().item()
    std = std if std > 0 else 1.0  # constant images: leave the scale alone rather than divide by zero
    background = (0.0 - mean) / std
    max_shift = max(1, size // SHIFT_DIVISOR)

    def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return random_shift(x, max_shift, background, gen, SHIFT_PROBABILITY)

    def loader(x: torch.Tensor, y: torch.Tensor, train: bool) -> TensorLoader:
        x = repeat_channels((x - mean) / std, in_chans, str(root))
        return TensorLoader(x, y, batch_size, shuffle=train, augment=shift if (train and augment) else None, seed=seed)

    train = loader(x_train, labels[train_idx], True)
    chans = train.images.shape[1]
    return DataBundle(
        name=root.name, train=train, val=loader(floats(train_images, val_idx), labels[val_idx], False),
        test=loader(floats(test_images, test_idx), pos[test_idx], False),
        num_classes=len(values), class_names=_class_names(root, values.tolist()), img_size=size, in_chans=chans,
        mean=(mean,) * chans, std=(std,) * chans,
        details={"source": str(root), "format": "idx", "split": split, "subset": dict(opts), "seed": seed,
                 "augment": bool(augment)},
    )
