"""VMamba (MzeroMiko/VMamba, v0 "vanilla"): a hierarchical backbone of SS2D blocks,
generalised from the fixed cross-scan to each block's own directions.

Patch embedding (4x4 conv + LayerNorm), four stages of pre-norm blocks joined by
patch merging (2x2 neighbours concatenated, LayerNorm, linear to the next width),
final norm, mean pooling, linear head. The SS2D mixer: in_proj, 3x3 depthwise conv
in image space, the directions' scans merged in image order, LayerNorm, SiLU gate,
out_proj; no MLP (v0: d_state 16, ssm_ratio 2, dt_rank auto). VMamba-T scans
``(h, v, h_flip, v_flip)`` (``cross4``) in all 15 blocks. The genotype has one entry
per block, stage after stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch.genotype import Layer
from scansearch.models.base import ScanModel, make_mixer, stage_slices
from scansearch.models.blocks import Block, drop_path_rates, init_trunc_normal
from scansearch.models.config import ModelConfig, Staged
from scansearch.models.errors import ModelError


@dataclass(frozen=True)
class VMambaConfig(Staged, ModelConfig):
    family = "vmamba"
    patch_size: int = 4
    depths: tuple = (2, 2, 9, 2)
    dims: tuple = (96, 192, 384, 768)
    d_state: int = 16
    ssm_ratio: float = 2.0
    dt_rank: object = "auto"
    d_conv: int = 3
    merge: str = "sum"
    scattn: bool = False
    scattn_spatial: bool = False
    norm_eps: float = 1e-5

    def check(self, where: str) -> None:
        super().check(where)
        if min(self.patch_size, self.d_state, *self.depths, *self.dims) < 1:
            raise ModelError(f"{where}: patch_size, d_state, depths and dims must be >= 1")
        if self.d_conv % 2 == 0:
            raise ModelError(f"{where}: d_conv must be odd (a same-size 2-D conv), got {self.d_conv}")


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (odd sizes padded), LayerNorm, linear: (B, H, W, C) -> (B, H/2, W/2, out)."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    """The blocks of one resolution; tokens travel as (B, H, W, C)."""

    def __init__(self, blocks: list[Block], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        batch, H, W, C = x.shape
        tokens = x.reshape(batch, H * W, C)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, (H, W), None if weights is None else weights[i])
        x = tokens.view(batch, H, W, C)
        return x if self.downsample is None else self.downsample(x)


class VMamba(ScanModel):
    """VMamba / LocalVMamba. ``layers``: one entry per block across stages."""

    config_cls = VMambaConfig

    def __init__(self, cfg: VMambaConfig, layers: Sequence[Layer]):
        super().__init__(cfg, layers)
        dims = cfg.dims
        self.patch_embed = nn.Conv2d(cfg.in_chans, dims[0], cfg.patch_size, cfg.patch_size)
        self.patch_norm = nn.LayerNorm(dims[0], eps=cfg.norm_eps)
        rates = drop_path_rates(cfg.drop_path_rate, cfg.num_layers)
        stages = []
        for s, part in enumerate(stage_slices(cfg.depths)):
            C = dims[s]
            ssm = dict(d_state=cfg.d_state, expand=cfg.ssm_ratio, dt_rank=cfg.dt_rank, conv="image",
                       d_conv=cfg.d_conv, out_norm=True, scattn=cfg.scattn, scattn_spatial=cfg.scattn_spatial,
                       merge=cfg.merge)
            blocks = [Block(nn.LayerNorm(C, eps=cfg.norm_eps),
                            make_mixer(layer, C, cnn_expansion=cfg.cnn_expansion, cnn_kernel=cfg.cnn_kernel, **ssm),
                            rates[part.start + j])
                      for j, layer in enumerate(self.layer_choices[part])]
            last = s == len(dims) - 1
            stages.append(Stage(blocks, None if last else PatchMerging(C, dims[s + 1], cfg.norm_eps)))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """VMamba's: truncated normal (std 0.02) for every linear, zero biases."""
        if self.patch_embed.weight.is_meta:
            return
        init_trunc_normal(self)

    def feature_map(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """The last stage's tokens ``(B, H, W, C)`` after the final norm."""
        p = self.cfg.patch_size
        pad_h, pad_w = (-images.shape[-2]) % p, (-images.shape[-1]) % p
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        x = self.patch_norm(self.patch_embed(images).permute(0, 2, 3, 1))
        for stage, part in zip(self.stages, stage_slices(self.cfg.depths)):
            x = stage(x, None if weights is None else weights[part])
        return self.norm(x)

    def forward_features(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None):
        """The pooled descriptor ``(B, C)`` the classifier reads."""
        return self.feature_map(images, weights).mean((1, 2))

    def forward(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits; ``weights`` (optional, one (K,) tensor or None per block) go to the mixers."""
        return self.head(self.head_drop(self.forward_features(images, weights)))


