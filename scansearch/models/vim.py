"""Vim (Vision Mamba, hustvl/Vim): a plain patch-16 backbone of bidirectional Mamba layers.

Isotropic: patch embedding, optional class token in the middle of the sequence,
absolute position embedding (interpolated to other image sizes), ``depth``
pre-norm blocks whose mixers scan each layer's directions, a final norm, class
token or mean pooling, a linear head. Vim-Ti scans ``(h, h_flip)`` in every layer
and averages the two (``merge="mean"``, Vim's ``if_devide_out``). ``local_vim``
reuses this model with other defaults (SCAttn, RoPE, mean pooling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch.genotype import Layer
from scansearch.models.base import ScanModel, make_mixer
from scansearch.models.blocks import Block, GatedCNN, drop_path_rates, init_trunc_normal
from scansearch.models.config import ModelConfig
from scansearch.models.errors import ModelError


@dataclass(frozen=True)
class VimConfig(ModelConfig):
    family = "vim"
    patch_size: int = 16
    dim: int = 192
    depth: int = 24
    d_state: int = 16
    expand: float = 2.0
    d_conv: int = 4
    dt_rank: object = "auto"
    cls_token: bool = True
    pool: str = "cls"
    pos_embed: bool = True
    rope: bool = False
    merge: str = "mean"
    scattn: bool = False
    scattn_spatial: bool = False
    norm: str = "rms"
    norm_eps: float = 1e-5

    @property
    def num_layers(self) -> int:
        return self.depth

    def check(self, where: str) -> None:
        super().check(where)
        if self.pool == "cls" and not self.cls_token:
            raise ModelError(f"{where}: pool 'cls' needs cls_token: true")
        if self.rope and self.dim % 4:
            raise ModelError(f"{where}: rope needs dim divisible by 4, got {self.dim}")
        if min(self.patch_size, self.dim, self.depth, self.d_state, self.d_conv) < 1:
            raise ModelError(f"{where}: patch_size, dim, depth, d_state and d_conv must be >= 1")
        self.check_width(where, "expand", self.expand, self.dim)
        self.check_width(where, "cnn_expansion", self.cnn_expansion, self.dim)


class RotaryEmbedding2D(nn.Module):
    """LocalVim's rotary position embedding (EVA-02's ``VisionRotaryEmbeddingFast``): half the
    channels rotate with the row, half with the column; positions are scaled so that the grid
    the model was built for spans ``[0, built)`` whatever grid it runs on."""

    def __init__(self, dim: int, built_hw: tuple[int, int], theta: float = 10000.0):
        super().__init__()
        half = dim // 2
        self.built_hw = built_hw
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, half, 2).float() / half), persistent=False)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, hw: tuple[int, int], device, dtype):
        key = (hw, str(device), dtype)
        if key not in self._tables:
            def axis(n: int, built: int) -> torch.Tensor:
                t = torch.arange(n, device=device, dtype=torch.float32) / n * built
                return torch.outer(t, self.inv_freq.to(device)).repeat_interleave(2, dim=-1)  # (n, half)
            H, W = hw
            rows, cols = axis(H, self.built_hw[0]), axis(W, self.built_hw[1])
            freqs = torch.cat([rows[:, None, :].expand(H, W, -1), cols[None, :, :].expand(H, W, -1)], dim=-1)
            freqs = freqs.reshape(H * W, -1)
            self._tables[key] = (freqs.cos().to(dtype), freqs.sin().to(dtype))
        return self._tables[key]

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        grid = hw[0] * hw[1]
        if x.shape[1] == grid + 1:  # the class token carries no position
            pos = grid // 2
            body = self.forward(torch.cat([x[:, :pos], x[:, pos + 1:]], 1), hw)
            return torch.cat([body[:, :pos], x[:, pos:pos + 1], body[:, pos:]], 1)
        cos, sin = self.tables(hw, x.device, x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * cos + rotated * sin


class VisionMamba(ScanModel):
    """Vim / LocalVim. ``layers``: one entry per block, a tuple of directions or ``"none"``."""

    config_cls = VimConfig

    def __init__(self, cfg: VimConfig, layers: Sequence[Layer]):
        super().__init__(cfg, layers)
        C, p = cfg.dim, cfg.patch_size
        self.grid = cfg.token_grid
        self.patch_embed = nn.Conv2d(cfg.in_chans, C, p, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C)) if cfg.cls_token else None
        n_tokens = self.grid[0] * self.grid[1] + (1 if cfg.cls_token else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, C)) if cfg.pos_embed else None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.rope = RotaryEmbedding2D(C, self.grid) if cfg.rope else None
        norm = (lambda: nn.RMSNorm(C, eps=cfg.norm_eps)) if cfg.norm == "rms" else (lambda: nn.LayerNorm(C, eps=cfg.norm_eps))
        ssm = dict(d_state=cfg.d_state, expand=cfg.expand, dt_rank=cfg.dt_rank, conv="sequence", d_conv=cfg.d_conv,
                   scattn=cfg.scattn, scattn_spatial=cfg.scattn_spatial, merge=cfg.merge)
        rates = drop_path_rates(cfg.drop_path_rate, cfg.depth)
        self.layers = nn.ModuleList([
            Block(norm(), make_mixer(layer, C, cnn_expansion=cfg.cnn_expansion, cnn_kernel=cfg.cnn_kernel, **ssm),
                  rates[i])
            for i, layer in enumerate(self.layer_choices)
        ])
        self.norm_f = norm()
        self.head = nn.Linear(C, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """Vim's: truncated normal for linears and embeddings; out_proj/fc2 rescaled by depth (GPT-2)."""
        if self.patch_embed.weight.is_meta:
            return
        init_trunc_normal(self)
        for block in self.layers:
            out = block.mixer.fc2 if isinstance(block.mixer, GatedCNN) else block.mixer.out_proj
            nn.init.kaiming_uniform_(out.weight, a=math.sqrt(5))
            with torch.no_grad():
                out.weight /= math.sqrt(self.cfg.depth)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _position(self, hw: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a ``hw`` token grid: bicubic interpolation of the built one."""
        if hw == self.grid:
            return self.pos_embed
        H0, W0 = self.grid
        table = self.pos_embed
        cls = None
        if self.cls_token is not None:
            mid = H0 * W0 // 2
            cls, table = table[:, mid:mid + 1], torch.cat([table[:, :mid], table[:, mid + 1:]], 1)
        grid = table.reshape(1, H0, W0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=hw, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        if cls is not None:
            mid = hw[0] * hw[1] // 2
            grid = torch.cat([grid[:, :mid], cls, grid[:, mid:]], 1)
        return grid

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.cfg.patch_size
        H, W = images.shape[-2:]
        pad_h, pad_w = (-H) % p, (-W) % p
        if pad_h or pad_w:  # timm's dynamic_img_pad: no size is refused
            images = F.pad(images, (0, pad_w, 0, pad_h))
        x = self.patch_embed(images)
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            mid = hw[0] * hw[1] // 2
            x = torch.cat([x[:, :mid], self.cls_token.expand(x.shape[0], -1, -1), x[:, mid:]], 1)
        if self.pos_embed is not None:
            x = x + self._position(hw)
        return self.pos_drop(x), hw

    def forward_features(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None):
        x, hw = self.embed(images)
        for i, block in enumerate(self.layers):
            if self.rope is not None:  # LocalVim rotates the residual stream before every block
                x = self.rope(x, hw)
            x = block(x, hw, None if weights is None else weights[i])
        x = self.norm_f(x)
        if self.cfg.pool == "cls":
            return x[:, hw[0] * hw[1] // 2]
        return x.mean(1)

    def forward(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits; ``weights`` (optional, one (K,) tensor or None per layer) go to the mixers."""
        return self.head(self.forward_features(images, weights))
