"""Zero-cost proxies: a genotype's promise from its untrained model, in a second.

Every proxy is "higher is better" and deterministic for a seed (the model is built under
``torch.manual_seed(seed)`` and reads the same batches):

* ``locality``: minus the mean over layers of the set locality of the kept directions
  (:func:`scansearch.spaces.metrics.set_locality`: per grid-neighbour pair, the smallest
  sequence distance any kept direction gives). No network at all.
* ``grad_norm``: the sum over parameter tensors of the gradient's L2 norm of the
  cross-entropy on one batch (Abdelfattah et al., 2021).
* ``zico``: ZiCo (Li et al., ICLR 2023): over two or more batches, per parameter tensor
  ``log(sum |mean g| / std g)`` summed over tensors: high where gradients are large and
  consistent across batches.
* ``synflow``: SynFlow (Tanaka et al., 2020), adapted to SiLU-gated SSM networks: on
  ``|theta|`` and a positive random input (an all-ones input is constant along the
  sequence, which the LayerNorms map to zero), in float64, the sum of
  ``|theta * dR/dtheta|`` with ``R`` the sum of the logits; ``log`` of it, since it spans
  orders of magnitude.
* ``params``, ``flops``: the baselines a proxy has to beat (bigger is "better").

How well each ranks genotypes by their trained accuracy is measured, not assumed
(``benchmarks/bench_zero_cost.py``: Spearman correlation over trained genotypes).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from scansearch.flops import count_flops, count_params
from scansearch.genotype import Genotype
from scansearch.models import build_model
from scansearch.searchers.verify import as_genotype
from scansearch.spaces import NONE
from scansearch.spaces.metrics import set_locality

PROXIES = ("locality", "grad_norm", "zico", "synflow", "params", "flops")
NETWORK_PROXIES = ("grad_norm", "zico", "synflow")


class ZeroCost:
    """The zero-cost evaluator: every proxy of a genotype; ``loss`` is minus the chosen one,
    so a study that minimises loss ranks by the proxy."""

    name = "zero-cost"

    def __init__(self, template: Genotype, data, batches: Sequence, *, proxy: str = "zico", seed: int = 0,
                 proxies: Sequence[str] = PROXIES):
        if proxy not in PROXIES:
            raise ValueError(f"unknown zero-cost proxy {proxy!r} (known: {', '.join(PROXIES)})")
        if len(batches) < 2:
            raise ValueError("zero-cost proxies need at least two batches (ZiCo compares them)")
        self.template, self.data, self.batches = template, data, list(batches)
        self.proxy, self.seed = proxy, seed
        self.proxies = tuple(dict.fromkeys((*proxies, proxy)))

    def model(self, layers) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        return build_model(as_genotype(self.template, layers, "trial"), num_classes=self.data.num_classes,
                           img_size=self.data.img_size, in_chans=self.data.in_chans)

    def scores(self, layers) -> dict[str, float]:
        out: dict[str, float] = {}
        if "locality" in self.proxies:
            out["locality"] = locality(layers, self.template.grid)
        model = self.model(layers) if set(self.proxies) - {"locality"} else None
        if "params" in self.proxies:
            out["params"] = float(count_params(model))
        if "flops" in self.proxies:
            size = self.template.provenance.get("img_size") or self.data.img_size
            out["flops"] = float(count_flops(model, size, self.data.in_chans))
        if "grad_norm" in self.proxies:
            out["grad_norm"] = grad_norm(model, self.batches[0])
        if "zico" in self.proxies:
            out["zico"] = zico(model, self.batches)
        if "synflow" in self.proxies:
            out["synflow"] = synflow(model, self.batches[0][0])
        return out

    def __call__(self, layers, trial=None) -> dict[str, float]:
        scores = self.scores(layers)
        return {"loss": -scores[self.proxy], **{f"zc_{k}": v for k, v in scores.items()}}


def locality(layers, grid) -> float:
    """Minus the mean set locality of the layers that scan (``none`` layers are left out)."""
    if grid is None:
        raise ValueError("the locality proxy needs the genotype's token grid")
    H, W = grid
    values = [set_locality(layer, H, W) for layer in layers if layer != NONE]
    return -sum(values) / len(values) if values else 0.0


def _gradients(model: torch.nn.Module, batch) -> list[torch.Tensor | None]:
    images, labels = batch
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def grad_norm(model: torch.nn.Module, batch) -> float:
    model.train()
    grads = _gradients(model, batch)
    model.zero_grad(set_to_none=True)
    return float(sum(g.norm() for g in grads if g is not None))


def zico(model: torch.nn.Module, batches) -> float:
    model.train()
    per_batch = [_gradients(model, batch) for batch in batches]
    model.zero_grad(set_to_none=True)
    total = 0.0
    for grads in zip(*per_batch):
        if any(g is None for g in grads):
            continue
        stack = torch.stack([g.flatten().double() for g in grads])
        std = stack.std(0)
        keep = std > 0
        if not bool(keep.any()):
            continue
        ratio = (stack.mean(0).abs()[keep] / std[keep]).sum().item()
        if ratio > 0:
            total += math.log(ratio)
    return total


def synflow(model: torch.nn.Module, images: torch.Tensor) -> float:
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    torch.manual_seed(0)
    x = torch.rand(1, *images.shape[1:], dtype=torch.float64, device=images.device) + 0.5
    probe.zero_grad(set_to_none=True)
    probe(x).sum().backward()
    total = sum((p * p.grad).abs().sum().item() for p in probe.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else float("-inf")


__all__ = ["NETWORK_PROXIES", "PROXIES", "ZeroCost", "grad_norm", "locality", "synflow", "zico"]
