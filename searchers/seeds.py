"""Several seeds of one search, combined: per-layer agreement and one genotype by majority.

A choice that another seed does not repeat is not a finding. ``scansearch search --seeds
0,1,2`` runs one search per seed and :func:`majority` combines their genotypes:

* per layer, every seed votes for the directions it kept (or for ``none``);
* ``none`` wins a layer when more than half the seeds chose it; otherwise the layer keeps
  the ``k`` directions with the most votes, ties broken by the summed selection score
  (the held-out loss rise when the direction is masked, from each seed's selection) and
  then by the space's candidate order;
* ``agree`` counts the seeds whose kept set is exactly the majority's.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from scansearch.genotype import Genotype
from scansearch.spaces import NONE


@dataclass(frozen=True)
class LayerVote:
    layer: int
    kept: tuple[str, ...] | str               # the majority's choice
    votes: dict[str, int]                     # direction (or none) -> seeds that kept it
    agree: int                                # seeds whose kept set equals ``kept``
    seeds: int

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "kept": self.kept if self.kept == NONE else list(self.kept),
                "votes": self.votes, "agree": self.agree, "seeds": self.seeds}


def majority(genotypes: Sequence[Genotype], seeds: Sequence[int], k: int,
             scores: Sequence[Sequence[dict[str, float]]] | None = None) -> tuple[Genotype, list[LayerVote]]:
    """One genotype from several seeds' (see the module docstring). ``scores[s][layer]`` maps a
    direction to its selection score in seed ``s`` (optional; only breaks ties)."""
    if not genotypes or len(genotypes) != len(seeds):
        raise ValueError("majority: one genotype per seed is needed")
    depth = len(genotypes[0].layers)
    if any(len(g.layers) != depth for g in genotypes):
        raise ValueError("majority: the genotypes have different depths")
    first = genotypes[0]
    order = {name: i for i, name in enumerate(first.load_space().candidates)} if first.space is not None else {}
    votes_by_layer, layers = [], []
    for i in range(depth):
        chosen = [g.layers[i] for g in genotypes]
        votes = Counter(name for layer in chosen for name in ((NONE,) if layer == NONE else layer))
        if 2 * votes[NONE] > len(genotypes):
            kept: tuple[str, ...] | str = NONE
        else:
            total = Counter()
            for seed_scores in scores or ():
                for name, value in seed_scores[i].items():
                    total[name] += value
            ranked = sorted((n for n in votes if n != NONE),
                            key=lambda n: (-votes[n], -total[n], order.get(n, len(order)), n))
            kept = tuple(sorted(ranked[:k], key=lambda n: (order.get(n, len(order)), n)))
        same = sum(1 for layer in chosen if (layer == NONE and kept == NONE)
                   or (layer != NONE and kept != NONE and set(layer) == set(kept)))
        layers.append(kept)
        votes_by_layer.append(LayerVote(i, kept, dict(sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))),
                                        same, len(genotypes)))
    recorded = {key: first.provenance[key] for key in ("img_size", "model_overrides", "data", "k")
                if key in first.provenance}
    provenance = {"searcher": first.provenance.get("searcher", "darts"), "combined": "majority",
                  "seeds": list(seeds), "agree": [v.agree for v in votes_by_layer], **recorded}
    genotype = dataclasses.replace(first, layers=tuple(layers), alphas=None, provenance=provenance)
    return genotype, votes_by_layer


__all__ = ["LayerVote", "majority"]
