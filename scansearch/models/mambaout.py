"""MambaOut (yuweihao/MambaOut): hierarchical gated-CNN blocks, no SSM at all.

Stem of two 3x3 stride-2 convs (LayerNorm, GELU between), three 3x3 stride-2
downsampling convs, pre-norm gated-CNN blocks (expansion 8/3, 7x7 depthwise conv),
mean pooling, LayerNorm, MLP head (4x, GELU, LayerNorm). Every layer's choice is
``none``; a genotype may put directions in some blocks, which then get a VMamba-style
scan mixer (image-space conv, d_state/ssm_ratio below) inside the same block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from scansearch.genotype import Layer
from scansearch.models.base import ScanModel, make_mixer, stage_slices
from scansearch.models.blocks import Block, drop_path_rates, init_trunc_normal
from scansearch.models.config import ModelConfig, Staged
from scansearch.models.errors import ModelError
from scansearch.models.vmamba import Stage


@dataclass(frozen=True)
class MambaOutConfig(Staged, ModelConfig):
    family = "mambaout"
    depths: tuple = (3, 3, 9, 3)
    dims: tuple = (96, 192, 384, 576)
    conv_ratio: float = 1.0
    head_mlp_ratio: float = 4.0
    head_dropout: float = 0.0
    norm_eps: float = 1e-6
    # scan mixers, for blocks whose genotype entry names directions
    d_state: int = 16
    ssm_ratio: float = 2.0
    dt_rank: object = "auto"
    d_conv: int = 3
    scattn: bool = False
    token_stride = 4  # the stem: two stride-2 convs (a class attribute, not a field)

    def check(self, where: str) -> None:
        super().check(where)
        if not 0.0 < self.conv_ratio <= 1.0:
            raise ModelError(f"{where}: conv_ratio must be in (0, 1], got {self.conv_ratio}")


class ChannelsLastConv(nn.Module):
    """A 3x3 stride-2 conv on (B, H, W, C) tensors, then LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Stem(nn.Module):
    """Two 3x3 stride-2 convs: (B, in, H, W) -> (B, H/4, W/4, dim)."""

    def __init__(self, in_chans: int, dim: int, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(dim // 2, eps=eps)
        self.act = nn.GELU()
        self.down = ChannelsLastConv(dim // 2, dim, eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(images).permute(0, 2, 3, 1)))
        return self.down(x)


class MlpHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, ratio: float, eps: float, dropout: float):
        super().__init__()
        hidden = int(ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.norm(self.act(self.fc1(x)))))


class MambaOut(ScanModel):
    config_cls = MambaOutConfig

    def __init__(self, cfg: MambaOutConfig, layers: Sequence[Layer]):
        super().__init__(cfg, layers)
        dims, eps = cfg.dims, cfg.norm_eps
        self.downsample = nn.ModuleList(
            [Stem(cfg.in_chans, dims[0], eps)] + [ChannelsLastConv(dims[i - 1], dims[i], eps) for i in range(1, len(dims))])
        rates = drop_path_rates(cfg.drop_path_rate, cfg.num_layers)
        stages = []
        for s, part in enumerate(stage_slices(cfg.depths)):
            C = dims[s]
            ssm = dict(d_state=cfg.d_state, expand=cfg.ssm_ratio, dt_rank=cfg.dt_rank, conv="image",
                       d_conv=cfg.d_conv, out_norm=True, scattn=cfg.scattn)
            blocks = [Block(nn.LayerNorm(C, eps=eps),
                            make_mixer(layer, C, cnn_expansion=cfg.cnn_expansion, cnn_kernel=cfg.cnn_kernel,
                                       cnn_conv_ratio=cfg.conv_ratio, **ssm),
                            rates[part.start + j])
                      for j, layer in enumerate(self.layer_choices[part])]
            stages.append(Stage(blocks, None))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.head = (MlpHead(dims[-1], cfg.num_classes, cfg.head_mlp_ratio, eps, cfg.head_dropout)
                     if cfg.num_classes > 0 else nn.Identity())
        self._init_weights()

    def _init_weights(self) -> None:
        """MambaOut's: truncated normal (std 0.02) for convs and linears, zero biases."""
        if self.norm.weight.is_meta:
            return
        init_trunc_normal(self, (nn.Conv2d, nn.Linear))

    def forward_features(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None):
        x = images
        for down, stage, part in zip(self.downsample, self.stages, stage_slices(self.cfg.depths)):
            x = stage(down(x), None if weights is None else weights[part])
        return self.norm(x.mean((1, 2)))

    def forward(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        return self.head(self.forward_features(images, weights))
