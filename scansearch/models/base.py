"""What every built model shares: its config and genotype, the scan backend switch,
and the layer-by-layer view that the command line and the FLOP counter read."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch.nn as nn

from scansearch import spaces
from scansearch.genotype import Genotype, Layer
from scansearch.models.blocks import Block, GatedCNN
from scansearch.models.config import ModelConfig
from scansearch.models.errors import ModelError
from scansearch.models.mixer import ScanMixer


class ScanModel(nn.Module):
    """Base of the families. ``cfg`` is the family's config dataclass; ``config`` the same as
    a plain dict; ``genotype`` the per-layer directions it was built with."""

    config_cls: type[ModelConfig] = ModelConfig

    def __init__(self, cfg: ModelConfig, layers: Sequence[Layer]):
        super().__init__()
        layers = tuple(layers)
        if len(layers) != cfg.num_layers:
            raise ModelError(f"{len(layers)} layer choices given, the model has {cfg.num_layers} layers")
        self.cfg = cfg
        self.layer_choices = layers
        self.genotype: Genotype | None = None

    @property
    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def blocks(self) -> list[Block]:
        """Every mixer block in forward order (one per genotype layer)."""
        return [m for m in self.modules() if isinstance(m, Block)]

    def mixers(self) -> Iterator[ScanMixer]:
        return (m for m in self.modules() if isinstance(m, ScanMixer))

    def set_backend(self, backend: str | None) -> "ScanModel":
        """Scan backend for every mixer ("reference", "torch", "triton"; None = the dispatcher's)."""
        for mixer in self.mixers():
            mixer.backend = backend
        return self


def make_mixer(layer: Layer, dim: int, *, cnn_expansion: float, cnn_kernel: int, cnn_conv_ratio: float = 1.0,
               **ssm) -> nn.Module:
    """A ``none`` layer becomes a gated CNN; a tuple of directions a scan mixer."""
    if layer == spaces.NONE:
        return GatedCNN(dim, expansion=cnn_expansion, kernel_size=cnn_kernel, conv_ratio=cnn_conv_ratio)
    return ScanMixer(dim, layer, **ssm)


def stage_slices(depths: Sequence[int]) -> list[slice]:
    """Genotype layers of each stage of a hierarchical model (one entry per block, stage by stage)."""
    out, start = [], 0
    for d in depths:
        out.append(slice(start, start + d))
        start += d
    return out
