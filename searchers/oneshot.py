"""The supernet a one-shot evaluator scores genotypes with.

A discrete searcher asks one question of a supernet: how good is this genotype with the
shared weights? The supernet that answers it fairly trains every candidate equally, so its
alphas stay frozen at zero (uniform path weights, DARTS's ``alphas="uniform"``) while the
weights train; a DARTS run's checkpoint can serve too (``--supernet RUN``), alphas and all.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scansearch.searchers.darts import DartsConfig, DartsStep
from scansearch.searchers.run import RunError
from scansearch.searchers.supernet import Supernet
from scansearch.train import CHECKPOINT_NAME, TrainConfig, TrainResult, fit
from scansearch.training_state import load_checkpoint


def train_uniform(supernet: Supernet, data, config: TrainConfig, darts_config: DartsConfig | None,
                  out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the supernet's weights with its alphas frozen at zero into ``out_dir`` (a
    checkpoint every epoch; ``resume`` continues one, a finished one is only loaded)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        supernet.alphas.zero_()
    darts = dataclasses.replace(darts_config or DartsConfig(), alphas="uniform", warmup_epochs=0)
    step = DartsStep(supernet, darts, data, config.epochs, None)
    again = resume and (out / CHECKPOINT_NAME).is_file()
    return fit(supernet, data, config, out_dir=out, resume=again, hooks=[step], progress=progress, step_fn=step,
               param_filter=Supernet.is_weight)


def load_supernet_weights(supernet: Supernet, path: str | Path) -> None:
    """The weights (and alphas) of a supernet checkpoint written by ``fit``; RunError when the
    file is missing or belongs to another supernet."""
    path = Path(path)
    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise RunError(f"{path}: missing (train the supernet first)") from None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict):
        raise RunError(f"{path}: not a scansearch supernet checkpoint")
    try:
        supernet.load_state_dict(model)
    except RuntimeError as exc:
        raise RunError(f"{path}: does not fit this supernet ({str(exc).splitlines()[0]})") from None
    supernet.eval()


__all__ = ["load_supernet_weights", "train_uniform"]
