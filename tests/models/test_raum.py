"""RAUM-Net: the region-attention head, MC dropout, uncertainty and calibration."""
import math

import pytest
import torch
import torch.nn.functional as F

from scansearch import build_model, load_model, predict_with_uncertainty, save_model
from scansearch.models import ModelError, RAUMNet, RegionAttention
from scansearch.uncertainty import (Uncertainty, expected_calibration_error, reliability, supports_mc,
                                    uncertainty_from_probs)


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_model("raum_micro", num_classes=5, img_size=16, in_chans=1, patch_size=2).eval()


def test_raum_small_head_adds_about_a_tenth_of_a_million_parameters():
    with torch.device("meta"):
        raum = build_model("raum_small", num_classes=200)
        vmamba = build_model("vmamba_small", num_classes=200)
    added = sum(p.numel() for p in raum.parameters()) - sum(p.numel() for p in vmamba.parameters())
    head = sum(p.numel() for p in raum.region_attention.parameters())
    assert added == head  # the backbone is VMamba-S's, parameter for parameter
    assert 0.05e6 < added < 0.15e6, added  # the paper: about 0.1M


def test_raum_backbone_is_vmamba_and_the_genotype_sets_its_directions():
    model = build_model("raum_micro", num_classes=3)
    assert isinstance(model, RAUMNet) and model.cfg.family == "raum"
    assert model.genotype.layers[0] == ("h", "v", "h_flip", "v_flip")
    from scansearch.models import SCAttn

    local = build_model("raum_micro", num_classes=3, scattn=True)  # LocalVMamba's backbone
    assert sum(isinstance(m, SCAttn) for m in local.modules()) == 4
    assert not any(isinstance(m, SCAttn) for m in model.modules())


def test_forward_returns_logits_and_the_attention_map_on_request(micro):
    x = torch.randn(3, 1, 16, 16)
    logits = micro(x)
    again, attention = micro(x, return_attention=True)
    assert logits.shape == (3, 5) and attention.shape == (3, 2, 2)
    torch.testing.assert_close(logits, again)
    torch.testing.assert_close(attention.sum((1, 2)), torch.ones(3))
    assert (attention >= 0).all()


def test_region_attention_matches_a_float64_reference():
    torch.manual_seed(1)
    head = RegionAttention(dim=6, regions=2, reduction=2).double()
    with torch.no_grad():
        head.gate.normal_()
        head.position.normal_()
    x = torch.randn(2, 4, 4, 6, dtype=torch.float64)
    fused, attention = head(x)
    # by hand: each 2x2 block of the 4x4 map is one region, row-major
    regions = torch.stack([x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((1, 2)) for i in range(2) for j in range(2)], 1)
    regions = regions + head.position
    scores = head.score[2](F.gelu(head.score[0](regions))).squeeze(-1)
    weights = torch.exp(scores - scores.max(1, keepdim=True).values)
    weights = weights / weights.sum(1, keepdim=True)
    region = (weights[..., None] * regions).sum(1)
    normed = (region - region.mean(-1, keepdim=True)) / torch.sqrt(region.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected = x.mean((1, 2)) + head.gate * (normed * head.norm.weight + head.norm.bias)
    torch.testing.assert_close(attention.view(2, 4), weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-12)


def test_attention_follows_the_scores():
    """A region the scorer rates high gets the weight: the map says where the model looks."""
    head = RegionAttention(dim=4, regions=2, reduction=1)
    with torch.no_grad():
        head.position.zero_()
        head.score[0].weight.copy_(torch.eye(4))
        head.score[0].bias.zero_()
        head.score[2].weight.copy_(torch.tensor([[10.0, 0, 0, 0]]))
        head.score[2].bias.zero_()
    x = torch.zeros(1, 4, 4, 4)
    x[0, 2:, 2:, 0] = 3.0  # only the bottom-right region has channel 0
    _, attention = head(x)
    assert attention[0, 1, 1] > 0.99


def test_mc_logits_run_the_backbone_once_and_average_to_the_deterministic_pass(micro, monkeypatch):
    x = torch.randn(2, 1, 16, 16)
    calls = []
    real = RAUMNet.feature_map
    monkeypatch.setattr(RAUMNet, "feature_map", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with torch.no_grad():
        samples = micro.mc_logits(x, 4000, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 and samples.shape == (4000, 2, 5)
    with torch.no_grad():
        deterministic = micro(x)
    # the head is linear after the dropout: the MC mean of the logits converges on the eval pass
    assert (samples.mean(0) - deterministic).abs().max() < 0.05 * deterministic.abs().max() + 1e-3
    assert samples.std(0).max() > 0  # the passes differ


def test_mc_masks_come_from_the_generator(micro):
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        a = micro.mc_logits(x, 3, generator=torch.Generator().manual_seed(5))
        b = micro.mc_logits(x, 3, generator=torch.Generator().manual_seed(5))
        c = micro.mc_logits(x, 3, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_mc_logits_leave_the_training_mode_alone(micro):
    micro.train()
    micro.mc_logits(torch.randn(1, 1, 16, 16), 2)
    assert micro.training
    micro.eval()


def test_without_dropout_every_pass_is_the_deterministic_one():
    model = build_model("raum_micro", num_classes=4, img_size=16, in_chans=1, patch_size=2, mc_dropout=0.0).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        result = predict_with_uncertainty(model, x, samples=5)
        torch.testing.assert_close(result.mean, model(x).softmax(1))
    torch.testing.assert_close(result.mutual_info, torch.zeros(2))


def test_uncertainty_follows_the_formulas_in_float64():
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(6, 4, 5, generator=gen, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True)
    result = uncertainty_from_probs(probs)
    mean = probs.mean(0)
    entropy = torch.tensor([-sum(m * math.log(m) for m in row.tolist()) for row in mean], dtype=torch.float64)
    expected = torch.tensor([sum(-sum(p * math.log(p) for p in probs[t, b].tolist()) for t in range(6)) / 6
                             for b in range(4)], dtype=torch.float64)
    torch.testing.assert_close(result.entropy, entropy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.expected_entropy, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.mutual_info, entropy - expected, rtol=1e-12, atol=1e-12)
    assert (result.mutual_info > 0).all()  # the passes disagree
    assert torch.equal(result.prediction, mean.argmax(1))


def test_disagreeing_passes_are_more_uncertain_than_agreeing_ones():
    agree = torch.tensor([[[0.9, 0.1]], [[0.9, 0.1]]])
    disagree = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
    assert uncertainty_from_probs(agree).mutual_info.item() == pytest.approx(0, abs=1e-7)
    assert uncertainty_from_probs(disagree).mutual_info.item() > 0.3


def test_predict_with_uncertainty_refuses_a_model_without_mc_head():
    from scansearch.errors import TrainError

    model = build_model("vmamba_micro", num_classes=3)
    assert not supports_mc(model)
    with pytest.raises(TrainError, match="MC-dropout"):
        predict_with_uncertainty(model, torch.randn(1, 3, 32, 32))


def test_raum_model_saves_and_loads_stand_alone(tmp_path, micro):
    save_model(micro, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), micro(x))
    assert isinstance(loaded, RAUMNet) and loaded.cfg.regions == 2


@pytest.mark.parametrize("field, value", [("regions", 0), ("mc_dropout", 1.0), ("mc_samples", 0)])
def test_bad_head_settings_are_refused(field, value):
    with pytest.raises(ModelError, match=field if field != "mc_dropout" else "mc_dropout"):
        build_model("raum_micro", num_classes=3, **{field: value})


def test_expected_calibration_error_by_hand():
    # four samples: two at confidence 0.9 (one right), two at 0.6 (both right)
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1, 1])
    # bins of width 0.5: (0.5, 1] holds all four: mean conf 0.75, accuracy 0.75
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.0, abs=1e-7)
    # bins of width 0.1: 0.9 bin |0.5 - 0.9| = 0.4, 0.6 bin |1 - 0.6| = 0.4, each half the samples
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.4, abs=1e-6)
    table = reliability(probs, labels, bins=10)
    assert sum(r["count"] for r in table) == 4
    assert table[8]["count"] == 2 and table[5]["count"] == 2


def test_calibrated_predictions_have_small_ece():
    gen = torch.Generator().manual_seed(0)
    confidence = torch.rand(20000, generator=gen) * 0.5 + 0.5
    correct = torch.rand(20000, generator=gen) < confidence
    probs = torch.stack([confidence, 1 - confidence], 1)
    labels = torch.where(correct, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.02
    overconfident = torch.stack([confidence.clamp(max=0.999) ** 0.2, 1 - confidence.clamp(max=0.999) ** 0.2], 1)
    assert expected_calibration_error(overconfident, labels) > 0.1


def test_uncertainty_dataclass_is_public():
    import scansearch

    assert scansearch.Uncertainty is Uncertainty
