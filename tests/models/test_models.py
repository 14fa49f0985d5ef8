"""The scan mixer and the model families: shapes, initialisation, weights, select, the
``none`` choice, backends, image sizes, build errors, torch.compile."""
import math

import pytest
import torch
import yaml

import scansearch.kernels
from scansearch import Genotype
from scansearch.models import (PRESETS, ModelError, SCAttn, ScanMixer, ShapeError, build_model, list_presets)
from scansearch.models.blocks import GatedCNN
from scansearch.models.mixer import sequence_orders

LOCAL8 = ("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip")
MICRO = [name for name in list_presets() if name.endswith("_micro")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops on a busy 2-core machine run faster (and steadier) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mixer(directions=LOCAL8, **kw):
    torch.manual_seed(0)
    return ScanMixer(16, directions, d_state=4, **kw).double()


# -- the mixer ---------------------------------------------------------------------------------
def test_per_direction_parameters_are_stacked_and_initialised_like_mamba():
    m = ScanMixer(16, LOCAL8, d_state=4, expand=2)
    K, Di, N, R = 8, 32, 4, 1
    assert m.A_log.shape == (K, Di, N) and m.D.shape == (K, Di)
    assert m.x_proj_weight.shape == (K, R + 2 * N, Di)
    assert m.dt_proj_weight.shape == (K, Di, R) and m.dt_proj_bias.shape == (K, Di)
    assert m.conv1d_weight.shape == (K, Di, 4) and m.conv1d_bias.shape == (K, Di)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1.0, N + 1)).expand(K, Di, N))
    assert torch.equal(m.D, torch.ones(K, Di))
    dt = torch.nn.functional.softplus(m.dt_proj_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert m.dt_proj_weight.abs().max() <= R ** -0.5
    image = ScanMixer(16, ("h", "v"), conv="image", d_conv=3, out_norm=True)
    assert not hasattr(image, "conv1d_weight") and image.conv2d.groups == 32


def _loop_of_single_directions(m, x, hw, weights=None):
    """The mixer written the slow, obvious way: one direction at a time, mamba's reference
    scan in scan order, outputs put back in image order and merged."""
    import torch.nn.functional as F
    from scansearch.kernels import selective_scan_ref
    from scansearch.spaces import orders as order_table

    batch, L, _ = x.shape
    x_in, z = m.in_proj(x).chunk(2, -1)
    if m.conv == "image":
        x_in = F.silu(m.conv2d(x_in.transpose(1, 2).reshape(batch, -1, *hw))).flatten(2).transpose(1, 2)
    ys = []
    for k, order in enumerate(order_table(m.directions, *hw)):
        xk = x_in[:, order]
        if m.conv == "sequence":
            xk = F.conv1d(xk.transpose(1, 2), m.conv1d_weight[k][:, None], m.conv1d_bias[k],
                          padding=m.d_conv - 1, groups=m.d_inner)[..., :L]
            xk = F.silu(xk).transpose(1, 2)
        dt, B, C = (xk @ m.x_proj_weight[k].t()).split([m.dt_rank, m.d_state, m.d_state], -1)
        y = selective_scan_ref(xk.transpose(1, 2), (dt @ m.dt_proj_weight[k].t()).transpose(1, 2),
                               -torch.exp(m.A_log[k]), B.transpose(1, 2), C.transpose(1, 2), D=m.D[k],
                               delta_bias=m.dt_proj_bias[k], delta_softplus=True).transpose(1, 2)
        image = torch.empty_like(y)
        image[:, order] = y
        ys.append(image * F.silu(z) if m.attn is not None and m.out_norm is None else image)
    ys = torch.stack(ys, 1)
    if m.attn is not None:
        ys = m.attn(ys)
    w = torch.ones(len(m.directions), dtype=x.dtype) if weights is None else weights
    y = (ys * (w / len(w) if m.merge == "mean" else w)[None, :, None, None]).sum(1)
    if m.out_norm is not None:
        y = m.out_norm(y) * F.silu(z)
    elif m.attn is None:
        y = y * F.silu(z)
    return m.out_proj(y)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(scattn=True), dict(merge="mean"),
    dict(conv="image", d_conv=3, out_norm=True), dict(conv="image", d_conv=3, out_norm=True, scattn=True),
], ids=["vim", "local_vim", "vim_mean", "vmamba", "local_vmamba"])
def test_mixer_equals_a_loop_of_single_directions(kwargs):
    m = _mixer(("h", "v_flip", "w2", "spiral"), **kwargs)
    with torch.no_grad():
        m.dt_proj_bias.fill_(0.3)
    x = torch.randn(2, 30, 16, dtype=torch.float64)  # a 5x6 grid: windows are partial
    weights = torch.rand(4, dtype=torch.float64)
    for w in (None, weights):
        assert torch.allclose(m(x, (5, 6), w), _loop_of_single_directions(m, x, (5, 6), w), atol=1e-8)


@pytest.mark.parametrize("conv", ["sequence", "image"])
@pytest.mark.parametrize("scattn", [False, True])
def test_one_hot_weights_equal_the_selected_child(conv, scattn):
    full = _mixer(conv=conv, d_conv=3 if conv == "image" else 4, scattn=scattn, out_norm=conv == "image")
    x = torch.randn(2, 64, 16, dtype=torch.float64)
    keep = [1, 4, 6]
    weights = torch.zeros(8, dtype=torch.float64)
    weights[keep] = 1.0
    child = full.select(keep)
    assert child.directions == ("h_flip", "w2", "w7") and child.A_log.shape[0] == 3
    assert torch.allclose(full(x, (8, 8), weights), child(x, (8, 8)), atol=1e-10)
    assert torch.allclose(child(x, (8, 8)), child(x, (8, 8), torch.ones(3, dtype=torch.float64)), atol=1e-12)
    child.A_log.data.zero_()  # the child owns copies
    assert full.A_log.abs().sum() > 0


def test_weights_are_checked_and_mean_merge_averages():
    m = _mixer(("h", "v"))
    x = torch.randn(1, 16, 16, dtype=torch.float64)
    with pytest.raises(ShapeError, match=r"weights must have shape \(2,\)"):
        m(x, (4, 4), torch.ones(3, dtype=torch.float64))
    mean = _mixer(("h", "v"), merge="mean")
    assert torch.allclose(mean(x, (4, 4)), m(x, (4, 4), torch.full((2,), 0.5, dtype=torch.float64)), atol=1e-12)


def test_one_scan_call_with_or_without_scattn(monkeypatch):
    """SCAttn needs each direction's output: it gets them from the same single call (merge=False)."""
    calls = []
    real = scansearch.kernels.multi_scan

    def counting(*args, **kwargs):
        calls.append((args[6].shape[0], kwargs.get("merge", True)))  # K of this call, merged or not
        return real(*args, **kwargs)

    monkeypatch.setattr(scansearch.kernels, "multi_scan", counting)
    x = torch.randn(2, 64, 16, dtype=torch.float64)
    _mixer()(x, (8, 8))
    assert calls == [(8, True)]
    calls.clear()
    _mixer(scattn=True)(x, (8, 8))
    assert calls == [(8, False)]


def test_mixer_rejects_bad_directions():
    for bad in [(), ("h", "h"), ("none",), ("zigzag",)]:
        with pytest.raises(ModelError):
            ScanMixer(16, bad)


def test_class_token_sits_in_the_middle_of_every_scan():
    table = sequence_orders(("h", "h_flip", "v"), 4, 4, 17, "cpu")
    assert torch.equal(table[0], torch.arange(17))  # Vim's forward sequence
    assert torch.equal(table[1], torch.arange(17).flip(0))  # and its flip
    assert table[2, 8] == 8 and sorted(table[2].tolist()) == list(range(17))
    with pytest.raises(ShapeError, match="does not fit a 4x4 grid"):
        sequence_orders(("h",), 4, 4, 20, "cpu")


def test_scattn_parameter_counts_match_localmamba():
    # LocalMamba's BiAttn(C): LayerNorm(C), Linear(C, C/8), Linear(C/8, C)
    c = 384
    assert sum(p.numel() for p in SCAttn(c).parameters()) == 2 * c + (c * 48 + 48) + (48 * c + c)
    spatial = sum(p.numel() for p in SCAttn(c, spatial=True).parameters())
    assert spatial == 38064 + (c * 48 + 48) + (96 + 1)
    ys = torch.randn(2, 4, 10, c)
    assert SCAttn(c, spatial=True)(ys).shape == ys.shape


def test_gated_cnn_matches_mambaout_split_and_handles_a_class_token():
    block = GatedCNN(48)
    assert block.split_sizes == (128, 80, 48) and block.fc1.out_features == 256
    x = torch.randn(2, 17, 48)
    out = block(x, (4, 4))
    assert out.shape == x.shape
    # the class token (index 8) sees only itself
    y = x.clone()
    y[:, :8] += 1.0
    y[:, 9:] -= 1.0
    assert torch.allclose(block(y, (4, 4))[:, 8], out[:, 8], atol=1e-6)


# -- the families --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MICRO)
def test_micro_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10)
    images = torch.randn(3, 3, *model.cfg.image_hw)
    logits = model(images)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert sum(p.numel() for p in model.parameters()) < 500_000


@pytest.mark.parametrize("name", [n for n in MICRO if not n.startswith("mambaout")])
def test_torch_backend_matches_reference(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).double().eval()  # eval: raum's head dropout off
    with torch.no_grad():  # move dt away from its tiny initial values so the scans matter
        for mixer in model.mixers():
            mixer.dt_proj_bias.fill_(0.5)
            mixer.out_proj.weight.mul_(20)
    images = torch.randn(2, 3, *model.cfg.image_hw, dtype=torch.float64)
    with torch.no_grad():
        fast = model.set_backend("torch")(images)
        slow = model.set_backend("reference")(images)
    assert (fast - slow).abs().max() < 1e-9 * max(1.0, slow.abs().max().item())
    assert fast.std() > 1e-3


@pytest.mark.parametrize("model_name,layers", [
    ("vim_micro", [("h", "h_flip"), "none", ("v", "w2"), "none"]),
    ("local_vim", [("w2", "v"), "none", ("diag", "hilbert", "spiral")]),
    ("vmamba_micro", ["none", ("h", "v"), "none", ("snake_h",)]),
    ("local_vmamba_micro", [("h",), ("w2", "w2_flip"), "none", ("v",)]),
    ("mambaout_micro", ["none", ("h", "v"), ("w2", "w7"), "none", "none"]),
])
def test_genotypes_with_none_layers_build_and_train(model_name, layers):
    genotype = Genotype(layers=tuple(tuple(x) if isinstance(x, tuple) else x for x in layers), model=model_name)
    model = build_model(genotype, num_classes=4)
    assert [b.directions for b in model.blocks()] == [() if x == "none" else x for x in layers]
    assert model.genotype is genotype
    images = torch.randn(2, 3, *model.cfg.image_hw)
    model(images).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_family_name_in_a_genotype_takes_the_micro_preset_with_its_depth():
    model = build_model(Genotype(layers=(("h",),) * 6, model="vim"), num_classes=3)
    assert model.cfg.preset == "vim_micro" and model.cfg.depth == 6


@pytest.mark.parametrize("name", ["vim_micro", "local_vim_micro"])
def test_isotropic_models_run_at_other_image_sizes(name):
    model = build_model(name, num_classes=5)
    for size in [(24, 20), (5, 7)]:
        assert model(torch.randn(2, 3, *size)).shape == (2, 5)
    if model.pos_embed is not None:
        assert model._position(model.grid) is model.pos_embed


@pytest.mark.parametrize("name", ["vmamba_micro", "mambaout_micro"])
def test_hierarchical_models_run_at_odd_sizes(name):
    model = build_model(name, num_classes=5)
    assert model(torch.randn(1, 3, 36, 44)).shape == (1, 5)


@pytest.mark.parametrize("name", sorted(n for n, p in PRESETS.items() if p.published is not None))
def test_published_presets_run_at_small_size(name):
    model = build_model(name, num_classes=10, img_size=32)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_layer_count_mismatch_is_a_clear_error():
    short = Genotype(layers=Genotype.preset("local_vim_tiny").layers[:18], model="local_vim_tiny")
    with pytest.raises(ModelError, match=r"^genotype has 18 layers, local_vim_tiny has 20$"):
        build_model(short)
    with pytest.raises(ModelError, match="genotype has 2 layers, vmamba_micro has 4"):
        build_model(Genotype(layers=(("h",), ("v",)), model="vmamba_micro"))


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(spec="vim_huge"), "unknown model preset 'vim_huge'"),
    (dict(spec=Genotype(layers=(("h",),))), "names no model"),
    (dict(spec=Genotype(layers=(("h",),), model="resnet50")), "neither a preset nor a family"),
    (dict(spec="vim_micro", dimension=3), "unknown field(s) dimension"),
    (dict(spec="vim_micro", dim="wide"), "field 'dim' has a bad value"),
    (dict(spec="vim_micro", pool="max"), "field 'pool' must be one of"),
    (dict(spec="local_vim_micro", pool="cls"), "pool 'cls' needs cls_token"),
    (dict(spec="vmamba_micro", dims=[8, 16]), "differ in length"),
    (dict(spec=42), "expected a preset name"),
])
def test_bad_build_requests(kwargs, fragment):
    spec = kwargs.pop("spec")
    with pytest.raises(ModelError) as info:
        build_model(spec, **kwargs)
    assert fragment in str(info.value)


def test_build_from_a_genotype_file(tmp_path):
    path = tmp_path / "g.yaml"
    Genotype(layers=(("h", "v"), ("w2",), "none", ("v_flip",)), model="local_vim_micro").save(path)
    model = build_model(path, num_classes=2, in_chans=1)
    assert model.genotype.layers[2] == "none" and model.cfg.in_chans == 1
    (tmp_path / "bad.yaml").write_text("scansearch_genotype: 1\nlayers: [[h, zigzag]]\n")
    with pytest.raises(ModelError, match="unknown pattern 'zigzag'"):
        build_model(tmp_path / "bad.yaml")
    with pytest.raises(ModelError, match="file not found"):
        build_model(tmp_path / "missing.yaml")


def test_models_carry_a_plain_config_and_their_genotype():
    model = build_model("local_vim_tiny", num_classes=7, img_size=64)
    config = model.config
    assert config["family"] == "local_vim" and config["preset"] == "local_vim_tiny"
    assert config["num_classes"] == 7 and config["img_size"] == 64 and config["scattn"] is True
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    assert model.genotype.model == "local_vim_tiny" and len(model.genotype) == 20
    assert model.genotype.provenance["searcher"] == "localmamba"
    assert build_model("vmamba_tiny").genotype.layers == (("h", "v", "h_flip", "v_flip"),) * 15


def test_backend_is_passed_to_every_scan(monkeypatch):
    seen = []
    real = scansearch.kernels.multi_scan
    monkeypatch.setattr(scansearch.kernels, "multi_scan", lambda *a, **k: seen.append(k["backend"]) or real(*a, **k))
    model = build_model("vmamba_micro", backend="reference")
    model(torch.randn(1, 3, 32, 32))
    assert seen and set(seen) == {"reference"}
    seen.clear()
    model.set_backend(None)(torch.randn(1, 3, 32, 32))
    assert set(seen) == {None}


@pytest.mark.slow
def test_torch_compile_handles_a_micro_model():
    torch.manual_seed(0)
    model = build_model("vim_micro", num_classes=10)
    images = torch.randn(2, 3, 16, 16)
    expected = model(images)
    compiled = torch.compile(model, fullgraph=True)
    logits = compiled(images)
    assert torch.allclose(logits, expected, atol=1e-5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert math.isfinite(float(model.head.weight.grad.sum()))
