"""The DARTS supernet: candidates, weights, Gumbel paths, and the fused op against references."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scansearch.genotype import Genotype
from scansearch.models import DirectionSubset, ModelError, ScanMixer, ShapeError, build_model
from scansearch.searchers.supernet import MixedLayer, Supernet
from scansearch.spaces import load_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest

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
        assert mixer.attn is not None and mixer.candidate_norm  # the preset's SCAttn, then the norm
        assert mixer.x_proj_weight.shape[0] == 8
    fused = tiny_supernet(normalise=False)
    assert all(m.attn is None and not m.candidate_norm for m in fused.model.mixers())
    derived = build_model(Genotype(layers=(("h", "v"),) * 2, model="local_vim_micro"), num_classes=3,
                          in_chans=1, **TINY)
    assert all(m.attn is not None and not m.candidate_norm for m in derived.mixers())


@pytest.mark.parametrize("scattn", [True, False])
def test_no_candidate_can_rescale_itself_in_the_normalised_supernet(scattn):
    """LocalMamba's MultiScan normalises each candidate before the weighted merge, so a
    candidate cannot absorb its weight by scaling its output (its C and D, which scale
    y_k = C.h + D u); in the fused mixer it can. Only LayerNorm's eps is left."""
    torch.manual_seed(0)
    x, w = 3 * torch.randn(2, 16, 8), torch.softmax(torch.randn(4), 0)
    change = {}
    for norm in (True, False):
        mixer = ScanMixer(8, ("h", "h_flip", "v", "w2"), d_state=4, expand=2.0, scattn=scattn)
        mixer.candidate_norm = norm
        before = mixer(x, (4, 4), w)
        with torch.no_grad():
            R, N = mixer.dt_rank, mixer.d_state
            mixer.x_proj_weight[2, R + N:R + 2 * N] *= 5.0
            mixer.D[2] *= 5.0
        change[norm] = ((mixer(x, (4, 4), w) - before).abs().max() / before.abs().max()).item()
    assert change[True] < 2e-3 and change[False] > 2e-2, change


def test_weights_and_alphas_split_the_parameters():
    """alphas is the only architecture parameter, never a weight (by identity); the weights
    plus alphas are every parameter exactly once, and ``is_weight`` picks the same weights."""
    for net in (tiny_supernet(), tiny_supernet("local8_none")):
        weights = list(net.weight_parameters())
        arch = net.arch_parameters()
        assert len(arch) == 1 and arch[0] is net.alphas
        assert all(p is not net.alphas for p in weights)
        everything = list(net.parameters())
        split = [id(p) for p in weights] + [id(net.alphas)]
        assert len(split) == len(set(split)) == len(everything)  # nothing twice
        assert set(split) == {id(p) for p in everything}  # nothing left out
        by_filter = [p for name, p in net.named_parameters() if Supernet.is_weight(name, p)]
        assert [id(p) for p in by_filter] == [id(p) for p in weights]


def test_forward_and_alpha_gradient():
    net = tiny_supernet()
    x = torch.randn(4, 1, 8, 8)
    logits = net(x)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert net.alphas.grad is not None and net.alphas.grad.abs().sum() > 0


def test_fused_supernet_matches_float64_reference(monkeypatch):
    """The fused weighted op (torch backend) against the reference loop, both in float64:
    ``set_backend`` really switches every mixer (a spy counts each backend's calls), and each
    layer's output and the alpha gradient agree to float64 precision, not float32's."""
    import scansearch.kernels.api as api
    import scansearch.kernels.torch_backend as torch_backend

    calls = {"reference": 0, "torch": 0}

    def counting(name, fn):
        def spy(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return spy

    monkeypatch.setattr(api, "multi_scan_ref", counting("reference", api.multi_scan_ref))
    monkeypatch.setattr(torch_backend, "forward", counting("torch", torch_backend.forward))
    net = tiny_supernet().double()
    with torch.no_grad():
        net.alphas.normal_(0, 1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    mixers = list(net.model.mixers())
    outputs = {}
    for i, mixer in enumerate(mixers):  # the logits hardly depend on a freshly initialised mixer: compare each
        mixer.register_forward_hook(lambda module, args, out, i=i: outputs.__setitem__(i, out))

    def run(backend):
        assert net.model.set_backend(backend) is net.model  # it returns the model, for chaining
        assert all(m.backend == backend for m in mixers)
        net.zero_grad()
        logits = net(x)
        logits.square().sum().backward()
        return logits, [outputs[i] for i in range(len(mixers))], net.alphas.grad.clone()

    fast = run("torch")
    assert calls == {"reference": 0, "torch": len(mixers)}
    ref = run("reference")
    assert calls == {"reference": len(mixers), "torch": len(mixers)}
    assert fast[0].dtype == ref[0].dtype == torch.float64
    for a, b in zip([fast[0], *fast[1], fast[2]], [ref[0], *ref[1], ref[2]]):
        # float64 agrees to ~1e-16 relative here; a float32 step anywhere would be ~1e-7
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item())
    net.model.set_backend(None)
    assert all(m.backend is None for m in mixers)


def test_fused_supernet_matches_one_scan_per_candidate():
    net = tiny_supernet(normalise=False)
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
    with pytest.raises(ShapeError, match="direction subset"):  # a caller's bug, not the user's input
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
    cnn = block.mixer.cnn(tokens, hw)
    expected = torch.nn.functional.layer_norm(cnn, cnn.shape[-1:])  # normalised like every candidate
    torch.testing.assert_close(block.mixer(tokens, hw, weights), expected, rtol=1e-4, atol=1e-5)
    assert net(x).shape == (2, 3)


def test_gumbel_backward_reaches_exactly_the_sampled_paths():
    """With ``set_gumbel``, a backward reaches the alphas and per-direction SSM parameters of
    the sampled candidates only, and the gated CNN exactly where ``none`` was sampled."""
    net = tiny_supernet("local8_none")
    none = net.space.candidates.index("none")
    with torch.no_grad():  # Gumbel noise lies in [-3.14, 23.03]: a gap of 30 fixes whether `none` is drawn
        net.alphas.zero_()
        net.alphas[0, none] = 30.0  # layer 0 always samples none
        net.alphas[1, none] = -30.0  # layer 1 never does
    net.set_gumbel(3, tau=10.0)  # a high temperature keeps every sampled weight well above zero
    assert net.gumbel_k == 3 and net.tau == 10.0
    samples, sample = [], net.sample

    def recording_sample(logits):
        samples.append(sample(logits))
        return samples[-1]

    net.sample = recording_sample  # layer_weights() calls self.sample: see what each layer drew
    net.train()
    torch.manual_seed(0)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert len(samples) == net.num_layers == 2 and net.alphas.grad is not None
    assert none in samples[0].indices.tolist() and none not in samples[1].indices.tolist()
    for layer, (subset, block) in enumerate(zip(samples, net.model.blocks())):
        picked = subset.indices.tolist()
        assert len(picked) == len(set(picked)) == 3
        grad = net.alphas.grad[layer]
        assert all(grad[i] != 0 for i in picked), (layer, picked, grad)
        assert all(grad[i] == 0 for i in range(len(net.candidates)) if i not in picked), (layer, picked, grad)
        mixer = block.mixer
        patterns = [int(mixer.to_pattern[i]) for i in picked if i != none]
        for name in ("x_proj_weight", "A_log", "D"):
            g = getattr(mixer.scan, name).grad
            for k in range(len(mixer.directions)):
                assert (torch.count_nonzero(g[k]) > 0) == (k in patterns), (layer, name, k, patterns)
        cnn_grads = [p.grad for p in mixer.cnn.parameters()]
        if none in picked:
            assert all(g is not None and torch.count_nonzero(g) > 0 for g in cnn_grads)
        else:
            assert all(g is None or torch.count_nonzero(g) == 0 for g in cnn_grads)


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
    """Discretising known alphas keeps, per layer, the top-k candidates by alpha in the space's
    candidate order, records the weights and provenance, and the derived model scans exactly
    those directions."""
    from scansearch.searchers.discretize import discretize

    net = tiny_supernet()
    torch.manual_seed(5)
    with torch.no_grad():
        net.alphas.copy_(torch.randn_like(net.alphas))
    candidates = net.space.candidates
    expected, by_rank = [], []
    for row in net.alphas.detach():
        top = torch.topk(row, net.space.k).indices.tolist()  # strongest first
        by_rank.append(tuple(candidates[i] for i in top))
        expected.append(tuple(candidates[i] for i in sorted(top)))
    assert by_rank != expected  # the ranking order differs from the candidate order: the test tells them apart
    provenance = {"searcher": "test", "seed": 5}
    genotype = discretize(net.alphas, net.space, model="local_vim_micro", grid=(8, 8), provenance=provenance)
    assert isinstance(genotype, Genotype)
    assert genotype.layers == tuple(expected)
    assert genotype.model == "local_vim_micro" and genotype.space == "local8" and genotype.grid == (8, 8)
    assert genotype.provenance == provenance
    torch.testing.assert_close(torch.tensor(genotype.alphas), torch.softmax(net.alphas.detach(), -1),
                               atol=1e-6, rtol=0)
    model = build_model(genotype, num_classes=3, in_chans=1, **TINY)
    assert [m.directions for m in model.mixers()] == expected
    assert all(m.attn is not None for m in model.mixers())  # the preset's SCAttn is back
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)
