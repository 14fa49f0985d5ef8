"""From architecture weights to a genotype: keep the top-k directions of every layer."""
from __future__ import annotations

import torch

from scansearch.genotype import Genotype
from scansearch.spaces import NONE, SearchSpace


def layer_choice(weights: torch.Tensor, space: SearchSpace) -> tuple[str, ...] | str:
    """The k strongest patterns of one layer, in the space's candidate order; ``none`` when it wins.

    ``weights`` has one entry per candidate (``none`` included where the space has it).
    ``none`` is chosen when its weight exceeds every single pattern's: the layer then
    prefers no SSM to its best direction.
    """
    weights = weights.detach().float().cpu()
    names = list(space.candidates)
    if space.allows_none:
        none_w = weights[names.index(NONE)]
        pattern_w = torch.stack([weights[i] for i, n in enumerate(names) if n != NONE])
        if none_w > pattern_w.max():
            return NONE
    ranked = sorted((i for i, n in enumerate(names) if n != NONE), key=lambda i: (-float(weights[i]), i))
    chosen = sorted(ranked[:space.k])
    return tuple(names[i] for i in chosen)


def discretize(alphas: torch.Tensor, space: SearchSpace, *, model: str, grid: tuple[int, int],
               provenance: dict) -> Genotype:
    """Top-k per layer of ``softmax(alphas)`` (layers x candidates) into a Genotype with its weights."""
    weights = torch.softmax(alphas.detach().float().cpu(), dim=-1)
    layers = tuple(layer_choice(w, space) for w in weights)
    return Genotype(
        layers=layers, model=model, space=space.ref,
        grid=tuple(grid), provenance=dict(provenance),
        alphas=tuple(tuple(round(float(v), 6) for v in row) for row in weights),
    )

