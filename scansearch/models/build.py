"""``build_model``: a preset name, a Genotype or a genotype file in, a plain nn.Module out."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .. import spaces
from ..genotype import Genotype, GenotypeError
from .base import ScanModel
from .errors import ModelError
from .local_vim import LocalVisionMamba
from .local_vmamba import LocalVMamba
from .mambaout import MambaOut
from .presets import PRESETS, Preset, get_preset
from .vim import VisionMamba
from .vmamba import VMamba

FAMILIES: dict[str, type[ScanModel]] = {
    "vim": VisionMamba,
    "local_vim": LocalVisionMamba,
    "vmamba": VMamba,
    "local_vmamba": LocalVMamba,
    "mambaout": MambaOut,
}
ISOTROPIC = ("vim", "local_vim")  # one depth: a genotype naming only the family sets it


def family_class(name: str) -> type[ScanModel]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def _resolve(spec) -> tuple[Preset, Genotype | None]:
    """(preset, genotype or None) from a preset name, a Genotype or a genotype file."""
    if isinstance(spec, Genotype):
        return _preset_for(spec, "genotype"), spec
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text in PRESETS:
            return PRESETS[text], None
        path = Path(text)
        if path.suffix in (".yaml", ".yml") or path.exists():
            try:
                genotype = Genotype.load(path)
            except GenotypeError as err:
                raise ModelError(str(err)) from None
            return _preset_for(genotype, text), genotype
        get_preset(text)  # raises: unknown preset
    raise ModelError(f"expected a preset name, a Genotype or a genotype file, got {type(spec).__name__}")


def _preset_for(genotype: Genotype, where: str) -> Preset:
    """The preset a genotype was searched for; a bare family name means that family's micro preset."""
    if genotype.model is None:
        raise ModelError(f"{where}: the genotype names no model (set 'model:' to a preset such as local_vim_tiny)")
    if genotype.model in PRESETS:
        return PRESETS[genotype.model]
    if genotype.model in FAMILIES:
        return PRESETS[f"{genotype.model}_micro"]
    raise ModelError(f"{where}: the genotype's model {genotype.model!r} is neither a preset nor a family "
                     f"(presets: {', '.join(sorted(PRESETS))})")


def preset_genotype(preset: Preset, cfg) -> Genotype:
    """The genotype a preset ships with: the same directions in every layer, every layer
    ``none``, or a shipped genotype (LocalMamba's searched directions, provenance kept)."""
    grid = _token_grid(cfg)
    n = cfg.num_layers
    if isinstance(preset.layers, str) and preset.layers != spaces.NONE:
        shipped = Genotype.preset(preset.layers)
        if len(shipped.layers) != n:
            raise ModelError(f"preset {preset.name}: its genotype {preset.layers!r} has {len(shipped.layers)} "
                             f"layers, the model has {n}")
        return dataclasses.replace(shipped, model=preset.name, grid=grid)
    layer = spaces.NONE if preset.layers == spaces.NONE else tuple(preset.layers)
    return Genotype(layers=(layer,) * n, model=preset.name, space=preset.space, grid=grid)


def build_model(preset_or_genotype, num_classes: int = 1000, img_size: int | tuple[int, int] | None = None,
                in_chans: int = 3, *, backend: str | None = None, **overrides: Any) -> ScanModel:
    """Build a model from a preset name, a :class:`Genotype` or a path to a genotype YAML.

    A genotype builds the preset it names (``model:``) with its layers; a bare family name
    in ``model:`` takes that family's micro preset (isotropic families: with the genotype's
    depth). ``overrides`` set config fields (``dim=64``, ``drop_path_rate=0.1``, ...);
    ``backend`` picks the scan backend of every mixer (None: the dispatcher's choice).
    The model carries ``.genotype`` (a Genotype) and ``.config`` (a plain dict).
    """
    preset, genotype = _resolve(preset_or_genotype)
    family = preset.family
    cls = family_class(family)
    values = {k: v for k, v in preset.config.items() if k != "family"}
    values.update(preset=preset.name, num_classes=num_classes, in_chans=in_chans)
    if img_size is not None:
        values["img_size"] = img_size
    if genotype is not None and genotype.model == family and family in ISOTROPIC and "depth" not in overrides:
        values["depth"] = len(genotype.layers)
    values.update(overrides)
    cfg = cls.config_cls.from_dict({"family": family, **values}, where=preset.name)
    if genotype is None:
        genotype = preset_genotype(preset, cfg)
    elif len(genotype.layers) != cfg.num_layers:
        raise ModelError(f"genotype has {len(genotype.layers)} layers, {preset.name} has {cfg.num_layers}")
    model = cls(cfg, genotype.layers)
    model.genotype = genotype
    if backend is not None:
        model.set_backend(backend)
    return model


def build_from_config(config: dict[str, Any], genotype: Genotype, where: str = "config") -> ScanModel:
    """Rebuild a model from a saved config dict and genotype (no preset needed)."""
    if not isinstance(config, dict):
        raise ModelError(f"{where}: a model config must be a mapping")
    cls = family_class(config.get("family"))
    cfg = cls.config_cls.from_dict(config, where=where)
    if len(genotype.layers) != cfg.num_layers:
        raise ModelError(f"{where}: genotype has {len(genotype.layers)} layers, the config has {cfg.num_layers}")
    model = cls(cfg, genotype.layers)
    model.genotype = genotype
    return model


def _token_grid(cfg) -> tuple[int, int]:
    """The first mixer layer's token grid at the configured image size."""
    H, W = cfg.image_hw
    if hasattr(cfg, "patch_size"):
        p = cfg.patch_size
        return -(-H // p), -(-W // p)
    return -(-H // 4), -(-W // 4)  # MambaOut's stem: two stride-2 convs
