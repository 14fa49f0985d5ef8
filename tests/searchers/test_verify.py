"""The closing check treats every genotype alike, and its verdict follows the evidence both ways."""
from __future__ import annotations

import pytest
import torch

from scansearch.data import load_data
from scansearch.searchers.selection import fixed_batches
from scansearch.searchers.supernet import Supernet
from scansearch.searchers.verify import (BETTER, TIE, WORSE, compare, finetuned_check, paired_se, recommend,
                                         trained_check, verdict)
from scansearch.spaces import load_space
from scansearch.train import TrainConfig, fit

SMALL = {"dim": 8, "depth": 2, "d_state": 4, "expand": 1.0}
FOUND = (("h", "h_flip", "w2", "w2_flip"),) * 2
CROSS = (("h", "h_flip", "v", "v_flip"),) * 2


def test_the_verdict_needs_two_standard_errors():
    assert verdict(-0.5, 0.1) == BETTER and verdict(0.5, 0.1) == WORSE
    assert verdict(-0.15, 0.1) == TIE and verdict(0.15, 0.1) == TIE and verdict(0.0, 0.0) == TIE
    assert verdict(-1e-9, 0.0) == BETTER  # deterministic scores: any difference counts


def test_the_paired_error_is_the_larger_of_batches_and_seeds():
    noisy_seeds = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # no spread within a seed
    assert paired_se(noisy_seeds) == pytest.approx(max(noisy_seeds.reshape(-1).std().item() / 6 ** 0.5, 1.0))
    assert paired_se(torch.zeros(2, 4)) == 0.0


def test_compare_pairs_each_genotype_with_the_found_one():
    found = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5]], dtype=torch.float64)
    losses = {"found": found, "worse": found + 0.3, "same": found + torch.tensor([0.1, -0.1, 0.1, -0.1], dtype=torch.float64)}
    accs = {name: torch.full_like(found, 0.5) for name in losses}
    out = compare(losses, accs)
    assert "diff" not in out["found"] and out["found"]["seeds"] == 2 and out["found"]["batches"] == 4
    assert out["worse"]["diff"] == pytest.approx(0.3) and out["worse"]["verdict"] == WORSE
    assert out["same"]["diff"] == pytest.approx(0.0, abs=1e-12) and out["same"]["verdict"] == TIE


@pytest.mark.parametrize("found_verdicts, expected", [
    ({"cross": BETTER, "localmamba_baseline": TIE}, "cross"),
    ({"cross": WORSE, "localmamba_baseline": TIE}, "localmamba_baseline"),
    ({"cross": WORSE, "localmamba_baseline": WORSE}, "found"),
])
def test_the_recommendation(found_verdicts, expected):
    check = {"found": {"loss": 1.0}, **{name: {"loss": 1.0, "diff": 0.0, "diff_se": 0.1, "verdict": v}
                                        for name, v in found_verdicts.items()}}
    name, why = recommend(check)
    assert name == expected
    if expected == "localmamba_baseline":
        assert "no detectable difference" in why and "simpler choice" in why


@pytest.fixture(scope="module")
def trained():
    """A tiny supernet trained one epoch on the digits (better than chance, so that a genotype
    can be made worse)."""
    data = load_data("digits", batch_size=64, seed=0)
    torch.manual_seed(0)
    net = Supernet("local_vim_micro", load_space("local8"), num_classes=data.num_classes, img_size=data.img_size,
                   in_chans=data.in_chans, **SMALL)
    fit(net, data, TrainConfig(epochs=1, lr=1e-2, seed=0, device="cpu"), progress=False,
        param_filter=Supernet.is_weight)
    return net, data


@pytest.mark.slow  # a supernet trained, four fine-tunes each: the full suite runs it
@pytest.mark.parametrize("broken, expected", [(("v", "v_flip"), WORSE), (("w2", "w2_flip"), BETTER)])
def test_rigged_supernets_give_the_known_answer(trained, broken, expected):
    """The supernet is rigged to turn its logits against the labels whenever a ``broken``
    direction is in the mask, so the genotypes that use them lose, fine-tuned or not."""
    net, data = trained
    index = [net.candidates.index(name) for name in broken]
    hook = net.register_forward_hook(lambda module, args, out: -3 * out if bool(module.mask[:, index].any()) else out)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        check = finetuned_check(net, before, {"found": FOUND, "cross": CROSS}, data=data,
                                config=TrainConfig(epochs=1, lr=1e-2, seed=0, device="cpu"), steps=2, seeds=(0, 1),
                                batches=fixed_batches(data.val, "cpu"))
    finally:
        hook.remove()
    assert check["cross"]["verdict"] == expected, check
    assert check["cross"]["seeds"] == 2 and check["found"]["steps"] == 2
    assert recommend(check)[0] == ("found" if expected == WORSE else "cross")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # left as it was


@pytest.mark.slow
def test_a_supernet_blind_to_the_order_finds_no_difference(trained):
    net, data = trained
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name, value in state.items():
        if name.endswith("out_proj.weight") or name.endswith("out_proj.bias"):
            value.zero_()  # every mixer adds nothing: the scan order cannot matter
    check = finetuned_check(net, state, {"found": FOUND, "cross": CROSS}, data=data,
                            config=TrainConfig(epochs=1, lr=1e-2, seed=0, device="cpu"), steps=0, seeds=(0, 1),
                            batches=fixed_batches(data.val, "cpu"))
    assert check["cross"]["diff"] == 0.0 and check["cross"]["verdict"] == TIE
    name, why = recommend(check)
    assert name == "cross" and "simpler choice" in why


@pytest.mark.slow
def test_the_same_fine_tune_for_every_genotype(trained):
    """Two names for one genotype: the same start, batches and seed give the same scores."""
    net, data = trained
    start = {k: v.clone() for k, v in net.state_dict().items()}
    check = finetuned_check(net, start, {"found": FOUND, "again": FOUND}, data=data,
                            config=TrainConfig(epochs=1, lr=1e-2, seed=0, device="cpu"), steps=3, seeds=(0, 1),
                            batches=fixed_batches(data.val, "cpu"))
    assert check["again"]["diff"] == 0.0 and check["again"]["loss"] == check["found"]["loss"]


@pytest.mark.slow
def test_trained_from_scratch_with_the_same_seeds(trained):
    net, data = trained
    from scansearch.genotype import Genotype

    found = Genotype(layers=FOUND, model="local_vim_micro", space="local8", grid=(8, 8),
                     provenance={"img_size": 8, "model_overrides": SMALL})
    check = trained_check(found, {"found": FOUND, "again": FOUND, "cross": CROSS}, data,
                          TrainConfig(epochs=1, lr=1e-2, seed=0, device="cpu"), 1, fixed_batches(data.val, "cpu"),
                          seeds=(0, 1))
    assert check["again"]["diff"] == 0.0 and check["cross"]["epochs"] == 1 and check["cross"]["seeds"] == 2
