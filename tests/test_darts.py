"""The DARTS loop: both modes, both orders, the regulariser, warm-up, history and resume."""
from __future__ import annotations

import json

import pytest
import torch

from scansearch.data import load_data
from scansearch.searchers.darts import DartsConfig, DartsStep, kept_space, search
from scansearch.searchers.run import RunFolder
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space
from scansearch.train import TrainConfig, TrainError

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


@pytest.mark.parametrize("darts", [DartsConfig(), DartsConfig(order=2), DartsConfig(mode="single"),
                                   DartsConfig(gumbel_k=2), DartsConfig(beta_decay=1.0)],
                         ids=["bilevel-1st", "bilevel-2nd", "single", "gumbel", "beta"])
def test_search_moves_alphas_and_writes_a_genotype(data, darts, tmp_path):
    net = make(data, gumbel_k=darts.gumbel_k)
    before = net.alphas.detach().clone()
    run = RunFolder.create(tmp_path / "run")
    result = search(net, data, train_config(), darts, run, progress=False)
    assert not torch.equal(net.alphas.detach(), before)
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


def test_k_override_discretises_to_k_and_drops_the_space(data):
    result = search(make(data), data, train_config(epochs=1), DartsConfig(k=2), progress=False)
    assert all(len(layer) == 2 for layer in result.genotype.layers)
    assert result.genotype.space is None and result.genotype.provenance["k"] == 2
    with pytest.raises(TrainError, match="k must be"):
        kept_space(load_space("local8"), 9)


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
