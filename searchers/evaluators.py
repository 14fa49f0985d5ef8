"""Evaluators: what a discrete searcher's trial is worth.

An evaluator takes a genotype's layers (and the Optuna trial, for pruning) and returns
its metrics, a dict of plain floats. Every evaluator reports ``loss`` (held-out
cross-entropy, lower is better) and ``top1`` where it trains or runs a network; the cost
metrics (``flops``, ``params``, ``latency_ms``, ``ssm_layers``) come from :class:`Costs`
for any evaluator.

* :class:`OneShot`: the genotype's directions alone in a trained supernet (its mask), no
  training: seconds a trial. Scores every genotype with the same shared weights, so it
  ranks them as well as those weights allow; it reads the held-out batches it is given.
* :class:`Trained`: the genotype's stand-alone model trained from scratch for a few epochs;
  each epoch's validation loss is reported to the trial, so Optuna's pruners stop bad
  trials early.
* :class:`ZeroCost` (in :mod:`.zero_cost`): no training at all.

Under ``torchrun`` the ``Trained`` evaluator trains each trial's model on every process with
DistributedDataParallel (each rank its slice of the global batch): rank 0 runs the study
inside :func:`lead_trials` and, for each trial, broadcasts the genotype's layers; the other
ranks wait in :func:`follow_trials`, train what they receive and go back to waiting, until
rank 0 broadcasts a stop (or its error, which they raise too). A pruning decision is rank
0's, broadcast, so that every rank stops the trial at the same epoch.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Sequence

import optuna
import torch

from scansearch import distributed
from scansearch.errors import DivergenceError, ScanSearchError
from scansearch.flops import count_flops, count_params
from scansearch.genotype import Genotype
from scansearch.models import build_model
from scansearch.searchers.selection import mask_for, per_batch, summary
from scansearch.searchers.supernet import Supernet
from scansearch.searchers.verify import as_genotype
from scansearch.spaces import NONE
from scansearch.train import TrainConfig, fit


class OneShot:
    """Held-out loss and top-1 of ``supernet`` with only the genotype's directions unmasked."""

    name = "oneshot"

    def __init__(self, supernet: Supernet, batches):
        self.supernet, self.batches = supernet, list(batches)
        supernet.eval()

    def __call__(self, layers: Sequence, trial=None) -> dict[str, float]:
        saved = self.supernet.mask.clone()
        try:
            self.supernet.mask.copy_(mask_for(self.supernet, layers))
            result = summary(*per_batch(self.supernet, self.batches))
        finally:
            self.supernet.mask.copy_(saved)
        return {"loss": result["loss"], "top1": result["top1"]}


class PrunedByOptuna(ScanSearchError):
    """Raised inside training when the trial's pruner says stop (re-raised as TrialPruned)."""


class _ReportEachEpoch:
    """A ``fit`` hook: report the epoch's validation loss to the trial; stop when pruned."""

    def __init__(self, trial):
        self.trial = trial

    def on_epoch_end(self, ctx, record: dict[str, Any]) -> None:
        prune = False
        if self.trial is not None and len(self.trial.study.directions) == 1:  # Optuna prunes single objectives only
            self.trial.report(record["val_loss"], record["epoch"])
            prune = self.trial.should_prune()
        if distributed.is_distributed():  # rank 0 holds the trial; every rank stops with it
            prune = distributed.broadcast_object(prune)
        if prune:
            raise PrunedByOptuna(record["epoch"])


class Trained:
    """Train the genotype's stand-alone model from scratch for ``epochs`` epochs (the same
    seed and settings for every trial) and score it on ``data.val``."""

    name = "train"

    def __init__(self, template: Genotype, data, config: TrainConfig, epochs: int):
        if epochs < 1:
            raise ValueError(f"the train evaluator needs at least one epoch, got {epochs}")
        self.template, self.data = template, data
        self.config = dataclasses.replace(config, epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs / 2))

    def __call__(self, layers: Sequence, trial=None) -> dict[str, float]:
        if not (distributed.is_distributed() and distributed.is_main()):
            return self.train(layers, trial)
        _TRIALS.in_trial = True  # the other ranks train this trial with rank 0 from here on
        distributed.broadcast_object(("trial", tuple(layers)))
        try:
            result = self.train(layers, trial)
        except _every_rank_errors():  # raised on every rank alike: all are back to the study
            _TRIALS.in_trial = False
            raise
        _TRIALS.in_trial = False
        return result

    def train(self, layers: Sequence, trial=None) -> dict[str, float]:
        """Train and score ``layers`` (under torchrun: together with the other ranks)."""

        torch.manual_seed(self.config.seed)
        model = build_model(as_genotype(self.template, layers, "trial"), num_classes=self.data.num_classes,
                            img_size=self.data.img_size, in_chans=self.data.in_chans)
        try:
            result = fit(model, self.data, self.config, hooks=[_ReportEachEpoch(trial)], progress=False)
        except PrunedByOptuna as stop:
            raise optuna.TrialPruned(f"pruned after epoch {stop.args[0]}") from None
        return {"loss": result.val["loss"], "top1": result.val["top1"]}


class _TrialState:
    in_trial = False  # rank 0 is training a trial together with the other ranks


_TRIALS = _TrialState()
_STOP = ("stop",)


def _every_rank_errors() -> tuple[type[BaseException], ...]:
    """What ends a trial on every rank at the same point: a pruned trial (the decision is
    broadcast) and divergence (found on the loss averaged over the ranks)."""

    return (optuna.TrialPruned, PrunedByOptuna, DivergenceError)


def lead_trials(run_study):
    """Rank 0's side of a study whose trials every rank trains: call ``run_study()`` (the
    whole search, which calls the ``Trained`` evaluator), then tell the other ranks to stop.
    An error raised outside a trial (a setting refused, a full study) is broadcast to them
    and they raise it too, so every rank ends the same way; one raised inside a trial on
    rank 0 alone is not (the others are inside a collective of that trial's training): the
    process exits and torchrun stops the rest. Without torchrun: ``run_study()``."""
    if not distributed.is_distributed():
        return run_study()
    if not distributed.is_main():
        raise RuntimeError("lead_trials runs on rank 0; the other ranks call follow_trials")
    try:
        result = run_study()
    except BaseException as err:
        if not _TRIALS.in_trial:
            distributed.broadcast_object(("error", distributed.portable(err)))
        raise
    distributed.broadcast_object(_STOP)
    return result


def follow_trials(evaluator: "Trained") -> int:
    """The other ranks' side: receive a trial's layers from rank 0, train them with it,
    again, until rank 0 says stop (returns the number of trials trained) or sends its error
    (raised here). A trial pruned or diverged ends on every rank alike and is not an error."""
    if not distributed.is_distributed() or distributed.is_main():
        raise RuntimeError("follow_trials runs on the ranks other than 0 of a torchrun launch")
    done = 0
    while True:
        message = distributed.broadcast_object(None)
        if message[0] == "stop":
            return done
        if message[0] == "error":
            raise message[1]
        try:
            evaluator.train(message[1], None)
        except _every_rank_errors():
            pass
        done += 1


class Costs:
    """What a genotype costs: FLOPs and parameters of its stand-alone model (counted on the
    meta device, instant), its forward latency on ``device`` (median of ``repeats`` timed
    passes of one ``batch``, after warm-up), and how many layers keep an SSM (not ``none``)."""

    def __init__(self, template: Genotype, *, num_classes: int, img_size, in_chans: int, device: str = "cpu",
                 batch: int = 1, repeats: int = 5):
        self.template, self.device, self.batch, self.repeats = template, torch.device(device), batch, repeats
        self.num_classes, self.img_size, self.in_chans = num_classes, img_size, in_chans

    def model(self, layers: Sequence) -> torch.nn.Module:
        return build_model(as_genotype(self.template, layers, "trial"), num_classes=self.num_classes,
                           img_size=self.img_size, in_chans=self.in_chans)

    def __call__(self, layers: Sequence, which: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {"ssm_layers": float(sum(layer != NONE for layer in layers))}
        if not {"flops", "params", "latency_ms"} & set(which):
            return out
        model = self.model(layers)
        out["params"] = float(count_params(model))
        out["flops"] = float(count_flops(model, model.genotype.provenance.get("img_size") or self.img_size,
                                         self.in_chans))
        if "latency_ms" in which:
            out["latency_ms"] = self.latency_ms(model)
        return out

    @torch.no_grad()
    def latency_ms(self, model: torch.nn.Module) -> float:
        model = model.to(self.device).eval()
        size = self.img_size if isinstance(self.img_size, int) else self.img_size[0]
        images = torch.randn(self.batch, self.in_chans, size, size, device=self.device)
        for _ in range(2):
            model(images)
        times = []
        for _ in range(self.repeats):
            self._sync()
            started = time.perf_counter()
            model(images)
            self._sync()
            times.append((time.perf_counter() - started) * 1e3)
        return statistics.median(times)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


__all__ = ["Costs", "OneShot", "PrunedByOptuna", "Trained", "follow_trials", "lead_trials"]
