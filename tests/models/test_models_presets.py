"""Presets reproduce the published parameter counts and FLOPs (224x224, 1000 classes)."""
import pytest
import torch
import yaml

from helpers import FIXTURES
from scansearch.flops import count_flops, count_params, localmamba_flops
from scansearch.models import FAMILIES, PRESETS, build_model, list_presets

PUBLISHED = sorted(name for name, p in PRESETS.items() if p.published is not None)
# The published figures, kept with the tests (params, FLOPs, top-1 of every reproduced model).
ANCHORS = FIXTURES / "anchors" / "published.yaml"


def _meta(name, **kwargs):
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        return build_model(name, **kwargs)


def test_every_published_model_has_a_preset():
    expected = {"vim_tiny", "vim_small", "local_vim_tiny", "local_vim_small", "vmamba_tiny", "vmamba_small",
                "local_vmamba_tiny", "local_vmamba_small", "mambaout_femto", "mambaout_kobe", "mambaout_tiny",
                "mambaout_small"}
    assert set(PUBLISHED) == expected
    assert {f"{family}_micro" for family in FAMILIES} <= set(list_presets())


def test_presets_quote_the_anchor_figures():
    anchors = yaml.safe_load(ANCHORS.read_text())
    assert set(anchors) == set(PUBLISHED)
    for name, anchor in anchors.items():
        published = PRESETS[name].published
        assert (published.params, published.flops, published.top1) == (anchor["params"], anchor["flops"],
                                                                        anchor["top1"]), name
        assert PRESETS[name].family == anchor["family"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_matches_published(name):
    published = PRESETS[name].published.params * 1e6
    params = count_params(_meta(name))
    assert abs(params - published) <= max(0.5e6, 0.03 * published), f"{name}: {params / 1e6:.2f}M"


@pytest.mark.parametrize("name", PUBLISHED)
def test_flops_match_published(name):
    published = PRESETS[name].published
    flops = count_flops(_meta(name), 224, convention=published.flops_convention)
    assert abs(flops / 1e9 - published.flops) <= 0.05 * published.flops, f"{name}: {flops / 1e9:.3f}G"


def test_exact_counts_of_two_reference_implementations():
    # VMamba's own counter prints 25,796,584 parameters and 5.30G for Vim-S (with 197 tokens)
    assert count_params(_meta("vim_small")) == 25_796_584
    # fvcore on VMamba v0 tiny: every linear/conv, 9*B*L*D*N + B*L*D per scan, layer norms
    assert abs(count_flops(_meta("vmamba_tiny"), 224) - 5.63e9) < 0.01e9


def test_meta_count_equals_a_real_forward():
    model = build_model("local_vmamba_micro")
    real = count_flops(torch.nn.Sequential(model), 32)  # not a scansearch model: counted by a real forward
    assert real == count_flops(model, 32) > 0


def test_localmamba_convention_is_for_vim_models_only():
    assert localmamba_flops(_meta("vim_tiny"), (224, 224)) < count_flops(_meta("vim_tiny"), 224)
    with pytest.raises(ValueError, match="vim/local_vim models only"):
        count_flops(_meta("vmamba_tiny"), 224, convention="localmamba")
    with pytest.raises(ValueError, match="unknown FLOP convention"):
        count_flops(_meta("vim_tiny"), 224, convention="thop")


def test_flops_grow_with_image_size_and_directions():
    small, large = count_flops(_meta("vim_micro"), 16), count_flops(_meta("vim_micro"), 32)
    assert 3.5 * small < large < 4.5 * small
    two = count_flops(_meta("vmamba_micro"), 32)
    from scansearch import Genotype
    six = count_flops(_meta(Genotype(layers=(("h", "v", "w2", "w2_flip", "diag", "spiral"),) * 4,
                                      model="vmamba_micro")), 32)
    assert six > two
