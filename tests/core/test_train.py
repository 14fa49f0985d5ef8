"""Training loop: learning, schedule, EMA, clipping, hooks, checkpoints and exact resume."""
import json
import math

import pytest
import torch
from torch import nn

from helpers import InterruptAt

import scansearch.train as train_module
from scansearch.data import load_data
from scansearch.train import (ModelEMA, TrainConfig, TrainError, WarmupCosine, evaluate, fit, load_checkpoint,
                              save_checkpoint)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyMLP(nn.Module):
    """64 -> 64 -> 10 with dropout, so that resuming must restore the RNG too."""

    def __init__(self, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyMLP()


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", batch_size=128)


def quiet_fit(model, data, **kwargs):
    config = kwargs.pop("config", TrainConfig(epochs=1, lr=3e-3))
    return fit(model, data, config, progress=False, **kwargs)


def test_mlp_learns_digits():
    data = load_data("digits", batch_size=64, augment=False)
    model = tiny_model()
    result = quiet_fit(model, data, config=TrainConfig(epochs=10, lr=3e-3))
    test = evaluate(model, data.test, data.num_classes)
    assert test["top1"] > 0.9 and result.val["top1"] > 0.9
    assert len(result.history) == 10 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 1 <= result.best_epoch <= 10 and result.ema_model is None


def test_warmup_cosine_shape():
    schedule = WarmupCosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    factors = [schedule(s) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10]))          # warm-up rises
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))          # cosine falls
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 89)))


class LrRecorder:
    def __init__(self):
        self.lrs = []

    def on_step_end(self, ctx, out):
        self.lrs.append(ctx.optimizer.param_groups[0]["lr"])


def test_fit_steps_the_schedule_per_step(digits):
    recorder = LrRecorder()
    config = TrainConfig(epochs=3, lr=1e-2, min_lr=1e-4, warmup_epochs=1)
    quiet_fit(tiny_model(), digits, config=config, hooks=[recorder])
    steps = len(digits.train)  # 10 batches of 128
    assert len(recorder.lrs) == 3 * steps
    # the lr after step s is the one step s+1 uses
    assert recorder.lrs[steps - 2] == pytest.approx(1e-2) and max(recorder.lrs) == pytest.approx(1e-2)
    assert recorder.lrs[0] == pytest.approx(2e-2 / steps) and recorder.lrs[-1] == pytest.approx(1e-4)


def test_model_ema_follows_the_formula():
    model = nn.BatchNorm1d(3)
    ema = ModelEMA(model, decay=0.9, warmup=False)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(2.0)
    model.num_batches_tracked += 5
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * start + 0.1 * 2.0)
    assert ema.module.num_batches_tracked.item() == 5 and not ema.module.weight.requires_grad
    warm = ModelEMA(model, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)


def test_fit_with_ema_reports_both(digits):
    result = quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=2, lr=3e-3, ema=0.9))
    assert result.ema_model is not None and "val_ema_top1" in result.history[-1]
    assert not torch.equal(result.ema_model.net[1].weight, result.model.net[1].weight)


@pytest.mark.parametrize("clip", [0.5, None])
def test_gradient_clipping_bounds_the_norm(digits, clip):
    norms = []

    def huge_loss_step(ctx, batch):
        images, labels = batch
        loss = ctx.loss_fn(ctx.model(images), labels) * 1e4
        ctx.backward_step(loss)
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in ctx.model.parameters()]).item())
        return {"loss": loss.detach()}

    quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=1, grad_clip=clip), step_fn=huge_loss_step)
    if clip is None:
        assert max(norms) > 100
    else:
        assert max(norms) <= clip * (1 + 1e-5)


def test_param_filter_leaves_excluded_parameters_alone(digits):
    model = tiny_model()
    head_before = model.net[4].weight.detach().clone()
    body_before = model.net[1].weight.detach().clone()
    quiet_fit(model, digits, param_filter=lambda name, p: not name.startswith("net.4"))
    assert torch.equal(model.net[4].weight, head_before) and not torch.equal(model.net[1].weight, body_before)


class CountingHook:
    def __init__(self, stop_after=None):
        self.calls = {"on_fit_start": 0, "on_epoch_start": 0, "on_step_end": 0, "on_epoch_end": 0}
        self.stop_after = stop_after

    def on_fit_start(self, ctx):
        self.calls["on_fit_start"] += 1

    def on_epoch_start(self, ctx):
        self.calls["on_epoch_start"] += 1

    def on_step_end(self, ctx, out):
        self.calls["on_step_end"] += 1

    def on_epoch_end(self, ctx, record):
        self.calls["on_epoch_end"] += 1
        record["marker"] = ctx.epoch
        ctx.should_stop = ctx.epoch == self.stop_after

    def state_dict(self):
        return {"calls": dict(self.calls)}

    def load_state_dict(self, state):
        self.calls = dict(state["calls"])


def test_hooks_are_called_and_can_stop_training(digits):
    hook = CountingHook(stop_after=2)
    result = quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=5, max_steps_per_epoch=3), hooks=[hook])
    assert hook.calls == {"on_fit_start": 1, "on_epoch_start": 2, "on_step_end": 6, "on_epoch_end": 2}
    assert [r["marker"] for r in result.history] == [1, 2]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    config = TrainConfig(epochs=2, lr=3e-3, ema=0.9)
    data = load_data("digits", batch_size=128)  # augmentation on: replayed per epoch
    straight = quiet_fit(tiny_model(), data, config=config, out_dir=tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):
        quiet_fit(tiny_model(), data, config=config, out_dir=tmp_path / "resumed", hooks=[InterruptAt(1)])
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    hook = CountingHook()
    resumed = quiet_fit(tiny_model(seed=7), load_data("digits", batch_size=128), config=config,
                        out_dir=tmp_path / "resumed", resume=True, hooks=[hook])

    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]
    assert json.loads((tmp_path / "resumed" / "history.json").read_text())[1]["epoch"] == 2
    assert hook.calls["on_epoch_start"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_resume_on_cuda_restores_the_cpu_rng_states(tmp_path):
    config = TrainConfig(epochs=2, lr=3e-3, device="cuda", amp="off")
    data = load_data("digits", batch_size=128)
    straight = quiet_fit(tiny_model(), data, config=config, out_dir=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        quiet_fit(tiny_model(), data, config=config, out_dir=tmp_path / "resumed", hooks=[InterruptAt(1)])
    resumed = quiet_fit(tiny_model(), data, config=config, out_dir=tmp_path / "resumed", resume=True)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]


def test_resume_restores_hook_state(tmp_path, digits):
    config = TrainConfig(epochs=2, max_steps_per_epoch=2)
    quiet_fit(tiny_model(), digits, config=config, out_dir=tmp_path, hooks=[CountingHook(), InterruptAt(5)])
    hook = CountingHook()
    quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=2, max_steps_per_epoch=2), out_dir=tmp_path,
              resume=True, hooks=[hook, InterruptAt(5)])
    assert hook.calls["on_step_end"] == 4  # restored from the checkpoint; nothing left to train


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path, digits):
    quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=1, ema=0.99), out_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "epoch", "step", "rng", "config", "history"} <= set(state)
    assert state["config"]["ema"] == 0.99 and state["epoch"] == 1 and state["step"] == len(digits.train)


def test_resume_refuses_other_settings_or_a_missing_checkpoint(tmp_path, digits):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        quiet_fit(tiny_model(), digits, out_dir=tmp_path, resume=True)
    quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=1, lr=1e-3), out_dir=tmp_path)
    with pytest.raises(TrainError, match=r"written with lr=0.001, but the config says lr=0.002"):
        quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=1, lr=2e-3), out_dir=tmp_path, resume=True)


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint(target, {"epoch": 1, "weights": torch.ones(3)})
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(train_module.torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, {"epoch": 2, "weights": torch.zeros(3)})
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "fresh.pt", {"epoch": 2})
    monkeypatch.setattr(train_module.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(target)["epoch"] == 1


def test_truncated_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(TrainError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_evaluate_gives_exact_numbers_on_known_predictions():
    # the "model" is the identity: the loader yields the logits themselves
    logits = torch.tensor([[5.0, 0, 0, 0, 0, 0],     # label 0: top-1 right
                           [3.0, 2, 0, 0, 0, 0],     # label 1: second, top-5 right
                           [1.0, 1, 0, 1, 1, 1],     # label 2: last, top-5 wrong
                           [0.0, 0, 0, 4, 0, 0]])    # label 0: top-1 wrong, top-5 right (tie at 0, first index)
    labels = torch.tensor([0, 1, 2, 0])
    loader = [(logits[:2], labels[:2]), (logits[2:], labels[2:])]
    result = evaluate(nn.Identity(), loader, num_classes=6)
    expected_loss = sum(math.log(sum(math.exp(v) for v in row)) - row[y]
                        for row, y in zip(logits.tolist(), labels.tolist())) / 4
    assert result["top1"] == 0.25 and result["top5"] == 0.75 and result["count"] == 4
    assert result["per_class"] == [0.5, 0.0, 0.0, None, None, None]
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert "top5" not in evaluate(nn.Identity(), [(logits[:, :5], labels)], num_classes=5)


def test_config_validation_and_round_trip():
    config = TrainConfig(epochs=3, ema=0.99, betas=(0.8, 0.9))
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TrainError, match="lr must be positive"):
        TrainConfig(lr=0).validate()
    for bad in ({"lr": float("inf")}, {"lr": float("nan")}):
        with pytest.raises(TrainError, match="lr must be positive and finite"):
            TrainConfig(**bad).validate()
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(TrainError, match="weight_decay must be zero or more and finite"):
            TrainConfig(weight_decay=bad).validate()
    with pytest.raises(TrainError, match="unknown settings"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(TrainError, match="fp16 needs a CUDA device"):
        train_module.autocast_dtype("fp16", torch.device("cpu"))
    assert train_module.autocast_dtype("auto", torch.device("cpu")) is None


def test_weight_decay_skips_biases_and_flagged_parameters():
    model = TinyMLP()
    model.net[1].weight._no_weight_decay = True
    optimizer = train_module.build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.net[4].weight)}


def test_progress_prints_an_epoch_line_when_not_a_terminal(digits, capsys):
    fit(tiny_model(), digits, TrainConfig(epochs=1, max_steps_per_epoch=2), progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_fp16_path_scales_gradients_and_checkpoints_the_scaler(tmp_path, digits, monkeypatch):
    # CUDA is not needed to exercise the GradScaler path: CPU autocast runs float16 too
    monkeypatch.setattr(train_module, "autocast_dtype", lambda amp, device: torch.float16)
    result = quiet_fit(tiny_model(), digits, config=TrainConfig(epochs=1, lr=3e-3), out_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["scaler"]["scale"] > 0
    assert math.isfinite(result.history[0]["train_loss"]) and result.val["top1"] > 0.3


def _patch_cnn(kernel):
    """Non-overlapping patches of shape ``kernel``, then per-patch features and global pooling."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, kernel, stride=kernel), nn.GELU(), nn.Conv2d(32, 32, 1), nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def test_planted_task_is_learnt_from_2x2_blocks_and_not_from_pixel_pairs():
    data = load_data("planted:n_train=1200,n_val=400,n_test=0", batch_size=50)
    config = TrainConfig(epochs=5, lr=1e-2, warmup_epochs=0.5)
    blocks = quiet_fit(_patch_cnn((2, 2)), data, config=config)
    row_pairs = quiet_fit(_patch_cnn((1, 2)), data, config=config)
    column_pairs = quiet_fit(_patch_cnn((2, 1)), data, config=config)
    assert blocks.val["top1"] > 0.9
    assert row_pairs.val["top1"] < 0.33 and column_pairs.val["top1"] < 0.33  # chance is 0.25
