"""Combining several seeds' genotypes: per-layer votes, agreement and the majority genotype."""
from __future__ import annotations

import pytest

from scansearch import Genotype
from scansearch.searchers.seeds import majority


def _genotype(*layers, seed=0):
    return Genotype(layers=tuple(layers), model="local_vim_micro", space="local8", grid=(8, 8),
                    provenance={"searcher": "darts", "seed": seed, "img_size": 8, "k": 2})


def test_majority_keeps_the_most_voted_directions_and_counts_exact_agreement():
    seeds = [0, 1, 2]
    genotypes = [_genotype(("h", "w2"), ("v", "v_flip"), seed=0),
                 _genotype(("h", "w2"), ("h", "v"), seed=1),
                 _genotype(("w2", "w2_flip"), ("v", "w7"), seed=2)]
    combined, votes = majority(genotypes, seeds, k=2)
    # layer 0: w2 3 votes, h 2, w2_flip 1; layer 1: v 3, then h, v_flip and w7 tied at 1,
    # and h comes first in the space's order
    assert combined.layers == (("h", "w2"), ("h", "v"))
    assert votes[0].votes == {"w2": 3, "h": 2, "w2_flip": 1} and votes[0].agree == 2
    assert votes[1].votes == {"v": 3, "h": 1, "v_flip": 1, "w7": 1} and votes[1].agree == 1
    assert combined.provenance["seeds"] == seeds and combined.provenance["agree"] == [v.agree for v in votes]
    assert combined.provenance["img_size"] == 8 and combined.alphas is None


def test_ties_are_broken_by_the_summed_selection_score_then_by_candidate_order():
    genotypes = [_genotype(("h", "v")), _genotype(("w2", "w7"))]
    plain, _ = majority(genotypes, [0, 1], k=2)
    assert plain.layers == (("h", "v"),)  # all tied at one vote: the space's candidate order
    scores = [[{"h": 0.01, "v": 0.02}], [{"w2": 0.5, "w7": 0.3}]]
    scored, votes = majority(genotypes, [0, 1], k=2, scores=scores)
    assert scored.layers == (("w2", "w7"),) and votes[0].agree == 1


def test_none_wins_a_layer_only_with_more_than_half_the_seeds():
    three = [_genotype("none"), _genotype("none"), _genotype(("h", "v"))]
    combined, votes = majority(three, [0, 1, 2], k=2)
    assert combined.layers == ("none",) and votes[0].agree == 2
    four = three + [_genotype(("h", "w2"))]
    combined, votes = majority(four, [0, 1, 2, 3], k=2)
    assert combined.layers == (("h", "v"),)  # h 2 votes; v and w2 tied at 1, v first in the space's order
    assert votes[0].agree == 1 and votes[0].votes == {"h": 2, "none": 2, "v": 1, "w2": 1}


def test_majority_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one genotype per seed"):
        majority([_genotype(("h", "v"))], [0, 1], k=2)
    with pytest.raises(ValueError, match="different depths"):
        majority([_genotype(("h", "v")), _genotype(("h", "v"), ("h", "v"))], [0, 1], k=2)
