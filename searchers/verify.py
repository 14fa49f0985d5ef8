"""The check a search ends with: the found genotype against fixed ones, treated alike.

What it is checked against (:func:`reference_genotypes`): VMamba's cross scan
``h h_flip v v_flip`` and LocalMamba's un-searched ``h h_flip w2 w2_flip`` in every
layer, where the space has those directions. Every genotype gets the same treatment from
the same starting point, in one of two ways:

* fine-tuned (:func:`finetuned_check`, the default): the supernet's weights as they were
  before selection, fine-tuned under the genotype's own mask for the same number of steps
  on the same training batches, once per fine-tune seed; seconds a genotype. (Scoring
  fixed genotypes with the weights the selection left would favour the found one, whose
  mask those weights were last fine-tuned under.)
* trained (:func:`trained_check`, ``verify_epochs > 0``): each genotype's stand-alone
  model built from scratch and trained for a few epochs with the search's settings, once
  per seed; fair by construction, and it costs that many epochs each.

Either way each genotype is scored on held-out batches that neither the selection nor any
fine-tune read, and :func:`compare` reports its loss and accuracy and the paired difference
of its loss to the found genotype's (per batch and seed): mean and standard error (the
larger of the error over batches and the error over seeds). The verdict says a genotype is
better or worse than the found one only beyond two standard errors; otherwise "no
detectable difference", and :func:`recommend` then names the fixed genotype as the
simpler choice.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from scansearch.genotype import Genotype
from scansearch.models import build_model
from scansearch.searchers.selection import mask_for, per_batch
from scansearch.train import TrainConfig, fit

REFERENCES = {"cross": ("h", "h_flip", "v", "v_flip"), "localmamba_baseline": ("h", "h_flip", "w2", "w2_flip")}
FOUND = "found"
BETTER, WORSE, TIE = "better than found", "worse than found", "no detectable difference"


def reference_genotypes(found: Genotype, candidates: Sequence[str]) -> dict[str, tuple]:
    """What a search's result is checked against: the found layers, then VMamba's cross scan
    and LocalMamba's un-searched local baseline in every layer (where the space has them)."""
    out = {FOUND: found.layers}
    for name, directions in REFERENCES.items():
        if set(directions) <= set(candidates):
            out[name] = (directions,) * len(found.layers)
    return out


def as_genotype(found: Genotype, layers: Sequence, name: str) -> Genotype:
    """``layers`` on the model ``found`` was searched on (same preset, grid and recorded model
    settings), so that training it compares like with like."""
    recorded = {k: found.provenance[k] for k in ("img_size", "model_overrides") if k in found.provenance}
    if tuple(layers) == tuple(found.layers) and name == FOUND:
        return found
    return dataclasses.replace(found, layers=tuple(layers), space=None, alphas=None,
                               provenance={"reference": name, **recorded})


# -- the two treatments -------------------------------------------------------------------------
def train_batches(loader, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches in an order of their own for ``seed`` (the loader's epoch
    ``10_000 + seed``, so no epoch of the search's training is replayed), read once so that
    every genotype fine-tunes on the same images."""
    own = loader.independent() if hasattr(loader, "independent") else loader
    if hasattr(own, "set_epoch"):
        own.set_epoch(10_000 + seed)
    out: list = []
    while len(out) < steps:
        before = len(out)
        for batch in own:
            out.append(batch)
            if len(out) >= steps:
                break
        if len(out) == before:
            raise ValueError("the training split holds no batch to fine-tune on")
    return out


def finetune(model: torch.nn.Module, batches: Sequence, config: TrainConfig, device, params=None) -> None:
    """A few AdamW steps of ``model`` on ``batches``: the learning rate a tenth of the run's
    peak (DARTS-PT's tuning between edges), the run's weight decay, smoothing and clipping."""
    params = list(model.parameters()) if params is None else list(params)
    optimizer = torch.optim.AdamW(params, lr=0.1 * config.lr, weight_decay=config.weight_decay)
    model.train()
    for images, labels in batches:
        loss = F.cross_entropy(model(images.to(device)).float(), labels.to(device),
                               label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
    model.eval()


def finetuned_check(supernet, start: dict[str, torch.Tensor], genotypes: dict[str, Sequence], *, data,
                    config: TrainConfig, steps: int, seeds: Sequence[int], batches,
                    on_done: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Each genotype from the supernet state ``start`` (taken before selection), fine-tuned
    ``steps`` steps under its own mask once per seed, scored on ``batches``; see :func:`compare`.
    The supernet is left as it was found."""
    device = next(supernet.parameters()).device
    kept = {k: v.clone() for k, v in supernet.state_dict().items()}
    losses: dict[str, list] = {name: [] for name in genotypes}
    accs: dict[str, list] = {name: [] for name in genotypes}
    try:
        for seed in seeds:
            tune = train_batches(data.train, steps, seed) if steps else []
            for name, layers in genotypes.items():
                supernet.load_state_dict(start)
                supernet.mask.copy_(mask_for(supernet, layers))
                torch.manual_seed(seed)
                finetune(supernet, tune, config, device, params=supernet.weight_parameters())
                loss, acc = per_batch(supernet, batches)
                losses[name].append(loss)
                accs[name].append(acc)
                if on_done is not None:
                    on_done(name)
    finally:
        supernet.load_state_dict(kept)
        supernet.alphas.grad = None
        supernet.eval()
    return {name: {**stats, "steps": steps} for name, stats in compare(_stack(losses), _stack(accs)).items()}


def trained_check(found: Genotype, genotypes: dict[str, Sequence], data, config: TrainConfig, epochs: int,
                  batches, seeds: Sequence[int], *, on_done: Callable[[str], None] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Each genotype's stand-alone model trained from scratch for ``epochs`` epochs with the
    search's settings, once per seed (the same seeds, so the same initialisation and batch
    order for every genotype), then scored on ``batches``; see :func:`compare`."""
    if epochs < 1:
        raise ValueError(f"verify epochs must be at least 1, got {epochs}")
    losses: dict[str, list] = {name: [] for name in genotypes}
    accs: dict[str, list] = {name: [] for name in genotypes}
    for seed in seeds:
        short = dataclasses.replace(config, epochs=epochs, seed=seed,
                                    warmup_epochs=min(config.warmup_epochs, epochs / 2))
        for name, layers in genotypes.items():
            torch.manual_seed(seed)
            model = build_model(as_genotype(found, layers, name), num_classes=data.num_classes,
                                img_size=data.img_size, in_chans=data.in_chans)
            result = fit(model, data, short, progress=False)
            device = next(result.model.parameters()).device
            loss, acc = per_batch(result.model, [(x.to(device), y.to(device)) for x, y in batches])
            losses[name].append(loss)
            accs[name].append(acc)
            if on_done is not None:
                on_done(name)
    return {name: {**stats, "epochs": epochs} for name, stats in compare(_stack(losses), _stack(accs)).items()}


def _stack(values: dict[str, list]) -> dict[str, torch.Tensor]:
    return {name: torch.stack(rows) for name, rows in values.items()}


# -- the verdict --------------------------------------------------------------------------------
def compare(losses: dict[str, torch.Tensor], accs: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Per genotype, from (seeds, batches) tensors of held-out loss and accuracy: means and
    standard errors, and the paired difference of its loss to the found genotype's (the first
    entry when none is named ``found``) with its standard error and the verdict."""
    base = FOUND if FOUND in losses else next(iter(losses))
    out = {}
    for name, loss in losses.items():
        record = {"loss": loss.mean().item(), "loss_se": _se(loss), "top1": accs[name].mean().item(),
                  "top1_se": _se(accs[name]), "seeds": loss.shape[0], "batches": loss.shape[1]}
        if name != base:
            diff = loss - losses[base]
            mean, se = diff.mean().item(), paired_se(diff)
            record.update(diff=mean, diff_se=se, verdict=verdict(mean, se))
        out[name] = record
    return out


def paired_se(diff: torch.Tensor) -> float:
    """The standard error of the mean of (seeds, batches) paired differences: the larger of
    the error over all pairs and the error over the seeds' means (the conservative one)."""
    over_pairs = _se(diff.reshape(-1))
    over_seeds = _se(diff.mean(dim=1)) if diff.shape[0] > 1 else 0.0
    return max(over_pairs, over_seeds)


def verdict(diff: float, se: float) -> str:
    """A fixed genotype's loss minus the found one's, judged at two standard errors."""
    if diff < -2 * se and diff < 0:
        return BETTER
    if diff > 2 * se and diff > 0:
        return WORSE
    return TIE


def recommend(check: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The genotype to train and why: a fixed one that beats the found one beyond noise (the
    best of them); else the found one when it beats every fixed one; else, when some fixed
    genotype is not detectably worse, that one (the simplest: first named) as the simpler choice."""
    fixed = {name: r for name, r in check.items() if name != FOUND}
    better = [name for name, r in fixed.items() if r["verdict"] == BETTER]
    if better:
        best = min(better, key=lambda name: fixed[name]["loss"])
        return best, f"{best} beats the found genotype beyond noise"
    ties = [name for name, r in fixed.items() if r["verdict"] == TIE]
    if ties:
        return ties[0], (f"no detectable difference between the found genotype and {ties[0]} "
                         f"({_plain(fixed[ties[0]])}); {ties[0]} is the simpler choice")
    return FOUND, "the found genotype beats every fixed one beyond noise"


def _plain(record: dict[str, Any]) -> str:
    return f"loss difference {record['diff']:+.4f} ± {record['diff_se']:.4f}"


def _se(values: torch.Tensor) -> float:
    n = values.numel()
    return values.double().std().item() / math.sqrt(n) if n > 1 else 0.0


__all__ = ["BETTER", "FOUND", "REFERENCES", "TIE", "WORSE", "as_genotype", "compare", "finetune", "finetuned_check",
           "paired_se", "recommend", "reference_genotypes", "train_batches", "trained_check", "verdict"]
