"""Evidence that the search finds what is there: on `planted`, only whole 2x2 blocks tell the
classes apart (data/planted.py), so a search over local8 must keep the 2x2 windows.

The settings are the command line's (`scansearch.cli.search.prepare`), the same as the
recorded run in the README:

    scansearch search --space local8 --k 2 --data planted:n_train=2000,motifs_per_image=10 \\
        --epochs 5 --warmup-epochs 2 --mode single --lr 3e-2 --arch-lr 0.1 \\
        --set dim=16 --set depth=2 --set d_state=4 --set expand=1.0 --seed S
"""
from __future__ import annotations

import pytest
import torch

from scansearch.cli.search import DEFAULTS, prepare
from scansearch.searchers.darts import search

PLANTED_SEARCH = dict(
    space="local8", k=2, data="planted:n_train=2000,motifs_per_image=10", epochs=5, warmup_epochs=2,
    mode="single", lr=3e-2, arch_lr=0.1, set=["dim=16", "depth=2", "d_state=4", "expand=1.0"],
)
FAMILIES = {"h": ("h", "h_flip"), "v": ("v", "v_flip"), "w2": ("w2", "w2_flip"), "w7": ("w7", "w7_flip")}


def family_weights(weights: torch.Tensor, candidates) -> dict[str, float]:
    """Architecture weight of each family (a pattern and its flip), averaged over layers."""
    return {name: sum(weights[:, candidates.index(m)] for m in members).mean().item()
            for name, members in FAMILIES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_darts_finds_the_planted_2x2_windows(seed):
    """Weak evidence only: a search that picks at random passes a seed about one time in five.

    Chance of each criterion if the alphas carry no information (the null: the 8 candidates are
    exchangeable in every layer, e.g. i.i.d. random alphas; the two layers' alphas independent):

    * layer 0 keeps w2 or w2_flip: a random 2-of-8 pick holds one of them with probability
      1 - C(6,2)/C(8,2) = 1 - 15/28 = 13/28 = 46%;
    * the w2 family has the largest weight averaged over layers: 1 of 4 exchangeable families, 25%;
    * validation top-1 > 0.4 (chance 0.25) says the supernet learned the task, not that the
      search chose well: a supernet that learns passes it whatever its alphas, so under the null
      it passes with probability ~1 and adds no evidence about the search.

    Combined, one seed: the first two are positively correlated (layer 0 is half the family
    average), so the joint chance lies between 13/28 * 1/4 = 13/112 = 12% (independent) and
    min(13/28, 1/4) = 25%; simulating i.i.d. Gaussian alphas (std 0.1 to 3) gives 19-20%. All
    three seeds, if the seeds are independent: about 0.2^3 = 0.8% (between 0.16% and 1.6%).
    Another issue will replace this test; its settings are the recorded run's, unchanged.
    """
    torch.set_num_threads(2)
    space, data, supernet, train_config, darts_config = prepare({**DEFAULTS, **PLANTED_SEARCH, "seed": seed}, "cpu")
    result = search(supernet, data, train_config, darts_config, progress=False)
    first = result.genotype.layers[0]
    families = family_weights(result.weights, supernet.candidates)
    assert {"w2", "w2_flip"} & set(first), (first, families)  # chance 13/28 = 46%
    assert max(families, key=families.get) == "w2", families  # chance 1/4; both: ~20% (docstring)
    assert result.train.val["top1"] > 0.4  # the supernet learned the task (chance: 0.25); no evidence on the search
