"""Saving and loading built models: ``genotype.yaml``, ``config.yaml``, ``weights.safetensors``.

Nothing is unpickled: the config is YAML read with ``safe_load``, the weights are
safetensors. A save is all or nothing: the model is written into a sibling folder, which
then takes the target's place (``fileio.atomic_dir``), so the three files always belong
together, whatever happens halfway.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scansearch.fileio import atomic_dir
from scansearch.genotype import Genotype, GenotypeError
from scansearch.models.base import ScanModel
from scansearch.models.build import build_from_config
from scansearch.models.errors import ModelError

GENOTYPE_FILE = "genotype.yaml"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
FILES = (WEIGHTS_FILE, CONFIG_FILE, GENOTYPE_FILE)
# A training run's checkpoint (scansearch.train): `scansearch train` saves the model into the
# folder it trains in, beside its checkpoint and history.
TRAINING_FILE = "checkpoint.pt"


def save_model(model: ScanModel, directory: str | os.PathLike) -> Path:
    """Write the model's genotype, config and weights into ``directory``, all or nothing.

    ``directory`` is new, empty, a saved model (replaced whole) or a training run's folder
    (its other files stay); anything else is refused, so no user folder is overwritten.
    """

    if not isinstance(model, ScanModel) or model.genotype is None:
        raise ModelError("save_model needs a model made by build_model (it carries a genotype and a config)")
    try:  # refuse now what load_model would refuse later
        Genotype.from_dict(model.genotype.to_dict(), where="the model's genotype")
    except GenotypeError as err:
        raise ModelError(str(err)) from None
    target = Path(directory)
    _check_replaceable(target)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(target) as tmp:
        if target.is_dir():  # what else the folder holds (a training run's files) stays
            for item in target.iterdir():
                if item.name not in FILES:
                    _link_or_copy(item, tmp / item.name)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "scansearch_model": "1"})
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(model.config, sort_keys=False), encoding="utf-8")
        model.genotype.save(tmp / GENOTYPE_FILE)
    return target


def _check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a new or empty folder, a saved model or a training run's folder."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ModelError(f"{target}: exists and is not a directory")
    names = {item.name for item in target.iterdir()}
    if names and not set(FILES) <= names and TRAINING_FILE not in names:
        raise ModelError(f"{target}: not empty and not a saved model (no {', '.join(FILES)}); "
                         f"save into a new or empty folder")


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link where the file system allows it (no copy of a large checkpoint), else a copy."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(source, dest)


def _link_or_copy_file(source, dest) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ScanModel:
    """Rebuild a saved model and load its weights; any problem is one :class:`ModelError` line."""

    root = Path(directory)
    if not root.is_dir():
        raise ModelError(f"{root}: not a model directory (expected {', '.join(FILES)})")
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise ModelError(f"{root}: missing {', '.join(missing)}")
    try:
        genotype = Genotype.load(root / GENOTYPE_FILE)
    except GenotypeError as err:
        raise ModelError(str(err)) from None
    config_path = root / CONFIG_FILE
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ModelError(f"{config_path}: cannot read: {str(err).splitlines()[0]}") from None
    weights_path = root / WEIGHTS_FILE
    model = _build_within(config, genotype, config_path, weights_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{weights_path}: corrupt or truncated weights file ({str(err).splitlines()[0]})") from None
    _check_state(model, state, weights_path)
    model.load_state_dict(state, strict=True)
    return model.to(map_location)


def _build_within(config, genotype: Genotype, config_path: Path, weights_path: Path) -> ScanModel:
    """Build the model a config describes, first without memory (meta tensors), so that a config
    whose model the weights file cannot hold (at 2 bytes a parameter at least) is refused
    before anything is allocated."""
    try:
        with torch.device("meta"):
            probe = build_from_config(config, genotype, where=str(config_path))
    except ModelError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as err:
        raise ModelError(f"{config_path}: cannot build a model from it ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120]})") from None
    numel = sum(t.numel() for t in probe.state_dict().values())
    size = weights_path.stat().st_size
    if 2 * numel > size + 4096:
        raise ModelError(f"{weights_path}: corrupt or truncated weights file ({size:,} bytes for the {numel:,} "
                         f"weights {CONFIG_FILE} describes)")
    return build_from_config(config, genotype, where=str(config_path))


def _check_state(model: ScanModel, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise ModelError(f"{where}: weights do not match the config ({'; '.join(parts)})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelError(f"{where}: weights do not match the config ({name} has shape "
                             f"{tuple(state[name].shape)}, the model expects {tuple(tensor.shape)})")
        if not state[name].is_floating_point() and tensor.is_floating_point():
            raise ModelError(f"{where}: {name} has dtype {state[name].dtype}, expected a floating point tensor")
