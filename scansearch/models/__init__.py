"""Vision Mamba models built from genotypes: Vim, LocalVim, VMamba, LocalVMamba, MambaOut, RAUM-Net.

``build_model(preset_or_genotype)`` returns a plain ``nn.Module`` carrying ``.genotype``
and ``.config``; ``save_model``/``load_model`` store it as genotype, config and
safetensors weights. Nothing here imports :mod:`scansearch.searchers`.
"""
from scansearch.models.base import ScanModel
from scansearch.models.blocks import Block, GatedCNN
from scansearch.models.build import FAMILIES, build_from_config, build_model, model_config, recorded_config
from scansearch.models.errors import ModelError, ShapeError
from scansearch.models.serialize import load_model, save_model
from scansearch.models.mixer import DirectionSubset, ScanMixer, SCAttn
from scansearch.models.presets import PRESETS, Preset, Published, get_preset, list_presets
from scansearch.models.raum import RAUMConfig, RAUMNet, RegionAttention

__all__ = [
    "Block", "DirectionSubset", "FAMILIES", "GatedCNN", "ModelError", "PRESETS", "Preset", "Published", "SCAttn", "ScanMixer",
    "RAUMConfig", "RAUMNet", "RegionAttention", "ScanModel", "ShapeError", "build_from_config", "build_model", "get_preset", "model_config", "recorded_config", "list_presets", "load_model", "save_model",
]
