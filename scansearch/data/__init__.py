"""Data for search and training: built-in ``digits`` and ``planted``, an IDX folder or an image folder.

``load_data(spec)`` is the one entry point::

    data = load_data("digits")                       # 8x8 grey handwritten digits, 10 classes
    data = load_data("planted")                      # 16x16 2x2-motif task (see data/planted.py)
    data = load_data("planted:grid=24,motifs_per_image=8")
    data = load_data(PlantedConfig(grid=24))
    data = load_data("~/data/fashion-mnist")         # IDX files, as MNIST ships (see data/idx.py)
    data = load_data("~/data/mnist:n_train=2500,n_val=500,n_test=1000")
    data = load_data("~/data/CUB_200_2011", img_size=224)
    for images, labels in data.train: ...            # (B, C, H, W) float, normalised; (B,) long

Built-ins live in memory and are batched by slicing (``TensorLoader``); folders are
decoded by worker processes (``FolderLoader``, see ``data/images.py``). Both have
``set_epoch(epoch)``, which the training loop calls so that shuffling and augmentation
depend on ``(seed, epoch)`` only, and ``independent()``, the same batches from a loader
of its own (the DARTS architecture step reads the validation split while evaluation
reads it too). Neither draws from the global RNG.
"""
from __future__ import annotations

import os
from pathlib import Path

from scansearch.data.bundle import DataBundle, DataError, TensorLoader, stratified_split
from scansearch.data.digits import load_digits
from scansearch.data.folders import load_folder
from scansearch.data.idx import is_idx_folder, load_idx, read_idx, split_options
from scansearch.data.images import FolderLoader, default_workers
from scansearch.data.planted import PlantedConfig, generate_planted, load_planted, planted_motifs, signal_multiset

BUILTINS = ("digits", "planted")


def is_builtin(spec) -> bool:
    """A built-in data set (``digits``, ``planted[:...]``), which has an image size of its own."""
    return isinstance(spec, str) and spec.strip().partition(":")[0] in BUILTINS


def default_img_size(spec, model_size: int | tuple[int, int] | None) -> int | None:
    """The size images of ``spec`` load at when none is asked for: a built-in set's own
    (None), else ``model_size``, the size the model is configured or was searched at."""
    if is_builtin(spec) or model_size is None:
        return None
    return model_size if isinstance(model_size, int) else model_size[0]

__all__ = [
    "BUILTINS", "DataBundle", "DataError", "FolderLoader", "PlantedConfig", "TensorLoader", "default_img_size",
    "default_workers", "is_builtin",
    "generate_planted", "is_idx_folder", "load_data", "load_digits", "load_folder", "load_idx", "load_planted",
    "planted_motifs", "read_idx", "signal_multiset", "stratified_split",
]


def load_data(spec: str | os.PathLike | PlantedConfig, *, img_size: int | None = None, in_chans: int | None = None,
              batch_size: int = 64, seed: int = 0, workers: int | None = None, augment: bool = True) -> DataBundle:
    """Load a data set by name, planted config or folder path; see the module docstring.

    A folder of IDX files is recognised before the image-folder layouts and is the one
    folder that takes options (``PATH:n_train=...``). ``seed`` fixes the splits, the
    shuffling and the augmentation. ``workers`` applies to image folders only (in-memory
    sets need none); ``augment=False`` turns off training
    augmentation. Raises ``DataError`` with one line for anything that cannot be used.
    """
    if isinstance(spec, PlantedConfig):
        return load_planted(spec, img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed)
    if isinstance(spec, str) and spec.strip() == "digits":
        return load_digits(img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed, augment=augment)
    if isinstance(spec, str) and spec.strip().partition(":")[0] == "planted":
        config = PlantedConfig.from_spec(spec.strip())
        return load_planted(config, img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed)
    spec, options = split_options(spec) if isinstance(spec, str) else (spec, None)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"no such data set or folder: {str(spec)!r} (built-in: {', '.join(BUILTINS)})")
    if is_idx_folder(path):
        return load_idx(path, options, img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed,
                        augment=augment)
    if options is not None:
        raise DataError(f"{path}: options ({options}) apply to IDX folders only (no train-images-idx3-ubyte here)")
    return load_folder(path, img_size=img_size, in_chans=in_chans, batch_size=batch_size, seed=seed,
                       workers=workers, augment=augment)
