"""Selection by effect: what does each candidate contribute to the trained supernet?

Alpha magnitudes are a weak measure of a candidate's strength (DARTS-PT, Wang et al.,
ICLR 2021): a softmax lets a pattern and its flip split their weight, and a candidate
that is cheap to remove can still hold a large alpha. ``select_by_effect`` masks each
candidate of a layer in turn and measures how much the supernet's held-out loss rises
(and its accuracy falls), batch by batch; the ``k`` candidates whose removal hurts most
are kept, the rest of the layer is masked, the supernet is fine-tuned for a few steps,
and the next layer follows, as DARTS-PT does edge by edge.

Every score comes with its spread: the standard error of the mean over the held-out
batches. A layer's margin is the score of the last kept candidate minus that of the
first dropped one, with the standard error of that paired difference; a margin below
two standard errors is a choice within the noise, and is marked so.

Families (a pattern and its flip, ``h``/``h_flip``) often do the same job, so masking one
barely hurts while the other remains: each family is also scored by masking its members
together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from scansearch.searchers.supernet import Supernet
from scansearch.spaces import NONE, SearchSpace

NOISE_SE = 2.0  # a margin below this many standard errors is within the noise


def families(candidates: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Family name -> candidate indices: a pattern with its flip, where both are candidates."""
    index = {name: i for i, name in enumerate(candidates)}
    out = {}
    for name, i in index.items():
        if name != NONE and not name.endswith("_flip") and f"{name}_flip" in index:
            out[name] = (i, index[f"{name}_flip"])
    return out


@dataclass
class Score:
    """The rise of the held-out loss when a candidate (or family) is masked: mean and standard
    error over batches; the fall in accuracy likewise."""

    loss: float
    loss_se: float
    acc: float
    acc_se: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in vars(self).items()}


@dataclass
class LayerSelection:
    layer: int
    candidates: tuple[str, ...]
    scores: dict[str, Score]             # per candidate (those unmasked when scored)
    family_scores: dict[str, Score]
    kept: tuple[str, ...] | str
    margin: float | None = None          # last kept minus first dropped (loss rise)
    margin_se: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def within_noise(self) -> bool:
        return self.margin is not None and self.margin <= NOISE_SE * (self.margin_se or 0.0)  # a tie is noise

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "kept": self.kept if self.kept == NONE else list(self.kept),
                "margin": None if self.margin is None else round(self.margin, 6),
                "margin_se": None if self.margin_se is None else round(self.margin_se, 6),
                "within_noise": self.within_noise,
                "scores": {n: s.to_dict() for n, s in self.scores.items()},
                "family_scores": {n: s.to_dict() for n, s in self.family_scores.items()}}


def fixed_batches(loader, device, max_batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out batches every score reads, fetched once (the same images for every mask)."""
    batches = []
    for images, labels in loader:
        batches.append((images.to(device), labels.to(device)))
        if max_batches is not None and len(batches) >= max_batches:
            break
    if not batches:
        raise ValueError("selection needs at least one held-out batch")
    return batches


@torch.no_grad()
def per_batch(supernet: torch.nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy of a supernet (or any classifier) on each batch: two
    (batches,) tensors."""
    was_training = supernet.training
    supernet.eval()
    losses, accs = [], []
    for images, labels in batches:
        logits = supernet(images).float()
        losses.append(F.cross_entropy(logits, labels))
        accs.append((logits.argmax(1) == labels).float().mean())
    supernet.train(was_training)
    return torch.stack(losses).cpu().double(), torch.stack(accs).cpu().double()


def summary(loss: torch.Tensor, acc: torch.Tensor) -> dict[str, float]:
    """Per-batch losses and accuracies as their means and standard errors."""
    return {"loss": loss.mean().item(), "loss_se": _se(loss), "top1": acc.mean().item(), "top1_se": _se(acc)}


def _score(base: tuple[torch.Tensor, torch.Tensor], masked: tuple[torch.Tensor, torch.Tensor]) -> Score:
    rise, fall = masked[0] - base[0], base[1] - masked[1]
    return Score(rise.mean().item(), _se(rise), fall.mean().item(), _se(fall))


def _se(values: torch.Tensor) -> float:
    n = values.numel()
    return values.std().item() / math.sqrt(n) if n > 1 else 0.0


def score_layer(supernet: Supernet, layer: int, batches) -> tuple[dict, dict, dict]:
    """Mask each unmasked candidate of ``layer`` (and each family) in turn; returns
    (scores, family scores, per-batch loss rises by candidate) against the current mask."""
    base = per_batch(supernet, batches)
    names = supernet.candidates
    live = [i for i in range(len(names)) if bool(supernet.mask[layer, i])]
    scores, rises = {}, {}
    for i in live:
        if len(live) == 1:
            break
        supernet.mask[layer, i] = False
        masked = per_batch(supernet, batches)
        supernet.mask[layer, i] = True
        scores[names[i]] = _score(base, masked)
        rises[names[i]] = masked[0] - base[0]
    family_scores = {}
    for family, members in families(names).items():
        if all(m in live for m in members) and len(live) > len(members):
            supernet.mask[layer, list(members)] = False
            masked = per_batch(supernet, batches)
            supernet.mask[layer, list(members)] = True
            family_scores[family] = _score(base, masked)
    return scores, family_scores, rises


def choose(scores: dict[str, Score], rises: dict[str, torch.Tensor], space: SearchSpace
           ) -> tuple[tuple[str, ...] | str, float | None, float | None]:
    """The k patterns whose removal raises the loss most (in the space's order), or ``none``
    when removing it hurts more than removing any pattern; with the margin and its error."""
    patterns = [n for n in space.candidates if n in scores and n != NONE]
    if NONE in scores and patterns and scores[NONE].loss > max(scores[n].loss for n in patterns):
        ranked = sorted(patterns, key=lambda n: -scores[n].loss)
        diff = rises[NONE] - rises[ranked[0]]
        return NONE, diff.mean().item(), _se(diff)
    ranked = sorted(patterns, key=lambda n: (-scores[n].loss, space.candidates.index(n)))
    kept = tuple(n for n in space.candidates if n in ranked[:space.k])
    if len(ranked) <= space.k:
        return kept, None, None
    last, first_out = ranked[space.k - 1], ranked[space.k]
    diff = rises[last] - rises[first_out]
    return kept, diff.mean().item(), _se(diff)


def select_by_effect(supernet: Supernet, space: SearchSpace, batches,
                     finetune: Callable[[Supernet], None] | None = None,
                     progress: Callable[[int], None] | None = None) -> list[LayerSelection]:
    """Layer by layer: score, keep the ``space.k`` strongest, mask the rest, fine-tune.

    The supernet's ``mask`` ends holding the selection. ``finetune(supernet)`` runs a few
    weight steps between layers (None: no fine-tuning).
    """
    selections = []
    for layer in range(supernet.num_layers):
        scores, family_scores, rises = score_layer(supernet, layer, batches)
        kept, margin, margin_se = choose(scores, rises, space)
        keep = {NONE} if kept == NONE else set(kept)
        for i, name in enumerate(supernet.candidates):
            supernet.mask[layer, i] = name in keep
        selections.append(LayerSelection(layer, supernet.candidates, scores, family_scores, kept, margin, margin_se))
        if finetune is not None and layer + 1 < supernet.num_layers:
            finetune(supernet)
        if progress is not None:
            progress(layer)
    return selections


def mask_for(supernet: Supernet, layers: Sequence[tuple[str, ...] | str]) -> torch.Tensor:
    """The mask that keeps exactly each layer's directions (``none``: the gated CNN alone)."""
    mask = torch.zeros_like(supernet.mask)
    for i, layer in enumerate(layers):
        for name in ((NONE,) if layer == NONE else layer):
            mask[i, supernet.candidates.index(name)] = True
    return mask


def score_genotypes(supernet: Supernet, genotypes: dict[str, Sequence], batches) -> dict[str, dict[str, float]]:
    """Held-out loss and accuracy (mean and standard error over batches) of the supernet with
    each genotype's directions alone, weighted by the alphas over them: how the search scores
    what it found against fixed choices, with the same weights."""
    saved = supernet.mask.clone()
    out = {}
    try:
        for name, layers in genotypes.items():
            supernet.mask.copy_(mask_for(supernet, layers))
            out[name] = summary(*per_batch(supernet, batches))
    finally:
        supernet.mask.copy_(saved)
    return out


__all__ = ["LayerSelection", "NOISE_SE", "Score", "choose", "families", "fixed_batches", "mask_for", "per_batch",
           "score_genotypes", "score_layer", "select_by_effect", "summary"]
