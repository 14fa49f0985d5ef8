"""The DARTS supernet: a model whose every layer holds all candidates of a search space.

``Supernet(preset, space, ...)`` builds the preset with each layer scanning every
pattern of the space (each with its own per-direction SSM parameters, stacked in one
:class:`~scansearch.models.ScanMixer`) and learns ``alphas`` (layers x candidates). A
forward pass hands ``softmax(alpha)`` of each layer to its mixer, which scans all
directions and merges them with those weights in one ``multi_scan`` call.

What the supernet ranks is what the derived model runs, as in LocalMamba's own search
supernet (``MultiScan``): each candidate's output passes the preset's SCAttn (where it
has one) and then an affine-free LayerNorm before the weighted merge, so that no candidate
can rescale its output (its ``C`` and ``D``) to absorb its weight. Per-direction outputs
need the scan's outputs one by one, which costs more than the fused weighted call;
``normalise=False`` keeps the fused call (no SCAttn, no normalisation) for comparison.
A space with ``none`` wraps each layer in :class:`MixedLayer`: the scan mixer's weighted
output plus ``w_none`` times the gated-CNN block's output, normalised the same way.
``merge="sum"``: the weights already sum to one.

``mask`` (layers x candidates, bool) removes candidates: the weights are the softmax of
the alphas over the candidates left. Selection by effect (``searchers/selection.py``) masks
candidates one by one to measure what each contributes.

Gumbel top-k (``gumbel_k``): in training, each layer samples ``gumbel_k`` candidates
without replacement (Gumbel-top-k on ``alpha``) and scans only those, weighted by the
softmax of the perturbed logits over the sample; the rest of the layer costs nothing.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch.genotype import Genotype
from scansearch.models import DirectionSubset, GatedCNN, ModelError, ScanMixer, build_model
from scansearch.models.base import ScanModel
from scansearch.spaces import NONE, SearchSpace

SUPERNET_OVERRIDES = {"merge": "sum"}
FUSED_OVERRIDES = {"scattn": False, "merge": "sum"}  # normalise=False: one fused weighted call


class MixedLayer(nn.Module):
    """A layer of a space with ``none``: ``sum_p w_p scan_p(x) + w_none * gated_cnn(x)``."""

    def __init__(self, scan: ScanMixer, cnn: GatedCNN, candidates: tuple[str, ...], normalise: bool = True):
        super().__init__()
        self.scan, self.cnn, self.normalise = scan, cnn, normalise
        self.none_index = candidates.index(NONE)
        pattern_index = [i for i, c in enumerate(candidates) if c != NONE]
        self.register_buffer("pattern_index", torch.tensor(pattern_index), persistent=False)
        # candidate index -> position among the patterns (-1 for none)
        to_pattern = torch.full((len(candidates),), -1, dtype=torch.long)
        to_pattern[pattern_index] = torch.arange(len(pattern_index))
        self.register_buffer("to_pattern", to_pattern, persistent=False)

    @property
    def directions(self) -> tuple[str, ...]:
        return self.scan.directions

    def forward(self, x: torch.Tensor, hw: tuple[int, int], weights) -> torch.Tensor:
        if isinstance(weights, DirectionSubset):
            is_none = weights.indices == self.none_index
            keep = ~is_none
            out = 0.0
            if bool(keep.any()):
                out = self.scan(x, hw, DirectionSubset(self.to_pattern[weights.indices[keep]], weights.weights[keep]))
            if bool(is_none.any()):
                out = out + weights.weights[is_none].sum() * self.gated_cnn(x, hw)
            return out
        return (self.scan(x, hw, weights.index_select(0, self.pattern_index))
                + weights[self.none_index] * self.gated_cnn(x, hw))

    def gated_cnn(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self.cnn(x, hw)
        return F.layer_norm(y, y.shape[-1:]) if self.normalise else y


class Supernet(nn.Module):
    """All candidates of ``space`` in every scan layer of ``preset``; see the module docstring.

    ``forward(images)`` returns logits. ``alphas`` is the only architecture parameter;
    ``weight_parameters()`` yields everything else. ``overrides`` set config fields of the
    preset (``dim=16``, ``depth=2``, ...), as in ``build_model``.
    """

    def __init__(self, preset: str, space: SearchSpace, *, num_classes: int, img_size: int, in_chans: int,
                 gumbel_k: int | None = None, tau: float = 1.0, backend: str | None = None, alpha_init: float = 1e-3,
                 normalise: bool = True, **overrides):
        super().__init__()
        self.preset, self.space = preset, space
        # what the derived model needs to be the model searched (recorded in the genotype)
        self.img_size, self.overrides = img_size, dict(overrides)
        patterns = tuple(space.patterns)
        if not patterns:
            raise ModelError(f"space {space.name}: a supernet needs at least one scan pattern")
        with torch.device("meta"):  # the layer count, without paying for the weights
            probe = build_model(preset, num_classes=num_classes, img_size=img_size, in_chans=in_chans, **overrides)
        if probe.cfg.family == "mambaout":
            raise ModelError(f"{preset}: a MambaOut model has no scan layers to search")
        layers = (patterns,) * probe.cfg.num_layers
        forced = SUPERNET_OVERRIDES if normalise else FUSED_OVERRIDES
        overrides = {**overrides, **{k: v for k, v in forced.items() if k in probe.config}}
        genotype = Genotype(layers=layers, model=preset)
        self.model: ScanModel = build_model(genotype, num_classes=num_classes, img_size=img_size,
                                            in_chans=in_chans, backend=backend, **overrides)
        self.candidates = tuple(space.candidates)
        self.normalise = normalise
        for mixer in self.model.mixers():
            mixer.candidate_norm = normalise
        if space.allows_none:
            cfg = self.model.cfg
            for block in self.model.blocks():
                dim = block.mixer.dim
                block.mixer = MixedLayer(block.mixer, GatedCNN(dim, cfg.cnn_expansion, cfg.cnn_kernel),
                                         self.candidates, normalise)
        self.num_layers = len(self.model.blocks())
        self.gumbel_k, self.tau = None, 1.0
        self.set_gumbel(gumbel_k, tau)
        self.alphas = nn.Parameter(alpha_init * torch.randn(self.num_layers, len(self.candidates)))
        self.register_buffer("mask", torch.ones(self.num_layers, len(self.candidates), dtype=torch.bool),
                             persistent=False)

    def set_gumbel(self, k: int | None, tau: float = 1.0) -> None:
        """Sample ``k`` candidates per layer in training (None: use them all, weighted)."""
        if k is not None and not 1 <= k <= len(self.candidates):
            raise ModelError(f"gumbel_k must be in [1, {len(self.candidates)}], got {k}")
        if tau <= 0:
            raise ModelError(f"the Gumbel temperature must be positive, got {tau}")
        self.gumbel_k, self.tau = k, float(tau)

    # -- parameters ----------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        return (p for name, p in self.named_parameters() if name != "alphas")

    @staticmethod
    def is_weight(name: str, param: nn.Parameter) -> bool:
        """The ``param_filter`` for the weight optimizer."""
        return name != "alphas"

    @property
    def ddp_find_unused_parameters(self) -> bool:
        """Under DistributedDataParallel: a Gumbel sample leaves the other candidates' weights
        out of a step."""
        return self.gumbel_k is not None

    @property
    def token_grid(self) -> tuple[int, int]:
        g = self.model.genotype.grid if self.model.genotype is not None else None
        if g is not None:
            return tuple(g)
        return self.model.cfg.token_grid

    # -- forward -------------------------------------------------------------------------------
    def masked_alphas(self) -> torch.Tensor:
        """The alphas with masked candidates at -inf (no weight, never sampled)."""
        return self.alphas.masked_fill(~self.mask, float("-inf"))

    def layer_weights(self) -> list:
        """Per layer, ``softmax(alpha)`` over the unmasked candidates, or in training with
        ``gumbel_k`` a sampled subset of them."""
        alphas = self.masked_alphas()
        if self.gumbel_k is None or not self.training:
            return list(torch.softmax(alphas, dim=-1))
        return [self.sample(row) for row in alphas]

    def sample(self, logits: torch.Tensor) -> DirectionSubset:
        """Gumbel-top-k: ``gumbel_k`` distinct candidates; weights are the softmax of the
        perturbed logits over the sample (differentiable in ``alpha``)."""
        u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-10)
        perturbed = (logits - torch.log(-torch.log(u))) / self.tau
        indices = perturbed.detach().topk(self.gumbel_k).indices.sort().values
        return DirectionSubset(indices, torch.softmax(perturbed.index_select(0, indices), dim=0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, weights=self.layer_weights())

    def weights_table(self) -> torch.Tensor:
        """softmax(alpha), (layers, candidates), detached on the CPU."""
        return torch.softmax(self.alphas.detach().float().cpu(), dim=-1)
