"""The DARTS loop: both modes, both orders, the regulariser, warm-up, history and resume."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from scansearch.data import DataBundle, TensorLoader, load_data
from scansearch.models import DirectionSubset
from scansearch.searchers.darts import DartsConfig, DartsStep, search
from scansearch.searchers.run import RunFolder
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import SpaceError, load_space
from scansearch.train import TrainConfig, TrainError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest

TINY = dict(dim=8, depth=2, d_state=4, expand=1.0)
DATA = "planted:grid=8,motifs_per_image=2,n_train=96,n_val=48,n_test=48"


@pytest.fixture(scope="module")
def data():
    return load_data(DATA, batch_size=32, seed=0)


def make(data, **kwargs) -> Supernet:
    torch.manual_seed(0)
    return Supernet("local_vim_micro", load_space("local8"), num_classes=data.num_classes, img_size=data.img_size,
                    in_chans=data.in_chans, **{**TINY, **kwargs})


def train_config(epochs=2, **kwargs) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=1e-2, warmup_epochs=0.5, seed=0, device="cpu", **kwargs)


# A supernet whose better candidate is known. Candidate k of every layer stands for a path that
# reads only image row k: logits = sum_layers sum_k w_lk * gain_k * row_k[:classes]. The label is
# written (one-hot) into the row of `h` in the training split and into the row of `w2` in the
# validation split; every other row is zero. So the validation loss falls, strictly, as w2's
# weight grows (its alpha gradient is w(1-w) gain <p - t, onehot(y)> < 0 while p_y stays below the
# smoothed target, as it does with logits of at most 2 gain; every other candidate's is > 0), and
# the training loss falls as h's grows: a bilevel step must raise w2 over the rest, a
# single-level step h. (The unrolled Hessian term is zero here; the exact test below covers it.)
ROW_CARRIER = {"train": "h", "val": "w2"}
ROW_CLASSES = 4


def row_data(n_train=64, n_val=32, batch_size=16) -> DataBundle:
    candidates = load_space("local8").candidates
    generator = torch.Generator().manual_seed(0)

    def split(n, carrier):
        labels = torch.randint(0, ROW_CLASSES, (n,), generator=generator)
        images = torch.zeros(n, 1, 8, 8)
        images[:, 0, candidates.index(carrier), :ROW_CLASSES] = F.one_hot(labels, ROW_CLASSES).float()
        return images, labels

    train, val = split(n_train, ROW_CARRIER["train"]), split(n_val, ROW_CARRIER["val"])
    return DataBundle(name="rows", train=TensorLoader(*train, batch_size, shuffle=True, seed=0),
                      val=TensorLoader(*val, batch_size), test=None, num_classes=ROW_CLASSES,
                      class_names=[str(c) for c in range(ROW_CLASSES)], img_size=8, in_chans=1)


def row_supernet(data) -> Supernet:
    """A real Supernet (alphas, softmax or Gumbel weights, discretisation) whose scan model is
    replaced by the row readers above, with one learned gain per candidate as its weights."""
    net = make(data)
    rows = len(net.candidates)
    net.model.gain = torch.nn.Parameter(torch.ones(rows))  # a weight: the weight steps train it

    def read_rows(images, weights):
        outputs = images[:, 0, :rows, :ROW_CLASSES] * net.model.gain[:, None]  # (batch, candidate, class)
        logits = 0
        for w in weights:  # one entry per layer, as the scan model receives them
            if isinstance(w, DirectionSubset):
                logits = logits + torch.einsum("k,bkc->bc", w.weights, outputs[:, w.indices])
            else:
                logits = logits + torch.einsum("k,bkc->bc", w, outputs)
        return logits

    net.model.forward = read_rows
    return net


@pytest.mark.parametrize("darts, split", [(DartsConfig(select="alpha"), "val"),
                                          (DartsConfig(order=2, select="alpha"), "val"),
                                          (DartsConfig(mode="single", select="alpha"), "train")],
                         ids=["bilevel-1st", "bilevel-2nd", "single"])
def test_architecture_steps_raise_the_known_better_candidate(darts, split, tmp_path):
    """Where one candidate lowers the loss and the others cannot, every architecture step raises
    its alpha over every other: the validation split's carrier in both bilevel orders, the
    training split's in single-level mode. The run writes its history and genotype."""
    data = row_data()
    net = row_supernet(data)
    before = net.alphas.detach().clone()
    run = RunFolder.create(tmp_path / "run")
    result = search(net, data, train_config(), darts, run, progress=False)
    better = net.candidates.index(ROW_CARRIER[split])
    moved = net.alphas.detach() - before
    others = [j for j in range(len(net.candidates)) if j != better]
    assert (moved[:, better] > 0).all(), moved
    assert (moved[:, better, None] > moved[:, others]).all(), moved
    assert (result.weights.argmax(-1) == better).all(), result.weights
    genotype = result.genotype
    assert all(ROW_CARRIER[split] in layer and len(layer) == 4 for layer in genotype.layers)
    assert genotype.space == "local8"
    assert genotype.provenance["searcher"] == "darts" and genotype.provenance["mode"] == darts.mode
    assert genotype.provenance["order"] == darts.order
    assert len(result.history) == 2 and len(result.history[-1]["weights"]) == 2
    history = json.loads(run.file(RunFolder.HISTORY).read_text())
    assert history["candidates"] == list(net.candidates) and len(history["epochs"]) == 2
    assert run.read_genotype() == genotype
    torch.testing.assert_close(torch.tensor(genotype.alphas), torch.softmax(net.alphas.detach(), -1),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("darts", [DartsConfig(), DartsConfig(order=2), DartsConfig(mode="single"),
                                   DartsConfig(gumbel_k=2), DartsConfig(beta_decay=1.0)],
                         ids=["bilevel-1st", "bilevel-2nd", "single", "gumbel", "beta"])
def test_search_on_the_scan_supernet_writes_a_genotype(data, darts, tmp_path):
    """Every mode runs end to end on the real scan supernet. Where the alphas go is tested
    above; here only that they took steps at all, and the run's record."""
    net = make(data, gumbel_k=darts.gumbel_k)
    before = net.alphas.detach().clone()
    run = RunFolder.create(tmp_path / "run")
    result = search(net, data, train_config(), darts, run, progress=False)
    assert not torch.equal(net.alphas.detach(), before)  # the architecture steps ran
    genotype = result.genotype
    assert genotype.space == "local8" and all(len(layer) == 4 for layer in genotype.layers)
    assert genotype.provenance["searcher"] == "darts" and genotype.provenance["mode"] == darts.mode
    assert len(result.history) == 2 and len(result.history[-1]["weights"]) == 2
    history = json.loads(run.file(RunFolder.HISTORY).read_text())
    assert history["candidates"] == list(net.candidates) and len(history["epochs"]) == 2
    assert run.read_genotype() == genotype
    torch.testing.assert_close(torch.tensor(genotype.alphas), torch.softmax(net.alphas.detach(), -1),
                               atol=1e-5, rtol=0)


def test_bilevel_first_order_alpha_step_uses_the_validation_gradient(data):
    """One architecture step equals an Adam step on grad_alpha of the validation loss."""
    net = make(data)
    config = DartsConfig(arch_weight_decay=0.0)
    step = DartsStep(net, config, data, epochs=1, run=None)
    images, labels = next(iter(data.val))
    net.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    (grad,) = torch.autograd.grad(loss, [net.alphas])
    before = net.alphas.detach().clone()

    class Ctx:
        device = torch.device("cpu")
        epoch, step, steps_per_epoch = 0, 0, 1
        loss_fn = torch.nn.CrossEntropyLoss()
        scaler = None

        @staticmethod
        def autocast():
            return torch.autocast("cpu", enabled=False)

    step._arch_step_first_order(Ctx, images, labels)
    mirror = torch.nn.Parameter(before.clone())
    adam = torch.optim.Adam([mirror], lr=config.arch_lr, betas=config.arch_betas, weight_decay=0.0)
    mirror.grad = grad
    adam.step()
    assert not torch.equal(net.alphas.detach(), before)
    torch.testing.assert_close(net.alphas.detach(), mirror.detach(), atol=1e-7, rtol=0)


def test_second_order_alpha_gradient_matches_the_exact_unrolled_gradient(data):
    """The finite-difference Hessian term against autograd through w' = w - xi grad_w L_train
    (float64, reference scan); the weights come back bit for bit."""
    from torch.func import functional_call

    from scansearch.train import FitContext, build_optimizer

    torch.manual_seed(0)
    net = make(data, backend="reference").double()
    net.alphas.data.normal_(0, 0.5)
    config = TrainConfig(epochs=1, lr=0.05, device="cpu")
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    ctx = FitContext(model=net, data=data, config=config, device=torch.device("cpu"),
                     optimizer=build_optimizer(net, config, Supernet.is_weight), scheduler=None, ema=None,
                     scaler=None, amp_dtype=None, loss_fn=loss_fn, steps_per_epoch=1)
    step = DartsStep(net, DartsConfig(order=2), data, epochs=1, run=None)
    (x, y), (xv, yv) = next(iter(data.train)), next(iter(data.val))
    x, xv = x.double(), xv.double()
    captured = []
    step._apply_arch_grad = captured.append
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step._arch_step_second_order(ctx, x, y, xv, yv)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())

    weights = {n: p for n, p in net.named_parameters() if n != "alphas"}

    def loss(params, images, labels):
        return loss_fn(functional_call(net, {**params, "alphas": net.alphas}, (images,)).float(), labels)

    grads = torch.autograd.grad(loss(weights, x, y), list(weights.values()), create_graph=True, allow_unused=True)
    unrolled = {n: w if g is None else w - 0.05 * g for (n, w), g in zip(weights.items(), grads)}
    exact = torch.autograd.grad(loss(unrolled, xv, yv), net.alphas)[0]
    first = torch.autograd.grad(loss({n: w.detach() for n, w in unrolled.items()}, xv, yv), net.alphas)[0]
    assert (first - exact).norm() > 1e-2 * exact.norm()  # the Hessian term matters here
    assert (captured[0] - exact).norm() < 1e-4 * exact.norm()


def test_regulariser_is_scaled_logsumexp(data):
    net = make(data)
    step = DartsStep(net, DartsConfig(beta_decay=2.0), data, epochs=1, run=None)

    class Ctx:
        step, steps_per_epoch = 9, 10  # the last step: the full weight

    value = step.regulariser(Ctx)
    torch.testing.assert_close(value, 2.0 * torch.logsumexp(net.alphas, -1).mean())
    (grad,) = torch.autograd.grad(value, [net.alphas])
    torch.testing.assert_close(grad, 2.0 * torch.softmax(net.alphas, -1) / net.alphas.shape[0])


def test_warmup_keeps_alphas_still(data):
    net = make(data)
    before = net.alphas.detach().clone()

    class StopAfterFirst:
        def on_epoch_end(self, ctx, record):
            ctx.should_stop = True

    search(net, data, train_config(epochs=2), DartsConfig(warmup_epochs=1), progress=False, hooks=[StopAfterFirst()])
    assert torch.equal(net.alphas.detach(), before)


def test_resume_gives_the_uninterrupted_result(data, tmp_path):
    darts = DartsConfig()
    full = search(make(data), data, train_config(), darts, RunFolder.create(tmp_path / "full"), progress=False)

    class StopAfterFirst:
        def on_epoch_end(self, ctx, record):
            ctx.should_stop = True

    run = RunFolder.create(tmp_path / "split")
    search(make(data), data, train_config(), darts, run, progress=False, hooks=[StopAfterFirst()])
    assert len(run.read_history()) == 1
    resumed = search(make(data), data, train_config(), darts, run, resume=True, progress=False)
    assert len(resumed.history) == 2
    torch.testing.assert_close(resumed.weights, full.weights, atol=1e-6, rtol=0)
    assert resumed.genotype.layers == full.genotype.layers


def test_k_override_discretises_to_k_and_carries_the_changed_space(data):
    """Another k is no longer the shipped space: the genotype carries local8 with k=2 inline."""
    result = search(make(data), data, train_config(epochs=1), DartsConfig(k=2), progress=False)
    assert all(len(layer) == 2 for layer in result.genotype.layers)
    space = result.genotype.space
    assert not isinstance(space, str) and space.k == 2 and space.candidates == load_space("local8").candidates
    assert result.genotype.provenance["k"] == 2
    with pytest.raises(SpaceError, match="k must be"):
        load_space("local8").keep(9)


def _alpha_grads_at_arch_steps(monkeypatch, data, darts, *, fp16: bool, init_scale: float = 2.0**16):
    """Run one short search and return (alphas before, after, |alpha.grad| at each arch step)."""
    import scansearch.train as train_module

    if fp16:  # CPU autocast runs float16 too: the GradScaler path needs no GPU
        monkeypatch.setattr(train_module, "autocast_dtype", lambda amp, device: torch.float16)
        scaler = torch.amp.GradScaler
        monkeypatch.setattr(train_module.torch.amp, "GradScaler",
                            lambda device: scaler(device, init_scale=init_scale))
    seen = []
    adam_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        if any(p is net.alphas for g in self.param_groups for p in g["params"]) and net.alphas.grad is not None:
            seen.append(net.alphas.grad.norm().item())
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    net = make(data)
    before = net.alphas.detach().clone()
    search(net, data, train_config(epochs=1, max_steps_per_epoch=2), darts, progress=False)
    monkeypatch.undo()
    return before, net.alphas.detach(), seen


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # skipped steps
@pytest.mark.parametrize("darts", [DartsConfig(mode="single"), DartsConfig()], ids=["single", "bilevel"])
def test_fp16_alpha_gradients_are_unscaled_and_overflow_skips_the_step(monkeypatch, data, darts):
    _, _, full = _alpha_grads_at_arch_steps(monkeypatch, data, darts, fp16=False)
    _, after, half = _alpha_grads_at_arch_steps(monkeypatch, data, darts, fp16=True)
    assert len(half) == len(full) == 2 and torch.isfinite(after).all()
    for a, b in zip(full, half):  # the same gradient up to half-precision noise, not 2**16 times it
        assert 0.5 < b / a < 2.0, (full, half)
    before, after, seen = _alpha_grads_at_arch_steps(monkeypatch, data, darts, fp16=True, init_scale=1e38)
    assert torch.equal(before, after)  # every scaled backward overflowed: no step, no NaN


def test_order_2_refuses_a_supernet_built_for_gumbel_sampling(data):
    with pytest.raises(TrainError, match="Gumbel"):
        search(make(data, gumbel_k=2), data, train_config(epochs=1), DartsConfig(order=2), progress=False)


@pytest.mark.parametrize("bad, message", [
    (dict(mode="joint"), "mode"), (dict(order=3), "order"), (dict(order=2, mode="single"), "bilevel"),
    (dict(arch_lr=0.0), "arch_lr"), (dict(warmup_epochs=2), "warmup_epochs"), (dict(beta_decay=-1.0), "beta"),
    (dict(order=2, gumbel_k=2), "Gumbel"),
])
def test_bad_darts_settings_are_refused(bad, message):
    with pytest.raises(TrainError, match=message):
        DartsConfig(**bad).validate(epochs=2)
