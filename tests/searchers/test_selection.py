"""Selection by effect: masking each candidate measures what it contributes, with its spread."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scansearch.data import DataBundle, TensorLoader
from scansearch.models import DirectionSubset
from scansearch.searchers.selection import (NOISE_SE, families, fixed_batches, mask_for, per_batch, score_genotypes,
                                         select_by_effect)
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space

CLASSES = 4
TINY = dict(dim=8, depth=2, d_state=4, expand=1.0)


def rows_data(carriers, n=64, batch_size=16, seed=0) -> DataBundle:
    """Images whose label is written (one-hot) into the image rows of the ``carriers``, rows
    numbered as the candidates of local8; everything else is noise-free zero."""
    candidates = load_space("local8").candidates
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    images = torch.zeros(n, 1, 8, 8)
    for carrier in carriers:
        images[:, 0, candidates.index(carrier), :CLASSES] = F.one_hot(labels, CLASSES).float()
    loader = TensorLoader(images, labels, batch_size)
    return DataBundle(name="rows", train=loader, val=loader, test=None, num_classes=CLASSES,
                      class_names=[str(c) for c in range(CLASSES)], img_size=8, in_chans=1)


def rows_supernet(saturate: float | None = None, space: str = "local8") -> Supernet:
    """A real Supernet (alphas, mask, weights) whose scan model reads image row k for
    candidate k: logits = 10 * sum_layers sum_k w_lk * row_k. With ``saturate``, each layer's
    evidence is capped at that level, so one member of a redundant pair suffices."""
    torch.manual_seed(0)
    net = Supernet("local_vim_micro", load_space(space), num_classes=CLASSES, img_size=8, in_chans=1, **TINY)
    rows = len(net.candidates)

    def read_rows(images, weights):
        outputs = images[:, 0, :rows, :CLASSES]
        logits = 0
        for w in weights:
            if isinstance(w, DirectionSubset):
                layer = torch.einsum("k,bkc->bc", w.weights, outputs[:, w.indices])
            else:
                layer = torch.einsum("k,bkc->bc", w, outputs)
            logits = logits + (layer if saturate is None else layer.clamp(max=saturate))
        return 10 * logits

    net.model.forward = read_rows
    return net


def test_the_candidate_that_carries_the_signal_is_kept_with_a_clear_margin():
    net = rows_supernet()
    batches = fixed_batches(rows_data(["w2"]).val, "cpu")
    selections = select_by_effect(net, net.space.keep(1), batches)
    assert [s.kept for s in selections] == [("w2",), ("w2",)]
    for s in selections:
        w2 = s.scores["w2"]
        assert w2.loss > 0 and w2.acc >= 0
        assert all(s.scores[n].loss < 0 for n in net.candidates if n != "w2")  # the others only dilute it
        assert s.margin > NOISE_SE * s.margin_se and not s.within_noise
    # the mask ends holding the selection
    assert net.mask.sum().item() == 2 and all(net.mask[:, net.candidates.index("w2")])


def test_a_tie_between_exchangeable_candidates_is_within_the_noise():
    net = rows_supernet()
    with torch.no_grad():
        net.alphas.zero_()  # the seven other candidates are then exactly alike
    batches = fixed_batches(rows_data(["w2"]).val, "cpu")
    selections = select_by_effect(net, load_space("local8"), batches)  # k = 4: w2 and three of seven equals
    for s in selections:
        assert "w2" in s.kept and len(s.kept) == 4
        assert s.margin == pytest.approx(0.0, abs=1e-12) and s.within_noise


def test_a_redundant_pair_is_found_as_a_family():
    """With w2 and w2_flip both carrying the label, masking one barely hurts while the other
    remains; masking the family together does."""
    net = rows_supernet(saturate=0.1)
    batches = fixed_batches(rows_data(["w2", "w2_flip"]).val, "cpu")
    with torch.no_grad():
        net.alphas.zero_()
    selections = select_by_effect(net, net.space.keep(2), batches)
    first = selections[0]
    assert abs(first.scores["w2"].loss) < 1e-6 and abs(first.scores["w2_flip"].loss) < 1e-6
    assert first.family_scores["w2"].loss > 0.1
    assert max(first.family_scores, key=lambda f: first.family_scores[f].loss) == "w2"
    assert set(families(net.candidates)) == {"h", "v", "w2", "w7"}


def test_scores_carry_the_spread_over_batches():
    """Batches that disagree give a standard error; the same batches twice give the same scores."""
    net = rows_supernet()
    data = rows_data(["w2"], n=64)
    images, labels = data.val.images.clone(), data.val.labels
    images[:32] *= 0.2  # the first two batches carry a weaker signal
    batches = fixed_batches(TensorLoader(images, labels, 16), "cpu")
    first = select_by_effect(net, net.space.keep(1), batches)[0]
    assert first.scores["w2"].loss_se > 0
    net.mask.fill_(True)
    again = select_by_effect(net, net.space.keep(1), batches)[0]
    assert again.scores["w2"] == first.scores["w2"]


def test_masked_weights_renormalise_over_the_rest():
    net = rows_supernet()
    with torch.no_grad():
        net.alphas.normal_()
    net.mask[0, [0, 3]] = False
    weights = net.layer_weights()
    assert weights[0][[0, 3]].abs().sum() == 0 and weights[0].sum().item() == pytest.approx(1.0)
    expected = torch.softmax(net.alphas[0, [1, 2, 4, 5, 6, 7]], 0)
    torch.testing.assert_close(weights[0][[1, 2, 4, 5, 6, 7]], expected)
    net.set_gumbel(3)
    net.train()
    for _ in range(20):  # a masked candidate is never sampled
        assert not {0, 3} & set(net.layer_weights()[0].indices.tolist())


def test_genotypes_are_scored_with_the_same_weights_and_the_mask_is_restored():
    net = rows_supernet()
    batches = fixed_batches(rows_data(["v"]).val, "cpu")
    before = net.mask.clone()
    scores = score_genotypes(net, {"with_v": (("h", "v"),) * 2, "without_v": (("h", "w2"),) * 2}, batches)
    assert torch.equal(net.mask, before)
    assert scores["with_v"]["loss"] < scores["without_v"]["loss"]
    assert scores["with_v"]["top1"] == 1.0 and scores["without_v"]["top1"] < 0.5
    net.mask.copy_(mask_for(net, (("h", "v"),) * 2))
    loss, _ = per_batch(net, batches)
    assert loss.mean().item() == pytest.approx(scores["with_v"]["loss"])


def test_none_is_chosen_when_removing_it_hurts_most():
    net = rows_supernet(space="local8_none")
    none = net.candidates.index("none")
    # the gated-CNN path is the only one that carries the label: make it a reader of row 0 (h)
    batches = fixed_batches(rows_data(["h"]).val, "cpu")
    rows = net.candidates

    def read(images, weights):
        logits = 0
        for w in weights:
            scale = w[none] if not isinstance(w, DirectionSubset) else 0
            logits = logits + scale * images[:, 0, 0, :CLASSES]
        return 10 * logits

    net.model.forward = read
    selections = select_by_effect(net, net.space.keep(1), batches)
    assert all(s.kept == "none" for s in selections), [s.kept for s in selections]
    assert len(rows) == 9
