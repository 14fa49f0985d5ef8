"""RAUM-Net (arXiv 2506.21905): a VMamba / LocalVMamba backbone from a genotype, then a
region-attention head with Monte-Carlo dropout before the classifier.

The head, on the backbone's last feature map ``(B, H, W, C)`` (after its final norm):

* regions: the map is average-pooled onto an ``R x R`` grid (``regions``; adaptive
  pooling, so ``H`` need not divide by ``R``), giving one descriptor per region, plus a
  learned embedding of the region's place;
* scores: a small MLP (``C -> C / region_reduction -> 1``) scores each region; a softmax
  over the regions is the attention map, which the model returns on request
  (``forward(images, return_attention=True)``) so that a user sees where it looks;
* fusion: the global descriptor (the mean over all tokens) plus a per-channel gate times
  the attention-weighted region descriptor (normalised), so that the head can lean on
  the informative, unoccluded regions without a second classifier;
* MC dropout (``mc_dropout``) on the fused descriptor, then the linear classifier.

Dropout sits only in the head, so the ``T`` stochastic passes of
:func:`scansearch.uncertainty.predict_with_uncertainty` run the backbone once and the
cheap head ``T`` times (:meth:`RAUMNet.mc_logits`). For VMamba-S the head adds about
0.1M parameters (tested against the paper's figure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch.genotype import Layer
from scansearch.models.errors import ModelError
from scansearch.models.vmamba import VMamba, VMambaConfig


@dataclass(frozen=True)
class RAUMConfig(VMambaConfig):
    family = "raum"
    regions: int = 2             # R: the last feature map is split into R x R regions
    region_reduction: int = 8    # the region scorer's hidden width is C / region_reduction
    mc_dropout: float = 0.2      # dropout before the classifier, kept on for MC sampling
    mc_samples: int = 8          # T: stochastic passes for the MC mean and uncertainty

    def check(self, where: str) -> None:
        super().check(where)
        if self.regions < 1 or self.region_reduction < 1 or self.mc_samples < 1:
            raise ModelError(f"{where}: regions, region_reduction and mc_samples must be >= 1")
        if not 0 <= self.mc_dropout < 1:
            raise ModelError(f"{where}: mc_dropout is a rate in [0, 1), got {self.mc_dropout}")


class RegionAttention(nn.Module):
    """Scores the R x R regions of a feature map and fuses their weighted descriptor with the
    global one: ``(B, H, W, C) -> (fused (B, C), attention (B, R, R))``."""

    def __init__(self, dim: int, regions: int, reduction: int, eps: float = 1e-5):
        super().__init__()
        self.regions = regions
        hidden = max(1, dim // reduction)
        self.position = nn.Parameter(torch.zeros(regions * regions, dim))
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.norm = nn.LayerNorm(dim, eps=eps)
        # starts closed: an untrained head is the plain VMamba head
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, H, W, C = x.shape
        R = self.regions
        pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), (R, R))      # (B, C, R, R)
        regions = pooled.flatten(2).transpose(1, 2) + self.position          # (B, R*R, C)
        attention = self.score(regions).squeeze(-1).softmax(dim=-1)          # (B, R*R)
        region = torch.einsum("br,brc->bc", attention, regions)
        fused = x.mean((1, 2)) + self.gate * self.norm(region)
        return fused, attention.view(batch, R, R)


class RAUMNet(VMamba):
    """RAUM-Net: a VMamba backbone (``scattn=True`` for LocalVMamba's), region attention and
    an MC-dropout classifier. ``forward`` returns logits (and the attention map on request)."""

    config_cls = RAUMConfig

    def __init__(self, cfg: RAUMConfig, layers: Sequence[Layer]):
        super().__init__(cfg, layers)
        dim = cfg.dims[-1]
        self.region_attention = RegionAttention(dim, cfg.regions, cfg.region_reduction, cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.mc_dropout)
        if not self.region_attention.position.is_meta:
            nn.init.trunc_normal_(self.region_attention.position, std=0.02)

    def forward_features(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None,
                         return_attention: bool = False):
        """The fused descriptor ``(B, C)`` before dropout (and the attention map ``(B, R, R)``)."""
        fused, attention = self.region_attention(self.feature_map(images, weights))
        return (fused, attention) if return_attention else fused

    def forward(self, images: torch.Tensor, weights: Sequence[torch.Tensor | None] | None = None,
                return_attention: bool = False):
        """Logits ``(B, classes)``; with ``return_attention`` also the region attention ``(B, R, R)``."""
        fused, attention = self.forward_features(images, weights, return_attention=True)
        logits = self.head(self.head_drop(fused))
        return (logits, attention) if return_attention else logits

    def mc_logits(self, images: torch.Tensor, samples: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits of ``samples`` (default ``mc_samples``) stochastic passes, ``(T, B, classes)``.

        The backbone and the region attention run once, deterministically (as in eval
        mode, whatever the module's mode); each pass draws its own dropout mask on the fused
        descriptor. ``generator`` makes the masks reproducible.
        """
        T = self.cfg.mc_samples if samples is None else int(samples)
        if T < 1:
            raise ModelError(f"mc samples must be >= 1, got {T}")
        was_training = self.training
        self.eval()
        try:
            fused = self.forward_features(images)
        finally:
            self.train(was_training)
        p = self.cfg.mc_dropout
        if p == 0:
            return self.head(fused).expand(T, -1, -1)
        where = fused.device if generator is None else generator.device
        keep = torch.rand((T, *fused.shape), generator=generator, device=where).to(fused.device) >= p
        return self.head(fused.unsqueeze(0) * keep.to(fused.dtype) / (1 - p))
