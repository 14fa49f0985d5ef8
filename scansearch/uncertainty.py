"""Predictive uncertainty from Monte-Carlo dropout, and calibration.

``predict_with_uncertainty(model, images, samples=8)`` runs ``T`` stochastic passes of a
model with an MC-dropout head (the ``raum`` family) and returns the mean prediction with
its predictive entropy and mutual information (BALD, Houlsby et al. 2011)::

    H[y | x]        = -sum_c pbar_c log pbar_c          (predictive entropy, total)
    E_t H[y | x, w] = -1/T sum_t sum_c p_tc log p_tc     (expected entropy, aleatoric)
    I[y; w | x]     = H[y | x] - E_t H[y | x, w]         (mutual information, epistemic)

with ``pbar = 1/T sum_t p_t``. Calibration: ``expected_calibration_error`` bins the top
probability into equal-width bins and weighs each bin's |accuracy - confidence| by its
share of the samples (Guo et al. 2017); ``reliability`` returns the bins for a diagram,
``plot_reliability`` draws one (``plot`` extra).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from scansearch.errors import TrainError
from scansearch.plotting import pyplot, save_figure
from scansearch.train_config import autocast_dtype


@dataclass
class Uncertainty:
    """What ``predict_with_uncertainty`` returns; every field has the batch as first dimension
    (``samples``: ``(T, B, classes)``)."""

    mean: torch.Tensor               # (B, classes) mean of the T softmax outputs
    entropy: torch.Tensor            # (B,) predictive entropy of the mean, in nats
    expected_entropy: torch.Tensor   # (B,) mean entropy of the single passes
    mutual_info: torch.Tensor        # (B,) BALD: entropy - expected_entropy (>= 0)
    samples: torch.Tensor            # (T, B, classes) the single passes' probabilities

    @property
    def confidence(self) -> torch.Tensor:
        return self.mean.max(dim=1).values

    @property
    def prediction(self) -> torch.Tensor:
        return self.mean.argmax(dim=1)


def supports_mc(model: nn.Module) -> bool:
    """True when ``model`` has an MC-dropout head (``mc_logits``)."""
    return callable(getattr(model, "mc_logits", None))


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def uncertainty_from_probs(probs: torch.Tensor) -> Uncertainty:
    """The summary of ``T`` passes' probabilities ``(T, B, classes)``."""
    mean = probs.mean(0)
    entropy = _entropy(mean)
    expected = _entropy(probs).mean(0)
    return Uncertainty(mean=mean, entropy=entropy, expected_entropy=expected,
                       mutual_info=(entropy - expected).clamp_min(0), samples=probs)


@torch.no_grad()
def predict_with_uncertainty(model: nn.Module, images: torch.Tensor, samples: int | None = None,
                             generator: torch.Generator | None = None) -> Uncertainty:
    """Mean prediction, predictive entropy and mutual information from ``samples`` MC-dropout
    passes (default: the model's ``mc_samples``, 8 for the presets). The backbone runs once;
    ``generator`` fixes the dropout masks."""
    if not supports_mc(model):
        raise TrainError(f"{type(model).__name__} has no MC-dropout head; uncertainty needs a raum model")
    logits = model.mc_logits(images, samples, generator=generator)
    return uncertainty_from_probs(logits.float().softmax(-1))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE of the top-class probability in ``bins`` equal-width bins (0 = perfectly calibrated)."""
    table = reliability(probs, labels, bins)
    n = sum(row["count"] for row in table)
    if n == 0:
        raise TrainError("calibration: no samples")
    return sum(row["count"] / n * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"])


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> list[dict]:
    """Per bin ``(lower, upper]`` of the top probability: its count, mean confidence and accuracy
    (confidence and accuracy are None for an empty bin). The first bin includes 0."""
    if bins < 1:
        raise TrainError(f"calibration: bins must be >= 1, got {bins}")
    confidence, prediction = probs.float().max(dim=1)
    correct = (prediction == labels).float()
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    rows = []
    for b in range(bins):
        member = index == b
        count = int(member.sum())
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count,
                     "confidence": confidence[member].mean().item() if count else None,
                     "accuracy": correct[member].mean().item() if count else None})
    return rows


@torch.no_grad()
def collect_probs(model: nn.Module, loader: Iterable, device: torch.device | str, *, mc_samples: int | None = None,
                  transform=None, seed: int = 0, amp: str = "auto") -> dict[str, torch.Tensor]:
    """Labels, the deterministic pass's probabilities and (with ``mc_samples``) the MC mean and
    mutual information over a whole loader; ``transform(images, batch_index)`` (occlusion)
    applies first. MC masks come from a generator seeded by ``seed``. The passes run under
    the autocast ``evaluate`` uses (``amp``), so both report the same accuracy."""

    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {"labels": [], "single": [], "mc_mean": [], "mutual_info": [],
                                          "entropy": []}
    for index, (images, labels) in enumerate(loader):
        images = images.to(device)
        if transform is not None:
            images = transform(images, index)
        out["labels"].append(labels.cpu())
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out["single"].append(model(images).float().softmax(-1).cpu())
            if mc_samples is None:
                continue
            result = predict_with_uncertainty(model, images, mc_samples, generator=gen)
            out["mc_mean"].append(result.mean.cpu())
            out["mutual_info"].append(result.mutual_info.cpu())
            out["entropy"].append(result.entropy.cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in out.items() if v}


def plot_reliability(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> Path | None:
    """A reliability diagram of one or more ``reliability`` tables (accuracy against confidence
    per bin, the diagonal for perfect calibration); None without matplotlib."""

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, table in curves.items():
        rows = [r for r in table if r["count"]]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    if title:
        ax.set_title(title)
    return save_figure(plt, fig, path)
