"""Zero-cost proxies: deterministic, defined as documented, and ranked from the command line."""
from __future__ import annotations

import json
import math

import pytest
import torch

from scansearch.data import load_data
from scansearch.genotype import Genotype
from scansearch.searchers.zero_cost import PROXIES, ZeroCost, locality, zico
from scansearch.spaces.metrics import set_locality

CROSS = ("h", "h_flip", "v", "v_flip")
BASELINE = ("h", "h_flip", "w2", "w2_flip")


@pytest.fixture(scope="module")
def setting(one_torch_thread):
    data = load_data("planted:grid=8,motifs_per_image=2,n_train=64,n_val=64,n_test=32", batch_size=16, seed=0)
    batches = [b for _, b in zip(range(3), data.train)]
    template = Genotype(layers=(CROSS,) * 2, model="local_vim_micro", grid=(8, 8),
                        provenance={"img_size": 8, "model_overrides": {"dim": 8, "depth": 2, "d_state": 4}})
    return template, data, batches


def test_every_proxy_is_finite_and_repeats_exactly_for_a_seed(setting):
    template, data, batches = setting
    first = ZeroCost(template, data, batches, seed=3).scores((CROSS, BASELINE))
    again = ZeroCost(template, data, batches, seed=3).scores((CROSS, BASELINE))
    assert set(first) == set(PROXIES) and first == again
    assert all(math.isfinite(v) for v in first.values())
    other = ZeroCost(template, data, batches, seed=4).scores((CROSS, BASELINE))
    assert other["grad_norm"] != first["grad_norm"]  # a new initialisation


def test_locality_is_minus_the_mean_set_locality():
    layers = (CROSS, BASELINE, "none")
    assert locality(layers, (8, 8)) == pytest.approx(-(set_locality(CROSS, 8, 8) + set_locality(BASELINE, 8, 8)) / 2)
    assert locality((CROSS,), (8, 8)) > locality((BASELINE,), (8, 8))  # rows and columns reach every neighbour


def test_zico_reads_every_batch_and_rewards_consistent_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x = torch.randn(8, 4)
    y = torch.randint(3, (8,))
    same = zico(model, [(x, y), (x, y)])  # identical gradients: zero spread, nothing counted
    assert same == 0.0
    varied = zico(model, [(x, y), (x + 0.1 * torch.randn_like(x), y)])
    noisy = zico(model, [(x, y), (torch.randn_like(x), torch.randint(3, (8,)))])
    assert varied > noisy  # consistent gradients across batches score higher
    # the definition, by hand: per tensor log(sum |mean g| / std g) over the batches
    grads = []
    for batch_x in (x, x + 0.5):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(batch_x), y).backward()
        grads.append([p.grad.clone().double() for p in model.parameters()])
    expected = sum(math.log((torch.stack(g).mean(0).abs() / torch.stack(g).std(0)).sum().item()) for g in zip(*grads))
    assert zico(model, [(x, y), (x + 0.5, y)]) == pytest.approx(expected, rel=1e-9)


def test_the_evaluator_ranks_by_the_chosen_proxy(setting):
    template, data, batches = setting
    evaluator = ZeroCost(template, data, batches, proxy="locality")
    assert evaluator((CROSS, CROSS))["loss"] == pytest.approx(-locality((CROSS, CROSS), (8, 8)))
    with pytest.raises(ValueError, match="two batches"):
        ZeroCost(template, data, batches[:1])
    with pytest.raises(ValueError, match="unknown"):
        ZeroCost(template, data, batches, proxy="magic")


@pytest.mark.slow  # a search from the command line: the full suite runs it
def test_zero_cost_search_from_the_command_line(tmp_path, cli):
    run = tmp_path / "zc"
    result = cli("search", "--searcher", "zero-cost", "--proxy", "locality", "--trials", "6", "--out", run, "--quiet",
                 "--data", "planted:grid=8,motifs_per_image=2,n_train=64,n_val=32,n_test=32", "--set", "dim=8",
                 "--set", "depth=2")
    assert result.returncode == 0, result.stderr
    trials = json.loads((run / "trials.json").read_text())["trials"]
    assert len(trials) == 6 and not (run / "supernet").exists()
    best = min(trials, key=lambda t: t["values"][0])
    assert best["values"][0] == pytest.approx(-best["metrics"]["zc_locality"])
    assert best["metrics"]["known"] == "cross"  # the most local pick of local8 on an 8x8 grid


@pytest.mark.parametrize("seeds", [[], ["--seeds", "0,1"]], ids=["one seed", "seeds"])
def test_one_training_image_is_refused_before_the_run_folder_exists(tmp_path, cli, seeds):
    from helpers import assert_one_line_error

    run = tmp_path / "run"
    result = cli("search", "--searcher", "zero-cost", "--trials", "2", "--data", "planted:n_train=1,n_val=8,n_test=8",
                 "--out", run, "--quiet", *seeds)
    assert_one_line_error(result, "zero-cost", "two training images")
    assert not run.exists()
