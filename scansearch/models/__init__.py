"""Vision Mamba models built from genotypes: Vim, LocalVim, VMamba, LocalVMamba, MambaOut, RAUM-Net.

``build_model(preset_or_genotype)`` returns a plain ``nn.Module`` carrying ``.genotype``
and ``.config``; ``save_model``/``load_model`` store it as genotype, config and
safetensors weights. Nothing here imports :mod:`scansearch.searchers`.
"""
from .base import ScanModel
from .blocks import Block, GatedCNN
from .build import FAMILIES, build_from_config, build_model, model_config, recorded_config
from .errors import ModelError, ShapeError
from .io import load_model, save_model
from .mixer import DirectionSubset, SCAttn, ScanMixer
from .presets import PRESETS, Preset, Published, get_preset, list_presets
from .raum import RAUMConfig, RAUMNet, RegionAttention

__all__ = [
    "Block", "DirectionSubset", "FAMILIES", "GatedCNN", "ModelError", "PRESETS", "Preset", "Published", "SCAttn", "ScanMixer",
    "RAUMConfig", "RAUMNet", "RegionAttention", "ScanModel", "ShapeError", "build_from_config", "build_model", "get_preset", "model_config", "recorded_config", "list_presets", "load_model", "save_model",
]
