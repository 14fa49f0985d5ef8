"""The DARTS supernet: candidates, weights, Gumbel paths, and the fused op against references."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scansearch.genotype import Genotype
from scansearch.models import DirectionSubset, ModelError, ScanMixer, build_model
from scansearch.searchers.supernet import MixedLayer, Supernet
from scansearch.spaces import load_space

TINY = dict(dim=8, depth=2, d_state=4, expand=1.0)


def tiny_supernet(space="local8", **kwargs) -> Supernet:
    torch.manual_seed(0)
    return Supernet("local_vim_micro", load_space(space), num_classes=3, img_size=8, in_chans=1,
                    **{**TINY, **kwargs})


def test_every_layer_holds_every_candidate():
    net = tiny_supernet()
    assert net.alphas.shape == (2, 8)
    for mixer in net.model.mixers():
        assert mixer.directions == net.space.candidates
        assert mixer.attn is None  # no SCAttn: one fused call per layer
        assert mixer.x_proj_weight.shape[0] == 8
    names = {n for n, _ in net.named_parameters()}
    assert "alphas" in names and "alphas" not in {id(p) for p in net.weight_parameters()}
    assert all(p is not net.alphas for p in net.weight_parameters())


def test_forward_and_alpha_gradient():
    net = tiny_supernet()
    x = torch.randn(4, 1, 8, 8)
    logits = net(x)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert net.alphas.grad is not None and net.alphas.grad.abs().sum() > 0


def test_fused_supernet_matches_float64_reference():
    """The fused weighted op (torch backend) against the reference loop in float64."""
    net = tiny_supernet().double()
    with torch.no_grad():
        net.alphas.normal_(0, 1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    fast = net.model.set_backend("torch")
    out = net(x)
    net.model.set_backend("reference")
    ref = net(x)
    torch.testing.assert_close(out, ref, rtol=6e-4, atol=2e-3)
    fast.set_backend(None)


def test_fused_supernet_matches_one_scan_per_candidate():
    net = tiny_supernet()
    with torch.no_grad():
        net.alphas.normal_(0, 1)
    x = torch.randn(3, 1, 8, 8)
    fused = net(x)
    for mixer in net.model.mixers():
        mixer.attn = nn.Identity()  # the per-direction path, one K=1 scan per candidate
    torch.testing.assert_close(net(x), fused, rtol=6e-4, atol=2e-3)


def test_direction_subset_equals_selected_mixer():
    torch.manual_seed(1)
    mixer = ScanMixer(8, ("h", "h_flip", "v", "w2", "w2_flip"), d_state=4, expand=1.0)
    x = torch.randn(2, 16, 8)
    indices = torch.tensor([1, 3])
    w = torch.tensor([0.3, 0.7])
    out = mixer(x, (4, 4), DirectionSubset(indices, w))
    expected = mixer.select([1, 3])(x, (4, 4), w)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    unused = mixer.x_proj_weight.grad[[0, 2, 4]]
    assert torch.count_nonzero(unused) == 0 and torch.count_nonzero(mixer.x_proj_weight.grad[[1, 3]]) > 0
    with pytest.raises(ModelError, match="direction subset"):
        mixer(x, (4, 4), DirectionSubset(torch.tensor([7]), torch.ones(1)))


def test_gumbel_samples_k_paths_and_stays_differentiable():
    net = tiny_supernet(gumbel_k=2)
    net.train()
    torch.manual_seed(3)
    weights = net.layer_weights()
    for subset in weights:
        assert isinstance(subset, DirectionSubset)
        assert len(subset.indices) == 2 and len(set(subset.indices.tolist())) == 2
        torch.testing.assert_close(subset.weights.sum(), torch.tensor(1.0))
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert net.alphas.grad.abs().sum() > 0
    net.eval()  # evaluation uses every candidate
    assert all(isinstance(w, torch.Tensor) and w.shape == (8,) for w in net.layer_weights())


def test_gumbel_with_every_candidate_still_perturbs_the_weights():
    net = tiny_supernet(gumbel_k=8)
    net.train()
    torch.manual_seed(0)
    first, second = net.layer_weights()[0], net.layer_weights()[0]
    assert first.indices.tolist() == list(range(8))
    assert not torch.allclose(first.weights, second.weights)  # Gumbel noise, not softmax(alpha)


def test_gumbel_sampling_follows_alpha():
    net = tiny_supernet(gumbel_k=1)
    with torch.no_grad():
        net.alphas.zero_()
        net.alphas[:, 4] = 3.0
    torch.manual_seed(0)
    picks = [int(net.sample(net.alphas[0]).indices) for _ in range(400)]
    share = picks.count(4) / len(picks)
    expected = torch.softmax(net.alphas[0].detach(), 0)[4].item()  # Gumbel-max samples softmax(alpha)
    assert abs(share - expected) < 0.08


def test_space_with_none_mixes_a_gated_cnn():
    net = tiny_supernet("local8_none")
    assert net.alphas.shape[1] == len(net.space.candidates)
    layers = [b.mixer for b in net.model.blocks()]
    assert all(isinstance(m, MixedLayer) for m in layers)
    with torch.no_grad():
        net.alphas.zero_()
        none = net.space.candidates.index("none")
        net.alphas[:, none] = 50.0  # all weight on `none`: the layer is the gated CNN alone
    x = torch.randn(2, 1, 8, 8)
    hw = (8, 8)
    block = net.model.blocks()[0]
    tokens = torch.randn(2, 64, 8)
    weights = torch.softmax(net.alphas[0], 0)
    torch.testing.assert_close(block.mixer(tokens, hw, weights), block.mixer.cnn(tokens, hw), rtol=1e-4, atol=1e-5)
    assert net(x).shape == (2, 3)
    net.gumbel_k = 3
    net.train()
    net(x).sum().backward()


def test_mambaout_and_bad_options_are_refused():
    with pytest.raises(ModelError, match="no scan layers"):
        Supernet("mambaout_micro", load_space("local8"), num_classes=3, img_size=32, in_chans=1)
    with pytest.raises(ModelError, match="gumbel_k"):
        tiny_supernet(gumbel_k=9)


def test_vmamba_supernet_runs():
    torch.manual_seed(0)
    net = Supernet("local_vmamba_micro", load_space("cross4"), num_classes=3, img_size=32, in_chans=1,
                   dims=(8, 16, 16), depths=(1, 1, 1))
    assert net.alphas.shape == (3, 4)
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    assert net.alphas.grad.abs().sum() > 0


def test_derived_model_builds_from_discretised_supernet():
    from scansearch.searchers.discretize import discretize

    net = tiny_supernet()
    genotype = discretize(net.alphas, net.space, model="local_vim_micro", grid=(8, 8), provenance={"seed": 0})
    assert isinstance(genotype, Genotype) and all(len(layer) == 4 for layer in genotype.layers)
    model = build_model(genotype, num_classes=3, in_chans=1, **TINY)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)
