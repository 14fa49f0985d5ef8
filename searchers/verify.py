"""The check a search ends with: the found genotype against fixed ones, scored the same way.

What it is checked against (:func:`reference_genotypes`): VMamba's cross scan
``h h_flip v v_flip`` and LocalMamba's un-searched ``h h_flip w2 w2_flip`` in every
layer, where the space has those directions. Every genotype is scored on validation
batches the selection did not read (see ``held_out_halves`` in :mod:`.darts`), in one of
two ways:

* with the supernet's weights (:func:`~.selection.score_genotypes`, the default): each
  genotype's directions alone, no training; it costs seconds, but leans towards the
  found genotype, whose mask the weights were last fine-tuned under;
* trained (:func:`train_genotypes`, ``verify_epochs > 0``): each genotype's stand-alone
  model built from scratch with the same seed and trained for a few epochs with the
  search's own settings; fair between the genotypes, and it costs that many epochs each.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch

from scansearch.genotype import Genotype
from scansearch.models import build_model
from scansearch.searchers.selection import per_batch, summary
from scansearch.train import TrainConfig, fit

REFERENCES = {"cross": ("h", "h_flip", "v", "v_flip"), "localmamba_baseline": ("h", "h_flip", "w2", "w2_flip")}


def reference_genotypes(found: Genotype, candidates: Sequence[str]) -> dict[str, tuple]:
    """What a search's result is checked against: the found layers, then VMamba's cross scan
    and LocalMamba's un-searched local baseline in every layer (where the space has them)."""
    out = {"found": found.layers}
    for name, directions in REFERENCES.items():
        if set(directions) <= set(candidates):
            out[name] = (directions,) * len(found.layers)
    return out


def as_genotype(found: Genotype, layers: Sequence, name: str) -> Genotype:
    """``layers`` on the model ``found`` was searched on (same preset, grid and recorded model
    settings), so that training it compares like with like."""
    recorded = {k: found.provenance[k] for k in ("img_size", "model_overrides") if k in found.provenance}
    if tuple(layers) == tuple(found.layers) and name == "found":
        return found
    return dataclasses.replace(found, layers=tuple(layers), space=None, alphas=None,
                               provenance={"reference": name, **recorded})


def train_genotypes(found: Genotype, genotypes: dict[str, Sequence], data, config: TrainConfig, epochs: int,
                    batches, *, on_done: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Each genotype's stand-alone model trained from scratch for ``epochs`` epochs (the
    search's settings and seed, the same initialisation seed for each), then scored on
    ``batches``: held-out loss and accuracy, mean and standard error over the batches."""

    if epochs < 1:
        raise ValueError(f"verify epochs must be at least 1, got {epochs}")
    short = dataclasses.replace(config, epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs / 2))
    out = {}
    for name, layers in genotypes.items():
        torch.manual_seed(config.seed)
        model = build_model(as_genotype(found, layers, name), num_classes=data.num_classes, img_size=data.img_size,
                            in_chans=data.in_chans)
        result = fit(model, data, short, progress=False)
        device = next(result.model.parameters()).device
        moved = [(images.to(device), labels.to(device)) for images, labels in batches]
        with torch.no_grad():
            out[name] = {**summary(*per_batch(result.model, moved)), "epochs": epochs}
        if on_done is not None:
            on_done(name)
    return out


__all__ = ["REFERENCES", "as_genotype", "reference_genotypes", "train_genotypes"]
