"""Semi-supervised training (FixMatch style, RAUM-Net's uncertainty filter) and occlusion."""
import json

import pytest
import torch

from helpers import InterruptAt, assert_one_line_error
from scansearch.data import DataError, TensorLoader, load_data
from scansearch.data.occlusion import (OccludedLoader, batch_generator, check_share, covered_share, occlude,
                                       rectangle_size)
from scansearch.data.unlabeled import labeled_indices, split_labeled
from scansearch.errors import TrainError
from scansearch.semi import SemiConfig, SemiLoader, SemiSupervised, pseudo_labels, strong_view


# -- occlusion ---------------------------------------------------------------------------------
@pytest.mark.parametrize("H, W", [(8, 8), (16, 16), (28, 28), (7, 12)])
@pytest.mark.parametrize("share", [0.1, 0.2, 0.4])
def test_occlusion_covers_the_asked_share(H, W, share):
    images = torch.randn(64, 2, H, W) + 5  # no pixel is 0 already
    out = occlude(images, share, torch.Generator().manual_seed(0))
    covered = covered_share(images, out)
    # one rectangle of whole pixels: within a row or column of the target
    slack = max(1 / H, 1 / W) * 1.01
    assert (covered - share).abs().max() <= slack, covered
    assert abs(covered.mean().item() - share) < slack / 2
    assert torch.equal(out[images != out], torch.zeros_like(out[images != out]))


def test_occlusion_is_one_rectangle_placed_at_random():
    images = torch.ones(200, 1, 10, 10)
    out = occlude(images, 0.2, torch.Generator().manual_seed(1))
    masks = out[:, 0] == 0
    for mask in masks[:20]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols)  # a full rectangle
        assert rows.max() - rows.min() + 1 == len(rows)
    # every pixel is hit by some rectangle: the places are spread over the image
    assert masks.any(0).all()


def test_occlusion_is_reproducible_per_generator_and_zero_share_is_a_no_op():
    images = torch.randn(8, 3, 16, 16)
    a = occlude(images, 0.3, torch.Generator().manual_seed(4))
    b = occlude(images, 0.3, torch.Generator().manual_seed(4))
    c = occlude(images, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(occlude(images, 0.0, torch.Generator()), images)
    assert rectangle_size(0.0, 8, 8, 1.0) == (0, 0)


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan")])
def test_bad_occlusion_shares_are_refused(share):
    with pytest.raises(DataError, match="occluded share"):
        check_share(share)


def test_occluded_loader_shows_every_model_the_same_occluders():
    loader = TensorLoader(torch.randn(10, 1, 8, 8) + 3, torch.arange(10), 4)
    first = [x for x, _ in OccludedLoader(loader, 0.25, seed=2)]
    second = [x for x, _ in OccludedLoader(loader, 0.25, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(first[1], occlude(loader.images[4:8], 0.25, batch_generator(2, 1)))


# -- labeled and unlabeled parts ---------------------------------------------------------------
def test_labeled_indices_keep_the_ratio_of_each_class_and_at_least_one():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 3)
    mask = labeled_indices(labels, 0.1, seed=0)
    assert [int(mask[labels == c].sum()) for c in range(3)] == [5, 2, 1]
    assert torch.equal(mask, labeled_indices(labels, 0.1, seed=0))
    assert not torch.equal(mask, labeled_indices(labels, 0.1, seed=1))
    with pytest.raises(DataError, match="labeled-ratio"):
        labeled_indices(labels, 1.0, 0)


def test_split_labeled_partitions_the_training_images():
    data = load_data("digits", batch_size=16, seed=0)
    labeled, unlabeled = split_labeled(data, 0.1, seed=0, batch_size=16, unlabeled_batch=48)
    assert labeled.num_samples + unlabeled.num_samples == data.train.num_samples
    assert labeled.batch_size == 16 and unlabeled.batch_size == 48
    rows = {tuple(x.flatten().tolist()) for x in labeled.images}
    assert not any(tuple(x.flatten().tolist()) in rows for x in unlabeled.images[:200])
    assert labeled.augment is data.train.augment  # the weak view is the labeled training view
    tiny = load_data("digits", batch_size=16, seed=0)
    tiny.train = TensorLoader(tiny.train.images[:3], torch.tensor([0, 1, 2]), 4)
    with pytest.raises(DataError, match="no unlabeled"):
        split_labeled(tiny, 0.1, 0, 4, 4)


def test_semi_loader_cycles_the_labeled_images_over_one_unlabeled_pass():
    labeled = TensorLoader(torch.arange(6.0).view(6, 1, 1, 1), torch.arange(6), 4, shuffle=True, seed=0)
    unlabeled = TensorLoader(torch.arange(20.0).view(20, 1, 1, 1), torch.full((20,), -1), 3, shuffle=True, seed=1)
    loader = SemiLoader(labeled, unlabeled)
    loader.set_epoch(2)
    steps = list(loader)
    assert len(steps) == len(loader) == 7
    assert sorted(torch.cat([s[2] for s in steps]).flatten().tolist()) == list(range(20))
    loader.set_epoch(2)
    again = list(loader)
    assert all(torch.equal(a, b) for s, t in zip(steps, again) for a, b in zip(s, t))
    only = SemiLoader(labeled, unlabeled, unlabeled_images=False)
    assert [len(s) for s in only] == [2] * 7


# -- pseudo-labels -----------------------------------------------------------------------------
class FixedMC(torch.nn.Module):
    """A model whose MC passes and deterministic pass are given."""

    def __init__(self, mc_probs, single_probs):
        super().__init__()
        self.mc, self.single = mc_probs.log(), single_probs.log()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return self.single

    def mc_logits(self, images, samples=None, generator=None):
        return self.mc


def test_confidence_filter_keeps_the_confident_deterministic_predictions():
    single = torch.tensor([[0.97, 0.03], [0.6, 0.4], [0.02, 0.98]])
    model = FixedMC(single[None].expand(4, -1, -1), single)
    labels, keep, conf = pseudo_labels(model, torch.zeros(3), SemiConfig(filter="confidence", tau=0.95), None)
    assert labels.tolist() == [0, 0, 1] and keep.tolist() == [True, False, True]


def test_uncertainty_filter_also_drops_confident_but_uncertain_predictions():
    # image 0: every pass agrees (certain); image 1: passes disagree, the mean is still confident;
    # image 2: unconfident
    passes = torch.tensor([[[0.99, 0.01], [0.999, 0.001], [0.5, 0.5]],
                           [[0.99, 0.01], [0.90, 0.10], [0.5, 0.5]]])
    model = FixedMC(passes, passes.mean(0))
    cfg = SemiConfig(filter="uncertainty", tau=0.9, uncertainty_max=0.01, uncertainty_quantile=None)
    labels, keep, conf = pseudo_labels(model, torch.zeros(3), cfg, None)
    assert keep.tolist() == [True, False, False]
    assert conf[1] >= 0.9  # confidence alone would have kept image 1
    quantile = SemiConfig(filter="uncertainty", tau=0.0, uncertainty_quantile=0.34)
    _, keep_q, _ = pseudo_labels(model, torch.zeros(3), quantile, None)
    # image 2's passes agree (each is 50/50): its mutual information is 0, so only tau drops it
    assert keep_q.tolist() == [True, False, True]


@pytest.mark.parametrize("values, fragment", [
    (dict(filter="nope"), "--filter"), (dict(tau=1.5), "--tau"), (dict(mc_samples=0), "--mc-samples"),
    (dict(uncertainty_max=0.1), "exactly one"), (dict(uncertainty_quantile=0.0), "--uncertainty-quantile"),
    (dict(unlabeled_ratio=0), "--unlabeled-ratio"), (dict(occlusion=1.0), "--occlusion")])
def test_bad_semi_settings_are_refused(values, fragment):
    with pytest.raises(TrainError, match=fragment):
        SemiConfig(**values).validate()


def test_strong_view_is_reproducible_and_changes_the_image():
    images = torch.randn(6, 3, 16, 16)
    a = strong_view(images, torch.Generator().manual_seed(0))
    b = strong_view(images, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b)
    assert (a - images).abs().mean() > 0.1
    # a cut-out region of every image is constant (the occluder)
    assert all((img == 0).all(0).sum() >= 0.04 * 256 for img in a)


def test_precision_counts_only_kept_pseudo_labels_with_known_truth():
    semi = SemiSupervised(SemiConfig(filter="confidence"))
    semi._count(torch.tensor([0, 1, 2, 3]), torch.tensor([True, True, False, True]), torch.tensor([0, 2, 2, -1]))
    record = {}
    semi.seen and semi.on_epoch_end(None, record)
    assert record["unlabeled_kept"] == 0.75
    assert record["pseudo_precision"] == 0.5  # image 3's truth is unknown, image 2 was not kept
    assert record["pseudo_accuracy_all"] == pytest.approx(2 / 3)


def test_uncertainty_filter_needs_an_mc_head():
    from scansearch import build_model

    semi = SemiSupervised(SemiConfig(filter="uncertainty"))
    with pytest.raises(TrainError, match="raum"):
        semi.check_model(build_model("vmamba_micro", num_classes=3))


@pytest.mark.slow
def test_semi_supervised_fit_learns_and_logs_pseudo_labels(one_torch_thread):
    import dataclasses

    from scansearch import build_model
    from scansearch.train import TrainConfig, fit

    data = load_data("digits", batch_size=16, seed=0)
    labeled, unlabeled = split_labeled(data, 0.1, 0, 16, 48)
    torch.manual_seed(0)
    model = build_model("raum_micro", num_classes=10, img_size=8, in_chans=1, patch_size=1, dims=(16, 32, 48),
                        depths=(1, 1, 1))
    semi = SemiSupervised(SemiConfig(filter="uncertainty", tau=0.5, uncertainty_quantile=0.8, mc_samples=4))
    result = fit(model, dataclasses.replace(data, train=SemiLoader(labeled, unlabeled)),
                 TrainConfig(epochs=3, lr=1e-2, label_smoothing=0.0, warmup_epochs=0.5), step_fn=semi.step,
                 hooks=[semi], progress=False)
    last = result.history[-1]
    assert 0 < last["unlabeled_kept"] <= 0.8 and last["pseudo_precision"] > 0.5
    assert result.val["top1"] > 0.3


# -- command line ------------------------------------------------------------------------------
TINY = ["--set", "patch_size=1", "--set", "dims=[8,16,16]", "--set", "depths=[1,1,1]", "--set", "d_state=4"]


@pytest.mark.parametrize("args, fragment", [
    (["--labeled-ratio", "0.1"], "--semi-supervised"),
    (["--semi-supervised"], "--labeled-ratio"),
    (["--semi-supervised", "--labeled-ratio", "1.5"], "--labeled-ratio"),
    (["--semi-supervised", "--labeled-ratio", "0.1", "--unlabeled", "x"], "--labeled-ratio"),
    (["--semi-supervised", "--labeled-ratio", "0.1", "--tau", "2"], "--tau"),
    (["--semi-supervised", "--labeled-ratio", "0.1", "--filter", "confidence", "--uncertainty-max", "0.1"],
     "reads no uncertainty"),
    (["--semi-supervised", "--labeled-ratio", "0.1", "--filter", "none", "--mc-samples", "4"], "--mc-samples"),
    (["--semi-supervised", "--unlabeled", "/nonexistent"], "--unlabeled"),
    (["--occlusion", "1.2"], "--occlusion"),
])
def test_train_refuses_bad_semi_options(cli, tmp_path, args, fragment):
    out = tmp_path / "run"
    result = cli("train", "raum_micro", "--out", out, "--epochs", "1", *TINY, *args)
    assert_one_line_error(result, fragment)
    assert not (out / "checkpoint.pt").exists()


def test_uncertainty_filter_on_a_model_without_mc_head_is_refused(cli, tmp_path):
    result = cli("train", "vmamba_micro", "--out", tmp_path / "r", "--epochs", "1", *TINY, "--semi-supervised",
                 "--labeled-ratio", "0.1")
    assert_one_line_error(result, "raum", "--filter confidence")


def test_unlabeled_folder_needs_image_folder_data(cli, tmp_path):
    (tmp_path / "u").mkdir()
    result = cli("train", "raum_micro", "--out", tmp_path / "r", "--epochs", "1", *TINY, "--semi-supervised",
                 "--unlabeled", tmp_path / "u")
    assert_one_line_error(result, "--unlabeled")


@pytest.mark.slow
def test_train_semi_supervised_from_the_cli_then_sweep_occlusion(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "raum_micro", "--out", out, "--epochs", "2", *TINY, "--semi-supervised", "--labeled-ratio",
                 "0.1", "--tau", "0.3", "--mc-samples", "4", "--occlusion", "0.3")
    assert result.returncode == 0, result.stderr
    assert "pseudo-labels (uncertainty): kept" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_labeled"] == 126 and metrics["n_unlabeled"] == 1132
    assert metrics["semi"]["filter"] == "uncertainty" and metrics["semi"]["occlusion"] == 0.3
    history = json.loads((out / "history.json").read_text())
    assert {"unlabeled_kept", "pseudo_precision"} <= set(history[-1])
    sweep = cli("eval", out, "--occlusion-sweep", "--json")
    assert sweep.returncode == 0, sweep.stderr
    levels = json.loads(sweep.stdout)["levels"]
    assert [lv["occlusion"] for lv in levels] == [0.0, 0.2, 0.4]
    assert all({"top1", "mc_top1", "mutual_info"} <= set(lv) for lv in levels)
    plain = json.loads(cli("eval", out, "--json").stdout)
    assert plain["top1"] == pytest.approx(levels[0]["top1"], abs=1e-6)
    one = json.loads(cli("eval", out, "--occlusion", "0.4", "--json").stdout)
    assert one["top1"] == pytest.approx(levels[2]["top1"], abs=1e-6)  # the same occluders
    table = cli("eval", out, "--occlusion-sweep")
    assert "top-1, MC mean" in table.stdout and "40%" in table.stdout
    # a resumed run must keep the semi-supervised settings, the split and the occlusion
    same = ["--semi-supervised", "--labeled-ratio", "0.1", "--tau", "0.3", "--mc-samples", "4", "--occlusion", "0.3"]
    for changed, named in [(["--tau", "0.5"], "tau"), (["--labeled-ratio", "0.5"], "labeled_ratio"),
                           (["--occlusion", "0.1"], "occlusion")]:
        args = list(same)
        args[args.index(changed[0]) + 1] = changed[1]
        again = cli("train", "raum_micro", "--out", out, "--epochs", "2", *TINY, *args, "--resume")
        assert_one_line_error(again, named)
    plain = cli("train", "raum_micro", "--out", out, "--epochs", "2", *TINY, "--resume")
    assert_one_line_error(plain, "semi_supervised")


def _semi_fit(out, hooks=(), resume=False):
    import dataclasses

    from scansearch import build_model
    from scansearch.train import TrainConfig, fit

    data = load_data("digits", batch_size=16, seed=0)
    labeled, unlabeled = split_labeled(data, 0.1, 0, 16, 48)
    torch.manual_seed(0)
    model = build_model("raum_micro", num_classes=10, img_size=8, in_chans=1, patch_size=1, dims=(8, 16, 16),
                        depths=(1, 1, 1), d_state=4)
    semi = SemiSupervised(SemiConfig(filter="uncertainty", tau=0.3, mc_samples=3, occlusion=0.3))
    return fit(model, dataclasses.replace(data, train=SemiLoader(labeled, unlabeled)),
               TrainConfig(epochs=2, lr=1e-2, label_smoothing=0.0, warmup_epochs=0.5, max_steps_per_epoch=6),
               out_dir=out, resume=resume, step_fn=semi.step, hooks=[semi, *hooks], progress=False)


def test_semi_supervised_resume_replays_the_uninterrupted_run(tmp_path, one_torch_thread):
    straight = _semi_fit(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _semi_fit(tmp_path / "resumed", hooks=[InterruptAt(1)])
    resumed = _semi_fit(tmp_path / "resumed", resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["unlabeled_kept"] for r in straight.history] == [r["unlabeled_kept"] for r in resumed.history]


@pytest.mark.slow
def test_calibration_and_reliability_diagram(cli, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert cli("train", "raum_micro", "--out", out, "--epochs", "1", *TINY, "--quiet").returncode == 0
    png = tmp_path / "rel.png"
    result = cli("eval", out, "--calibration", "--plot", png, "--json")
    assert result.returncode == 0, result.stderr
    level = json.loads(result.stdout)["levels"][0]
    assert 0 <= level["ece"] <= 1 and 0 <= level["mc_ece"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    plain = tmp_path / "plain"
    assert cli("train", "vmamba_micro", "--out", plain, "--epochs", "1", *TINY, "--quiet").returncode == 0
    assert_one_line_error(cli("eval", plain, "--calibration"), "MC-dropout")
    assert_one_line_error(cli("eval", out, "--plot", png), "--calibration")
    assert_one_line_error(cli("eval", out, "--calibration", "--plot", tmp_path / "r.txt"), "cannot write .txt")
    assert_one_line_error(cli("eval", out, "--calibration", "--plot", tmp_path), "is a folder")
    assert_one_line_error(cli("eval", out, "--occlusion", "0.2", "--occlusion-sweep"), "--occlusion")


class FakeContext:
    """What ``SemiSupervised.step`` reads of the training loop's context; records the loss."""

    def __init__(self, model):
        import contextlib

        self.model, self.step = model, 0
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.autocast = contextlib.nullcontext
        self.losses = []

    def backward_step(self, loss):
        self.losses.append(loss.detach())


@pytest.mark.parametrize("tau, unlabeled_counts", [(1.0, False), (0.0, True)])
def test_the_unlabeled_loss_counts_only_kept_pseudo_labels(tau, unlabeled_counts):
    from scansearch import build_model

    torch.manual_seed(0)
    model = build_model("raum_micro", num_classes=4, img_size=8, in_chans=1, patch_size=1, dims=(8, 8, 8),
                        depths=(1, 1, 1), d_state=4, mc_dropout=0.0).eval()
    x_l, y_l = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    x_u, y_u = torch.randn(5, 1, 8, 8), torch.full((5,), -1)
    ctx = FakeContext(model)
    semi = SemiSupervised(SemiConfig(filter="confidence", tau=tau))
    semi.step(ctx, (x_l, y_l, x_u, y_u))
    supervised = torch.nn.functional.cross_entropy(model(x_l), y_l)
    if unlabeled_counts:  # every pseudo-label kept: the strong views' loss is added
        assert ctx.losses[0] > supervised + 1e-4
        assert semi.kept == 5
    else:  # none kept: the loss is the labeled one alone
        torch.testing.assert_close(ctx.losses[0], supervised.detach())
        assert semi.kept == 0


def make_cub_folder(root, classes=3, per_class=10, size=40):
    """A CUB-200-2011-layout folder of generated images: a coloured disc per class on noise."""
    Image = pytest.importorskip("PIL.Image")
    gen = torch.Generator().manual_seed(0)
    (root / "images").mkdir(parents=True)
    rows = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [], "classes.txt": []}
    image_id = 0
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for c in range(1, classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        rows["classes.txt"].append(f"{c} {folder}")
        (root / "images" / folder).mkdir()
        for i in range(per_class):
            image_id += 1
            pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
            cy, cx = torch.randint(10, size - 10, (2,), generator=gen).tolist()
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 64
            pixels[disc] = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]][c - 1], dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "images" / folder / f"bird_{i}.jpg", quality=90)
            rows["images.txt"].append(f"{image_id} {folder}/bird_{i}.jpg")
            rows["image_class_labels.txt"].append(f"{image_id} {c}")
            rows["train_test_split.txt"].append(f"{image_id} {int(i < per_class - 2)}")
    for name, lines in rows.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_semi_supervised_training_on_a_cub_layout_folder_end_to_end(cli, tmp_path):
    cub = make_cub_folder(tmp_path / "CUB_200_2011")
    out = tmp_path / "run"
    result = cli("train", "raum_micro", "--data", cub, "--img-size", "32", "--out", out, "--epochs", "1",
                 "--batch-size", "4", "--semi-supervised", "--labeled-ratio", "0.3", "--tau", "0.0",
                 "--mc-samples", "2", "--unlabeled-ratio", "2")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # 8 official training images a class, 10% of them carved out for validation: 7 or 8 left
    assert metrics["n_labeled"] + metrics["n_unlabeled"] == 21 and metrics["n_labeled"] == 6
    history = json.loads((out / "history.json").read_text())
    assert history[0]["unlabeled_kept"] > 0 and history[0]["pseudo_precision"] is not None
    assert json.loads((out / "data.json").read_text())["layout"] == "cub-200-2011"
    sweep = cli("eval", out, "--data", cub, "--occlusion-sweep", "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert [lv["count"] for lv in json.loads(sweep.stdout)["levels"]] == [6, 6, 6]
    # a folder of unlabeled images instead of a labeled share; their classes are unknown
    extra = tmp_path / "unlabeled"
    extra.mkdir()
    training = [p for p in sorted((cub / "images").rglob("*.jpg")) if int(p.stem.split("_")[1]) < 8]
    for i, path in enumerate(training[:5]):
        (extra / f"u{i}.jpg").write_bytes(path.read_bytes())
    out2 = tmp_path / "run2"
    result = cli("train", "raum_micro", "--data", cub, "--img-size", "32", "--out", out2, "--epochs", "1",
                 "--batch-size", "4", "--semi-supervised", "--unlabeled", extra, "--tau", "0.0", "--mc-samples", "2")
    assert result.returncode == 0, result.stderr
    assert "precision unknown labels" in result.stdout
    metrics = json.loads((out2 / "metrics.json").read_text())
    assert metrics["n_unlabeled"] == 5 and metrics["n_labeled"] == 21
    # the folder of all images holds the validation and test images: refused
    refused = cli("train", "raum_micro", "--data", cub, "--img-size", "32", "--out", tmp_path / "run3", "--epochs",
                  "1", "--semi-supervised", "--unlabeled", cub / "images")
    assert_one_line_error(refused, "validation or test split")
    assert not (tmp_path / "run3" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_train_puts_a_searched_genotype_into_the_raum_head(cli, tmp_path):
    from scansearch.genotype import Genotype

    layers = (("h", "h_flip", "w2", "w2_flip"), ("v", "v_flip", "w7", "w7_flip"), ("h", "v", "w2", "w7"))
    path = Genotype(layers=layers, model="local_vmamba_micro", space="local8",
                    provenance={"model_overrides": {"depths": [1, 1, 1]}}).save(tmp_path / "g.yaml")
    out = tmp_path / "r"
    result = cli("train", path, "--model", "raum_micro", "--out", out, "--epochs", "1", "--set", "patch_size=1",
                 "--quiet")
    assert result.returncode == 0, result.stderr
    saved = Genotype.load(out / "genotype.yaml")
    assert saved.model == "raum_micro" and saved.layers == layers
    assert_one_line_error(cli("train", "raum_micro", "--model", "vmamba_micro", "--out", tmp_path / "x"), "a preset")
    assert_one_line_error(cli("train", path, "--model", "nope", "--out", tmp_path / "y"), "nope")


@pytest.mark.slow
def test_search_searches_the_raum_backbone(cli, tmp_path):
    out = tmp_path / "s"
    result = cli("search", "--model", "raum_micro", "--space", "local8", "--epochs", "1", *TINY, "--out", out,
                 "--quiet")
    assert result.returncode == 0, result.stderr
    from scansearch.genotype import Genotype

    found = Genotype.load(out / "genotype.yaml")
    assert found.model == "raum_micro" and len(found.layers) == 3
    assert all(len(layer) == 4 for layer in found.layers)
    trained = cli("train", out, "--out", tmp_path / "m", "--epochs", "1", "--quiet")
    assert trained.returncode == 0, trained.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--occlusion-sweep", "--levels", "a,b"], "--levels"),
    (["--occlusion-sweep", "--levels", "0,1.5"], "--levels"),
    (["--occlusion", "-0.1"], "--occlusion"),
    (["--mc-samples", "0"], "--mc-samples"),
    (["--calibration", "--plot", "/nonexistent/dir/r.png"], "--plot"),
    (["--levels", "0,0.1"], "--occlusion-sweep"),
])
def test_eval_refuses_bad_options_before_loading_anything(cli, tmp_path, args, fragment):
    assert_one_line_error(cli("eval", tmp_path / "no-model-here", *args), fragment)
