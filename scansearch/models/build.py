"""``build_model``: a preset name, a Genotype or a genotype file in, a plain nn.Module out."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from scansearch import spaces
from scansearch.genotype import Genotype, GenotypeError
from scansearch.models.base import ScanModel
from scansearch.models.errors import ModelError
from scansearch.models.local_vim import LocalVisionMamba
from scansearch.models.local_vmamba import LocalVMamba
from scansearch.models.mambaout import MambaOut
from scansearch.models.presets import PRESETS, Preset, get_preset
from scansearch.models.raum import RAUMNet
from scansearch.models.vim import VisionMamba
from scansearch.models.vmamba import VMamba

FAMILIES: dict[str, type[ScanModel]] = {
    "vim": VisionMamba,
    "local_vim": LocalVisionMamba,
    "vmamba": VMamba,
    "local_vmamba": LocalVMamba,
    "mambaout": MambaOut,
    "raum": RAUMNet,
}
ISOTROPIC = ("vim", "local_vim")  # one depth: a genotype naming only the family sets it


def family_class(name: str) -> type[ScanModel]:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})") from None


def resolve_source(spec) -> tuple[Preset, Genotype | None]:
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
    grid = cfg.token_grid
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
    depth). What a searched genotype records about the model it was searched on (its
    provenance's ``img_size`` and ``model_overrides``, see :func:`recorded_config`) applies
    unless ``img_size`` or ``overrides`` say otherwise, so the model built is the model
    searched. ``overrides`` set config fields (``dim=64``, ``drop_path_rate=0.1``, ...);
    ``backend`` picks the scan backend of every mixer (None: the dispatcher's choice).
    The model carries ``.genotype`` (a Genotype) and ``.config`` (a plain dict).
    """
    cfg, genotype = model_config(preset_or_genotype, num_classes, img_size, in_chans, **overrides)
    model = family_class(cfg.family)(cfg, genotype.layers)
    model.genotype = genotype
    if backend is not None:
        model.set_backend(backend)
    return model


def model_config(preset_or_genotype, num_classes: int = 1000, img_size: int | tuple[int, int] | None = None,
                 in_chans: int = 3, **overrides: Any):
    """The checked config and the genotype :func:`build_model` would build from these arguments,
    without building anything: every field's type and range, and the layer count, are checked
    here (a :class:`ModelError` naming the field)."""
    preset, genotype = resolve_source(preset_or_genotype)
    if genotype is not None:
        recorded = recorded_config(genotype)
        recorded_size = recorded.pop("img_size", None)
        img_size = recorded_size if img_size is None else img_size
        overrides = {**recorded, **overrides}
    family = preset.family
    values = {k: v for k, v in preset.config.items() if k != "family"}
    values.update(preset=preset.name, num_classes=num_classes, in_chans=in_chans)
    if img_size is not None:
        values["img_size"] = img_size
    if genotype is not None and genotype.model == family and family in ISOTROPIC and "depth" not in overrides:
        values["depth"] = len(genotype.layers)
    values.update(overrides)
    cfg = family_class(family).config_cls.from_dict({"family": family, **values}, where=preset.name)
    if genotype is None:
        genotype = preset_genotype(preset, cfg)
    elif len(genotype.layers) != cfg.num_layers:
        raise ModelError(f"genotype has {len(genotype.layers)} layers, {preset.name} has {cfg.num_layers}")
    return cfg, genotype


def recorded_config(genotype: Genotype) -> dict[str, Any]:
    """The config fields a genotype records about the model it was searched on.

    A search writes ``img_size`` and the fields it changed from the preset
    (``model_overrides``, e.g. ``{patch_size: 2}``) into the provenance; the result maps
    config field names to values (``img_size`` included).
    """
    provenance = genotype.provenance
    recorded: dict[str, Any] = {}
    overrides = provenance.get("model_overrides")
    if overrides is not None:
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise ModelError(f"genotype provenance: model_overrides must map config fields to values, "
                             f"got {overrides!r}")
        recorded.update(overrides)
    if provenance.get("img_size") is not None:
        recorded["img_size"] = provenance["img_size"]
    return recorded


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
