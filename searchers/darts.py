"""DARTS over scan directions: train a :class:`~.supernet.Supernet`, discretise its alphas.

The loop is :func:`scansearch.train.fit` with a DARTS step in place of the plain one:

* ``mode="bilevel"`` (default): per training batch, one architecture step on a batch of
  the validation split (first order: the gradient of the validation loss in ``alpha``
  at the current weights; ``order=2``: DARTS's unrolled gradient, the Hessian-vector
  product by finite differences), then one weight step on the training batch.
* ``mode="single"``: LocalMamba's single-level search, weights and alphas trained
  together on the training batch.

Against the collapse of the architecture weights onto one candidate, ``beta_decay``
adds beta-DARTS's ``lambda * mean_layers logsumexp(alpha)``, with ``lambda`` growing
linearly from 0 to ``beta_decay`` over the run. ``warmup_epochs`` trains the weights
alone first, so that the alphas compare trained candidates. The alpha optimiser is Adam
(DARTS: betas (0.5, 0.999), weight decay 1e-3).

Everything the run remembers goes to a :class:`~.run.RunFolder`: the alpha history per
epoch (``alphas.json``), the checkpoint (alphas, weights, both optimisers, the position
in the validation stream), the genotype, the heat-map and a summary.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from scansearch import distributed
from scansearch.errors import DivergenceError
from scansearch.genotype import Genotype
from scansearch.searchers.discretize import discretize
from scansearch.searchers.run import RunFolder
from scansearch.searchers.selection import fixed_batches, select_by_effect
from scansearch.searchers.supernet import Supernet
from scansearch.searchers.verify import REFERENCES, finetune, finetuned_check, reference_genotypes, trained_check
from scansearch.spaces import NONE, SearchSpace
from scansearch.train import FitContext, TrainConfig, TrainError, TrainResult, fit

MODES = ("bilevel", "single")
SELECTIONS = ("perturb", "alpha")
ALPHAS = ("learned", "uniform")


@dataclass
class DartsConfig:
    """How the architecture weights are trained (the weights follow a TrainConfig)."""

    mode: str = "bilevel"             # bilevel | single
    order: int = 1                    # 1 | 2 (bilevel only)
    arch_lr: float = 3e-2
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    beta_decay: float = 0.0           # beta-DARTS regularisation weight (0: off)
    warmup_epochs: int = 0            # weight-only epochs before the alphas move
    gumbel_k: int | None = None       # sample this many candidates per layer and step
    tau: float = 1.0                  # Gumbel temperature
    k: int | None = None              # directions kept per layer; None: the space's k
    unroll_eps: float = 1e-2          # finite-difference step of the second-order gradient
    select: str = "perturb"           # perturb (by effect, DARTS-PT) | alpha (top-k of softmax(alpha))
    alphas: str = "learned"           # learned | uniform (frozen at zero: selection by effect alone)
    finetune_steps: int = 10          # weight steps between layers in perturb selection
    select_batches: int | None = None  # held-out batches scored per mask (None: all of the half)
    verify_epochs: int = 0            # closing check: 0 fine-tunes each genotype from the supernet; N trains each N epochs
    verify_steps: int = 20            # closing check: fine-tune steps under each genotype's own mask
    verify_seeds: int = 2             # closing check: fine-tune (or training) seeds per genotype

    def validate(self, epochs: int) -> None:
        if self.mode not in MODES:
            raise TrainError(f"darts: mode (--mode) must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.order not in (1, 2):
            raise TrainError(f"darts: order (--order) must be 1 or 2, got {self.order!r}")
        if self.order == 2 and self.mode != "bilevel":
            raise TrainError("darts: order 2 needs the bilevel mode")
        if not 0 < self.arch_lr < math.inf:
            raise TrainError(f"darts: arch_lr (--arch-lr) must be positive and finite, got {self.arch_lr}")
        if not 0 <= self.beta_decay < math.inf:
            raise TrainError(f"darts: beta_decay (--beta-decay) must be zero or more and finite, got {self.beta_decay}")
        if not 0 <= self.warmup_epochs < epochs:
            raise TrainError(f"darts: warmup_epochs (--warmup-epochs) must be in [0, epochs={epochs}), "
                             f"got {self.warmup_epochs}")
        if self.tau <= 0:
            raise TrainError(f"darts: tau must be positive, got {self.tau}")
        if self.order == 2 and self.gumbel_k is not None:
            raise TrainError("darts: order 2 and Gumbel sampling do not mix (the unrolled step needs one path)")
        if self.select not in SELECTIONS:
            raise TrainError(f"darts: select (--select) must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.alphas not in ALPHAS:
            raise TrainError(f"darts: alphas (--alphas) must be one of {', '.join(ALPHAS)}, got {self.alphas!r}")
        if self.alphas == "uniform" and self.select == "alpha":
            raise TrainError("darts: uniform alphas carry no choice; select by effect (select='perturb')")
        if self.finetune_steps < 0 or (self.select_batches is not None and self.select_batches < 1):
            raise TrainError("darts: finetune_steps (--finetune-steps) must be >= 0 and select_batches >= 1")
        if self.verify_steps < 0:
            raise TrainError(f"darts: verify_steps (--verify-steps) must not be negative, got {self.verify_steps}")
        if self.verify_seeds < 2:
            raise TrainError(f"darts: verify_seeds (--verify-seeds) must be at least 2 (the verdict's error needs "
                             f"them), got {self.verify_seeds}")
        if self.verify_epochs < 0:
            raise TrainError(f"darts: verify_epochs (--verify-epochs) must not be negative, got {self.verify_epochs}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["arch_betas"] = list(self.arch_betas)
        return data


@dataclass
class SearchResult:
    genotype: Genotype
    weights: torch.Tensor              # softmax(alpha), (layers, candidates)
    history: list[dict[str, Any]]      # per epoch: weights and metrics
    train: TrainResult
    run: RunFolder | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DartsStep:
    """The ``step_fn`` of ``fit`` and the hook that keeps the alpha history and optimiser."""

    def __init__(self, supernet: Supernet, config: DartsConfig, data, epochs: int, run: RunFolder | None):
        self.supernet, self.config, self.data, self.epochs, self.run = supernet, config, data, epochs, run
        self.arch_optimizer = torch.optim.Adam(supernet.arch_parameters(), lr=config.arch_lr,
                                               betas=config.arch_betas, weight_decay=config.arch_weight_decay)
        self.history: list[dict[str, Any]] = []
        self.val_position = 0  # validation batches consumed (restored on resume)
        self._val_weight = 1.0  # this rank's share of the validation batch (torchrun)
        # the architecture steps read the validation split through a loader of their own, so that
        # evaluation between epochs neither resets nor shares their stream
        independent = getattr(data.val, "independent", None)
        self._val_loader = independent() if independent is not None else data.val
        self._val_iter = None

    # -- hooks ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"arch_optimizer": self.arch_optimizer.state_dict(), "history": self.history,
                "val_position": self.val_position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.history = list(state["history"])
        self.val_position = int(state["val_position"])
        self._val_iter = None

    def on_epoch_end(self, ctx: FitContext, record: dict[str, Any]) -> None:
        weights = self.supernet.weights_table()
        entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean().item()
        record["alpha_entropy"] = entropy
        self.history.append({"epoch": record["epoch"], "weights": [[round(v, 6) for v in row] for row in weights.tolist()],
                             "train_loss": record["train_loss"], "val_top1": record["val_top1"],
                             "entropy": entropy})
        if self.run is not None and distributed.is_main():
            self.run.write_history(self.supernet.candidates, self.history)
            self.run.log(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
                         f"val top-1 {record['val_top1']:.4f}, alpha entropy {entropy:.3f}")

    # -- the step ------------------------------------------------------------------------------
    def __call__(self, ctx: FitContext, batch) -> dict[str, Any]:
        images, labels = batch
        arch_on = self.config.alphas == "learned" and ctx.epoch >= self.config.warmup_epochs
        if self.config.mode == "bilevel":
            if arch_on:
                val_images, val_labels = self._next_val(ctx.device)
                if self.config.order == 1:
                    self._arch_step_first_order(ctx, val_images, val_labels)
                else:
                    self._arch_step_second_order(ctx, images, labels, val_images, val_labels)
            return self._weight_step(ctx, images, labels, with_arch=False)
        return self._weight_step(ctx, images, labels, with_arch=arch_on)

    def regulariser(self, ctx: FitContext) -> torch.Tensor:
        """beta-DARTS: ``lambda_t * mean_layers logsumexp(alpha)``, lambda ramping up linearly."""
        if self.config.beta_decay == 0:
            return self.supernet.alphas.new_zeros(())
        progress = min(1.0, (ctx.step + 1) / max(1, self.epochs * ctx.steps_per_epoch))
        return self.config.beta_decay * progress * torch.logsumexp(self.supernet.alphas, dim=-1).mean()

    def _loss(self, ctx: FitContext, images, labels, module=None):
        """The weights' loss (label smoothing included) for both steps: a plain cross-entropy on
        the validation batches would reward whichever candidate sharpens the logits most, since
        the weights are fit to smoothed targets. ``module``: what runs forward (the supernet;
        the weight step passes ``ctx.train_model``, its DDP wrapper under torchrun)."""
        with ctx.autocast():
            logits = (module or self.supernet)(images)
        logits = logits.float()
        return ctx.loss_fn(logits, labels), logits

    @staticmethod
    def _share(loss: torch.Tensor, weight: float) -> torch.Tensor:
        """A slice's loss weighted by its share of an unevenly shared batch (torchrun)."""
        return loss if weight == 1.0 else loss * weight

    def _weight_step(self, ctx: FitContext, images, labels, with_arch: bool) -> dict[str, Any]:
        loss, logits = self._loss(ctx, images, labels, ctx.train_model)
        if with_arch:  # single level: one backward feeds both optimisers
            ctx.backward_step(loss + self.regulariser(ctx), also=[self.arch_optimizer])
        else:
            ctx.backward_step(loss)
            self.supernet.alphas.grad = None  # the weight step's backward reached alpha too
        return {"loss": loss.detach(), "correct": (logits.argmax(1) == labels).sum(), "count": len(labels)}

    @staticmethod
    def _grads(ctx: FitContext, loss: torch.Tensor, inputs: list[torch.Tensor]) -> list | None:
        """``autograd.grad`` through the fp16 loss scale when training has one (small alpha
        gradients would underflow in half precision otherwise), unscaled again; None when the
        scaled gradients overflowed, as the scaler's own skipped steps. Under torchrun the
        gradients are averaged across ranks (before the overflow check, so that every rank
        takes the same decision)."""
        if ctx.scaler is None:
            return distributed.all_reduce_mean(torch.autograd.grad(loss, inputs, allow_unused=True))
        scale = ctx.scaler.get_scale()
        grads = distributed.all_reduce_mean(torch.autograd.grad(loss * scale, inputs, allow_unused=True))
        if not all(g is None or torch.isfinite(g).all() for g in grads):
            return None
        return [None if g is None else g / scale for g in grads]

    def _arch_step_first_order(self, ctx: FitContext, images, labels) -> None:
        loss, _ = self._loss(ctx, images, labels)
        loss = self._share(loss, self._val_weight) + self.regulariser(ctx)
        grads = self._grads(ctx, loss, [self.supernet.alphas])
        if grads is not None:
            self._apply_arch_grad(grads[0])

    def _arch_step_second_order(self, ctx: FitContext, images, labels, val_images, val_labels) -> None:
        """DARTS's unrolled step: w' = w - xi grad_w L_train(w, a); the alpha gradient is
        grad_a L_val(w', a) - xi (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),
        w+- = w +- eps grad_w' L_val(w', a), eps = unroll_eps / |grad_w' L_val|. As in DARTS, xi is
        the weights' learning rate and the virtual step is plain gradient descent, whatever the
        weights' optimiser (AdamW here) does with its moments."""
        params = [p for p in self.supernet.weight_parameters() if p.requires_grad]
        xi = ctx.optimizer.param_groups[0]["lr"]
        saved = [p.detach().clone() for p in params]
        try:
            grad = self._unrolled_alpha_grad(ctx, params, saved, xi, images, labels, val_images, val_labels)
        finally:
            with torch.no_grad():
                for p, w in zip(params, saved):
                    p.copy_(w)
        if grad is not None:
            self._apply_arch_grad(grad)

    def _unrolled_alpha_grad(self, ctx: FitContext, params, saved, xi, images, labels, val_images, val_labels):
        """The second-order alpha gradient; moves the weights (the caller restores them)."""
        alphas = self.supernet.alphas
        train_loss, _ = self._loss(ctx, images, labels)
        grads = self._grads(ctx, self._share(train_loss, ctx.loss_weight), params)
        if grads is None:
            return None
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(xi * g)
        val_loss, _ = self._loss(ctx, val_images, val_labels)
        val_grads = self._grads(ctx, self._share(val_loss, self._val_weight) + self.regulariser(ctx),
                                [alphas, *params])
        if val_grads is None:
            return None
        alpha_grad, *weight_grads = val_grads
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in weight_grads if g is not None))
        eps = self.config.unroll_eps / (norm.item() + 1e-12)
        train_alpha_grads = []
        for sign in (+1.0, -1.0):
            with torch.no_grad():
                for p, w, g in zip(params, saved, weight_grads):
                    p.copy_(w if g is None else w + sign * eps * g)
            loss, _ = self._loss(ctx, images, labels)
            grad = self._grads(ctx, self._share(loss, ctx.loss_weight), [alphas])
            if grad is None:
                return None
            train_alpha_grads.append(grad[0])
        hessian = (train_alpha_grads[0] - train_alpha_grads[1]) / (2 * eps)
        return alpha_grad - xi * hessian

    def _apply_arch_grad(self, grad: torch.Tensor) -> None:
        if not torch.isfinite(grad).all():
            raise DivergenceError("darts: the architecture gradient is not finite; lower --arch-lr or the weight lr")
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.supernet.alphas.grad = grad.detach()
        self.arch_optimizer.step()
        self.supernet.alphas.grad = None

    def _next_val(self, device: torch.device):
        """The next validation batch; the stream cycles and is replayed exactly on resume."""
        loader = self._val_loader
        n = len(loader)
        if n == 0:
            raise TrainError("darts: the validation split is empty; the architecture step needs it")
        if self._val_iter is None:
            self._val_iter = iter(loader)
            for _ in range(self.val_position % n):
                next(self._val_iter)
        try:
            batch = next(self._val_iter)
        except StopIteration:
            self._val_iter = iter(loader)
            batch = next(self._val_iter)
        self.val_position += 1
        batch, self._val_weight = distributed.shard(batch)  # under torchrun: this rank's slice
        return tuple(t.to(device, non_blocking=True) for t in batch)


def model_record(supernet: Supernet) -> dict[str, Any]:
    """The provenance entries that make the derived model the one searched: ``img_size`` and
    the config fields changed from the preset (``model_overrides``); see ``build_model``."""
    record: dict[str, Any] = {"img_size": supernet.img_size}
    if supernet.overrides:
        record["model_overrides"] = dict(supernet.overrides)
    return record


def search(supernet: Supernet, data, train_config: TrainConfig, darts_config: DartsConfig | None = None,
           run: RunFolder | None = None, *, resume: bool = False, progress: bool = True,
           provenance: dict[str, Any] | None = None, hooks=()) -> SearchResult:
    """Train ``supernet`` with DARTS on ``data`` and discretise it into a Genotype.

    ``run`` (optional) receives the checkpoint, the alpha history and, at the end, the
    genotype, the heat-map and the summary. ``resume`` continues from its checkpoint.
    ``hooks`` go to ``fit`` after the DARTS hook (see :mod:`scansearch.train`).
    """
    darts_config = darts_config or DartsConfig()
    darts_config.validate(train_config.epochs)
    if darts_config.gumbel_k is not None:
        supernet.set_gumbel(darts_config.gumbel_k, darts_config.tau)
    if darts_config.order == 2 and supernet.gumbel_k is not None:
        raise TrainError("darts: order 2 and Gumbel sampling do not mix (the supernet was built with gumbel_k)")
    if darts_config.alphas == "uniform":
        with torch.no_grad():
            supernet.alphas.zero_()
    space = supernet.space.keep(darts_config.k)
    step = DartsStep(supernet, darts_config, data, train_config.epochs, run)
    result = fit(supernet, data, train_config, out_dir=None if run is None else run.path, resume=resume,
                 hooks=[step, *hooks], progress=progress, step_fn=step, param_filter=Supernet.is_weight)
    device = next(supernet.parameters()).device
    start = {k: v.clone() for k, v in supernet.state_dict().items()}  # the closing check's starting point
    select_half, verify_half = held_out_halves(data.val, device, darts_config.select_batches)
    prov = {"searcher": "darts", "mode": darts_config.mode, "order": darts_config.order,
            "select": darts_config.select, "alphas": darts_config.alphas,
            "seed": train_config.seed, "epochs": train_config.epochs, "k": space.k,
            "score": round(result.val["top1"], 4), **model_record(supernet), **(provenance or {})}
    if darts_config.select == "perturb":
        finetune = partial(finetune_weights, data=data, config=train_config, steps=darts_config.finetune_steps,
                           device=device) if darts_config.finetune_steps else None
        selections = select_by_effect(supernet, space, select_half, finetune)
        layers = tuple(sel.kept for sel in selections)
        margins = [(sel.margin, sel.margin_se) for sel in selections]
    else:
        selections = []
        layers = discretize(supernet.alphas, space, model=supernet.preset, grid=supernet.token_grid,
                            provenance={}).layers
        margins = [(alpha_margin(row, space), None) for row in supernet.weights_table()]
    # every rank selected from the same weights; rank 0's choice is the one all go on with
    layers = distributed.broadcast_object(layers)
    prov["margins"] = [None if m is None else round(m, 6) for m, _ in margins]
    prov["within_noise"] = [sel.layer for sel in selections if sel.within_noise]
    genotype = Genotype(layers=layers, model=supernet.preset, space=space.ref, grid=tuple(supernet.token_grid),
                        provenance=prov, alphas=tuple(tuple(round(float(v), 6) for v in row)
                                                      for row in supernet.weights_table()))
    references = reference_genotypes(genotype, supernet.candidates)
    seeds = range(train_config.seed, train_config.seed + darts_config.verify_seeds)
    if darts_config.verify_epochs:
        verify = trained_check(genotype, references, data, train_config, darts_config.verify_epochs, verify_half, seeds)
    else:
        verify = finetuned_check(supernet, start, references, data=data, config=train_config,
                                 steps=darts_config.verify_steps, seeds=seeds, batches=verify_half)
    weights = supernet.weights_table()
    if run is not None and distributed.is_main():
        run.write_genotype(genotype)
        run.write_json(RunFolder.SELECTION, {"select": darts_config.select, "verify_epochs": darts_config.verify_epochs,
                                             "layers": [sel.to_dict() for sel in selections],
                                             "verify": verify})
    return SearchResult(genotype=genotype, weights=weights, history=step.history, train=result, run=run,
                        extra={"selections": selections, "verify": verify})


def alpha_margin(weights: torch.Tensor, space: SearchSpace) -> float | None:
    """softmax(alpha) of the last kept pattern minus that of the first dropped one."""
    ranked = sorted((float(w) for w, n in zip(weights, space.candidates) if n != NONE), reverse=True)
    return ranked[space.k - 1] - ranked[space.k] if len(ranked) > space.k else None


def held_out_halves(loader, device, max_batches: int | None):
    """The validation batches split in two by position: even ones select, odd ones verify, so
    the check of a selection does not read the images that made it."""
    batches = fixed_batches(loader, device)
    select, verify = batches[0::2], batches[1::2] or batches[:1]
    return (select if max_batches is None else select[:max_batches]), verify


def finetune_weights(supernet: Supernet, *, data, config: TrainConfig, steps: int, device) -> None:
    """A few weight steps on the training split (DARTS-PT's tuning between edges), with the
    final learning rate of the run's schedule scaled up to a tenth of its peak."""
    batches = []
    while len(batches) < steps:
        for batch in data.train:
            batches.append(batch)
            if len(batches) >= steps:
                break
    finetune(supernet, batches, config, device, params=supernet.weight_parameters())
    supernet.alphas.grad = None


__all__ = ["ALPHAS", "DartsConfig", "DartsStep", "MODES", "REFERENCES", "SELECTIONS", "SearchResult", "alpha_margin",
           "finetune_weights", "held_out_halves", "model_record", "reference_genotypes", "search"]
