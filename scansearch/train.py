"""One training loop for searches and for ``scansearch train``.

``fit(model, data, config)`` trains with AdamW, a per-step cosine schedule after a
linear warm-up, label smoothing, gradient clipping, an optional EMA of the weights and
mixed precision on a GPU (``amp="auto"``: bf16 where supported, else fp16 with a grad
scaler; full precision on the CPU). It evaluates on ``data.val`` after every epoch and,
given ``out_dir``, writes ``checkpoint.pt`` and ``history.json`` there after every epoch
(atomically); ``resume=True`` continues from the checkpoint and gives the same weights
as a run that was never interrupted (the data loaders are replayed from ``(seed, epoch)``,
the RNG states are restored).

Extending the loop (the DARTS searcher does):

* ``step_fn(ctx, batch) -> dict`` replaces the default weight step. ``ctx`` is the
  ``FitContext`` (model, optimizer, scheduler, epoch, step, ...); ``ctx.backward_step(loss)``
  does zero-grad, backward (scaled under fp16), clipping and the optimizer step. Return
  ``{"loss": tensor, "correct": tensor, "count": int}`` (the last two optional). The loop
  still steps the scheduler and the EMA, logs, evaluates and checkpoints.
* ``hooks``: objects with any of ``on_fit_start(ctx)``, ``on_epoch_start(ctx)``,
  ``on_step_end(ctx, out)``, ``on_epoch_end(ctx, record)`` (``record`` is the epoch's
  history entry, a hook may add keys), ``state_dict()`` / ``load_state_dict(state)`` (kept
  in the checkpoint). Setting ``ctx.should_stop = True`` ends training after the epoch;
  an exception (e.g. a pruned Optuna trial) ends it at once.
* ``param_filter(name, param) -> bool`` limits what the built-in AdamW trains (leave the
  architecture parameters to another optimizer), or pass ``optimizer=`` to bring one.

The building blocks are public for searchers (the settings and what they build live in
:mod:`scansearch.train_config`): ``seed_everything``, ``build_optimizer``, ``build_scheduler``,
``ModelEMA``, ``save_checkpoint``, ``load_checkpoint``, ``evaluate``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from scansearch import distributed
from scansearch.errors import DivergenceError, TrainError
from scansearch.fileio import atomic_write_text
from scansearch.train_config import (TrainConfig, WarmupCosine, autocast_dtype, build_optimizer,  # noqa: F401
                                    build_scheduler, resolve_device, seed_everything)
from scansearch.training_state import ModelEMA, load_checkpoint, rng_state, save_checkpoint, set_rng_state

CHECKPOINT_NAME, HISTORY_NAME = "checkpoint.pt", "history.json"
CHECKPOINT_FORMAT = "scansearch-checkpoint-1"
# Settings that may change between a run and its resumption (the machine may differ).
RESUMABLE_CHANGES = frozenset({"device", "log_every", "amp"})


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device | str | None = None,
             *, amp: str = "auto") -> dict[str, Any]:
    """Top-1 (and top-5 when there are more than 5 classes) accuracy, mean cross-entropy and
    per-class accuracy (None for a class with no samples) of ``model`` on ``loader``."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    was_training = model.training
    model.eval()
    loss_sum, top5 = torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device)
    hits = torch.zeros(num_classes, device=device)
    counts = torch.zeros(num_classes, device=device)
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        hits.index_add_(0, labels, (logits.argmax(1) == labels).float())
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
        if num_classes > 5:
            top5 += (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum()
    model.train(was_training)
    total = counts.sum().item()
    if total == 0:
        raise TrainError("evaluate: the loader yielded no samples")
    result = {"top1": hits.sum().item() / total, "loss": loss_sum.item() / total, "count": int(total),
              "per_class": [h / c if c else None for h, c in zip(hits.tolist(), counts.tolist())]}
    if num_classes > 5:
        result["top5"] = top5.item() / total
    return result


@dataclass
class FitContext:
    """The state of a ``fit`` call, handed to hooks and to ``step_fn``."""

    model: nn.Module
    data: Any
    config: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: ModelEMA | None
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    loss_fn: nn.Module
    steps_per_epoch: int
    epoch: int = 0                       # 0-based index of the running epoch; epochs done in on_epoch_end
    step: int = 0                        # optimizer steps so far
    history: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False
    ddp: nn.Module | None = None         # under torchrun: the model in DistributedDataParallel
    loss_weight: float = 1.0             # this rank's share of the global batch (see distributed.shard)

    @property
    def train_model(self) -> nn.Module:
        """What a weight step runs forward: the DDP wrapper under torchrun (its backward
        averages the gradients across ranks), else ``model``."""
        return self.ddp if self.ddp is not None else self.model

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def backward_step(self, loss: torch.Tensor, parameters: Iterable[torch.Tensor] | None = None,
                      optimizer: torch.optim.Optimizer | None = None,
                      also: Sequence[torch.optim.Optimizer] = ()) -> None:
        """Zero-grad, backward, clip to ``config.grad_clip`` and step (``self.optimizer`` by default).

        ``also``: more optimisers fed by the same backward (a single-level search's alphas).
        They are unscaled and stepped through the fp16 loss scaler too, so an overflowing step
        is skipped for all of them; their gradients are not clipped.
        """
        optimizer = optimizer or self.optimizer
        if self.loss_weight != 1.0:  # a slice of an unevenly shared batch (torchrun)
            loss = loss * self.loss_weight
        for opt in (optimizer, *also):
            opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            for opt in (optimizer, *also):
                self.scaler.unscale_(opt)
        if self.config.grad_clip is not None:
            params = parameters if parameters is not None else [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        if self.scaler is None:
            for opt in (optimizer, *also):
                opt.step()
        else:
            for opt in (optimizer, *also):
                self.scaler.step(opt)
            self.scaler.update()


def default_step(ctx: FitContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Forward, loss, ``backward_step``: the weight update of ordinary training."""
    images, labels = batch
    with ctx.autocast():
        logits = ctx.train_model(images)
        loss = ctx.loss_fn(logits.float(), labels)
    ctx.backward_step(loss)
    return {"loss": loss.detach(), "correct": (logits.argmax(1) == labels).sum(), "count": len(labels)}


@dataclass
class TrainResult:
    """What ``fit`` returns: the trained model (and its EMA), the per-epoch history, the last
    validation metrics, the best epoch by validation top-1 and where the checkpoint is."""

    model: nn.Module
    ema_model: nn.Module | None
    history: list[dict[str, Any]]
    val: dict[str, Any]
    best_epoch: int
    best_val_top1: float
    seconds: float
    checkpoint: Path | None


def _call_hooks(hooks: Iterable[Any], name: str, *args: Any) -> None:
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)


def _checkpoint_state(ctx: FitContext, hooks: list[Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT, "epoch": ctx.epoch, "step": ctx.step, "config": ctx.config.to_dict(),
        "model": ctx.model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(), "ema": ctx.ema.state_dict() if ctx.ema else None,
        "scaler": ctx.scaler.state_dict() if ctx.scaler else None, "rng": rng_state(),
        "history": ctx.history, "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in hooks],
    }


def _restore(ctx: FitContext, path: Path, hooks: list[Any]) -> None:
    """Load ``path`` into the context; the checkpoint must come from the same settings."""
    state = load_checkpoint(path)  # on the CPU: RNG states must stay there; the rest is copied over
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a scansearch training checkpoint")
    saved, current = state["config"], ctx.config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        k = changed[0]
        raise TrainError(f"{path}: written with {k}={saved.get(k)!r}, but the config says {k}={current[k]!r}")
    try:
        ctx.model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise TrainError(f"{path}: does not fit the model ({str(exc).splitlines()[0]})") from None
    ctx.optimizer.load_state_dict(state["optimizer"])
    ctx.scheduler.load_state_dict(state["scheduler"])
    if ctx.ema is not None and state["ema"] is not None:
        ctx.ema.load_state_dict(state["ema"])
    if ctx.scaler is not None and state["scaler"] is not None:
        ctx.scaler.load_state_dict(state["scaler"])
    for hook, hook_state in zip(hooks, state["hooks"]):
        if hook_state is not None and hasattr(hook, "load_state_dict"):
            hook.load_state_dict(hook_state)
    ctx.epoch, ctx.step, ctx.history = state["epoch"], state["step"], list(state["history"])
    set_rng_state(state["rng"])


def _check_finite(ctx: FitContext) -> None:
    """DivergenceError when a weight or buffer (or its EMA) is NaN or infinite after an epoch:
    the last step can break the weights while every loss of the epoch was finite, and such
    weights must reach neither the checkpoint nor the saved model."""
    models = [("", ctx.model)] + ([("EMA ", ctx.ema.module)] if ctx.ema is not None else [])
    for kind, model in models:
        tensors = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        if tensors and not torch.stack([torch.isfinite(v).all() for v in tensors.values()]).all():
            name = next(k for k, v in tensors.items() if not torch.isfinite(v).all())
            raise DivergenceError(f"training diverged: the {kind}weights {name!r} are not finite after epoch "
                                  f"{ctx.epoch + 1}; lower lr or use grad_clip")


def _train_epoch(ctx: FitContext, step_fn: Callable, hooks: list[Any], bar: Progress, task: Any) -> dict[str, float]:
    loader = ctx.data.train
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(ctx.epoch)
    ctx.model.train()
    _call_hooks(hooks, "on_epoch_start", ctx)
    # sums stay on the device: reading them forces a sync, so only every log_every steps
    loss_sum, correct = torch.zeros((), device=ctx.device), torch.zeros((), device=ctx.device)
    count, started = 0, time.perf_counter()
    bar.reset(task, total=ctx.steps_per_epoch, description=f"epoch {ctx.epoch + 1}/{ctx.config.epochs}")
    for index, batch in enumerate(loader):
        if index >= ctx.steps_per_epoch:
            break
        batch, ctx.loss_weight = distributed.shard(batch)  # under torchrun: this rank's slice
        batch = tuple(t.to(ctx.device, non_blocking=True) for t in batch)
        out = step_fn(ctx, batch)
        ctx.scheduler.step()
        ctx.step += 1
        if ctx.ema is not None:
            ctx.ema.update(ctx.model)
        n = int(out.get("count", len(batch[-1])))
        loss_sum += out["loss"].detach().float() * n
        correct += out.get("correct", 0)
        count += n
        _call_hooks(hooks, "on_step_end", ctx, out)
        bar.advance(task)
        if bar.live.is_started and (index + 1) % ctx.config.log_every == 0:
            rate = count / (time.perf_counter() - started)
            info = f"loss {loss_sum.item() / count:.3f}  acc {correct.item() / count:.1%}  {rate:,.0f} img/s"
            bar.update(task, info=info)
    seconds = time.perf_counter() - started
    if distributed.is_distributed():  # the epoch's figures over the global batches, the same on every rank
        sums = distributed.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                                       torch.tensor(float(count), device=ctx.device).double()]))
        loss_sum, correct, count = sums[0], sums[1], int(sums[2].item())
    if count == 0:
        raise TrainError("the training loader yielded no batches")
    train_loss = loss_sum.item() / count
    if not math.isfinite(train_loss):
        raise DivergenceError(f"training diverged: the loss is {train_loss} in epoch {ctx.epoch + 1}; "
                         f"lower lr or use grad_clip")
    _check_finite(ctx)
    return {"train_loss": train_loss, "train_acc": correct.item() / count, "img_per_s": count / seconds,
            "lr": ctx.optimizer.param_groups[0]["lr"], "seconds": seconds}


def fit(model: nn.Module, data: Any, config: TrainConfig | None = None, out_dir: str | os.PathLike | None = None,
        resume: bool = False, hooks: Iterable[Any] = (), progress: bool = True, *,
        step_fn: Callable[[FitContext, Any], dict] | None = None, optimizer: torch.optim.Optimizer | None = None,
        param_filter: Callable[[str, nn.Parameter], bool] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` (a DataBundle) following ``config``; see the module docstring.

    Seeds every RNG from ``config.seed`` first (build the model before, under your own
    seed). Returns the model as trained after the last epoch, not the best epoch's.
    """
    config = config or TrainConfig()
    config.validate()
    if distributed.requested() and not distributed.is_distributed():
        raise TrainError("launched by torchrun, but this command trains in one process; run it without torchrun")
    if distributed.is_distributed():
        distributed.check_shardable(data.train, "training")
    progress = progress and distributed.is_main()  # one progress bar and one log: rank 0's
    hooks = list(hooks)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    steps_per_epoch = min(len(data.train), config.max_steps_per_epoch or len(data.train))
    if steps_per_epoch == 0:
        raise TrainError(f"data {getattr(data, 'name', '')!r}: the training split is empty")
    optimizer = optimizer or build_optimizer(model, config, param_filter)
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    scheduler = build_scheduler(optimizer, total, warmup, config.min_lr / config.lr)
    amp_dtype = autocast_dtype(config.amp, device)
    ctx = FitContext(model=model, data=data, config=config, device=device, optimizer=optimizer, scheduler=scheduler,
                     ema=ModelEMA(model, config.ema) if config.ema else None,
                     scaler=torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None,
                     amp_dtype=amp_dtype, loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
                     steps_per_epoch=steps_per_epoch)
    out = Path(out_dir) if out_dir is not None else None
    checkpoint = out / CHECKPOINT_NAME if out is not None else None
    if resume:
        if checkpoint is None:
            raise TrainError("resume=True needs out_dir, the folder that holds checkpoint.pt")
        distributed.barrier()  # every rank loads the checkpoint rank 0 wrote
        _restore(ctx, checkpoint, hooks)
        if ctx.epoch and hasattr(data.train, "set_epoch"):  # the loader as the last epoch left it, for
            data.train.set_epoch(ctx.epoch - 1)               # whoever reads it after fit (DARTS's fine-tuning)
    if distributed.is_distributed():
        ctx.ddp = distributed.wrap_model(model, device)
    _call_hooks(hooks, "on_fit_start", ctx)
    console = Console(stderr=True, quiet=not progress)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=not (progress and console.is_terminal))
    started = time.perf_counter()
    with bar:
        task = bar.add_task("train", total=steps_per_epoch, info="")
        while ctx.epoch < config.epochs and not ctx.should_stop:
            record = {"epoch": ctx.epoch + 1, **_train_epoch(ctx, step_fn or default_step, hooks, bar, task)}
            record.update({f"val_{k}": v for k, v in evaluate(model, data.val, data.num_classes, device,
                                                                amp=config.amp).items()})
            if ctx.ema is not None:
                ema_val = evaluate(ctx.ema.module, data.val, data.num_classes, device, amp=config.amp)
                record.update({f"val_ema_{k}": v for k, v in ema_val.items() if k != "per_class"})
            ctx.epoch += 1
            _call_hooks(hooks, "on_epoch_end", ctx, record)
            ctx.history.append(record)
            if out is not None and distributed.is_main():
                save_checkpoint(checkpoint, _checkpoint_state(ctx, hooks))
                atomic_write_text(out / HISTORY_NAME, json.dumps(ctx.history, indent=1))
            console.print(f"epoch {record['epoch']}/{config.epochs}  loss {record['train_loss']:.4f}  "
                          f"train {record['train_acc']:.1%}  val {record['val_top1']:.1%}  "
                          f"{record['img_per_s']:,.0f} img/s", highlight=False)
    if ctx.ddp is not None:
        ctx.ddp = None  # its gradient hooks leave the model: what follows runs on each rank alone
        distributed.release()
    if not ctx.history:
        raise TrainError("no epoch was trained")
    best = max(ctx.history, key=lambda r: r["val_top1"])
    last = {k[4:]: v for k, v in ctx.history[-1].items() if k.startswith("val_") and not k.startswith("val_ema_")}
    return TrainResult(model=model, ema_model=ctx.ema.module if ctx.ema else None, history=ctx.history, val=last,
                       best_epoch=best["epoch"], best_val_top1=best["val_top1"],
                       seconds=time.perf_counter() - started, checkpoint=checkpoint)
