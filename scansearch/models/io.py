"""Saving and loading built models: ``genotype.yaml``, ``config.yaml``, ``weights.safetensors``.

Nothing is unpickled: the config is YAML read with ``safe_load``, the weights are
safetensors. Writes go to a temporary folder beside the target, then into place by
rename, so a reader never sees a half-written model.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from ..genotype import Genotype, GenotypeError
from .base import ScanModel
from .build import build_from_config
from .errors import ModelError

GENOTYPE_FILE = "genotype.yaml"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
FILES = (WEIGHTS_FILE, CONFIG_FILE, GENOTYPE_FILE)


def save_model(model: ScanModel, directory: str | os.PathLike) -> Path:
    """Write the model's genotype, config and weights into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    if not isinstance(model, ScanModel) or model.genotype is None:
        raise ModelError("save_model needs a model made by build_model (it carries a genotype and a config)")
    try:  # refuse now what load_model would refuse later
        Genotype.from_dict(model.genotype.to_dict(), where="the model's genotype")
    except GenotypeError as err:
        raise ModelError(str(err)) from None
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ModelError(f"{target}: exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "scansearch_model": "1"})
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(model.config, sort_keys=False), encoding="utf-8")
        model.genotype.save(tmp / GENOTYPE_FILE)
        if not target.exists():
            os.rename(tmp, target)
        else:  # keep whatever else the folder holds; each of our files is replaced in one rename
            for name in FILES:
                os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ScanModel:
    """Rebuild a saved model and load its weights; any problem is one :class:`ModelError` line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    model = build_from_config(config, genotype, where=str(config_path))
    weights_path = root / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{weights_path}: corrupt or truncated weights file ({str(err).splitlines()[0]})") from None
    _check_state(model, state, weights_path)
    model.load_state_dict(state, strict=True)
    return model.to(map_location)


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
