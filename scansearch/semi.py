"""Semi-supervised training, FixMatch style, with RAUM-Net's uncertainty filter.

Each step takes a batch of labeled images and ``unlabeled_ratio`` times as many unlabeled
ones. The unlabeled images' weak view (the data set's own training augmentation) gives
pseudo-labels without gradient; the strong view (``strong_view``: a cut-out rectangle,
brightness, contrast, a shift and noise on top of the weak view) is trained towards them:

    loss = CE(labeled) + lambda_u * mean_over_unlabeled(mask * CE(strong, pseudo-label))

Which pseudo-labels count (``filter``):

* ``uncertainty`` (RAUM-Net): the pseudo-label is the argmax of the MC-dropout mean of
  ``mc_samples`` passes; it is kept when its confidence is at least ``tau`` and its
  uncertainty (mutual information, or predictive entropy) is low: at most
  ``uncertainty_max``, or within the lowest ``uncertainty_quantile`` of the batch;
* ``confidence`` (plain FixMatch): one deterministic pass, kept when its confidence is at
  least ``tau``;
* ``none``: no unlabeled loss and no unlabeled images read; the same labeled batches for
  the same number of steps (the supervised-only baseline at the same budget).

One epoch is one pass over the unlabeled images (the labeled loader cycles). Each epoch's
history records the share of unlabeled images kept (``unlabeled_kept``) and, where their
true labels are known (``--labeled-ratio``), the precision of the kept pseudo-labels
(``pseudo_precision``). ``occlusion`` > 0 also occludes each labeled image by a share
drawn from [0, occlusion] (training augmentation). The views, occluders and MC masks
come from generators seeded by ``(seed, step)``, the training pass's dropout from the
global RNG, which the checkpoint restores: a resumed run replays the steps exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from rich.console import Console

from scansearch.data.occlusion import occlude
from scansearch.errors import TrainError
from scansearch.uncertainty import predict_with_uncertainty, supports_mc

FILTERS = ("uncertainty", "confidence", "none")
UNCERTAINTIES = ("mutual_info", "entropy")
STRONG_CUTOUT = (0.05, 0.3)   # share of the image the strong view's rectangle covers
STRONG_SHIFT = 0.125          # at most this share of the side


@dataclass
class SemiConfig:
    """The semi-supervised settings (stored in the checkpoint; a resumed run must match)."""

    filter: str = "uncertainty"
    tau: float = 0.95
    uncertainty: str = "mutual_info"
    uncertainty_max: float | None = None
    uncertainty_quantile: float | None = 0.5
    mc_samples: int = 8
    unlabeled_ratio: int = 3
    lambda_u: float = 1.0
    occlusion: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        checks = [
            (self.filter in FILTERS, f"--filter must be one of {', '.join(FILTERS)}, got {self.filter!r}"),
            (self.uncertainty in UNCERTAINTIES,
             f"--uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {self.uncertainty!r}"),
            (0 <= self.tau <= 1, f"--tau must lie in [0, 1], got {self.tau}"),
            (self.uncertainty_max is None or self.uncertainty_max >= 0,
             f"--uncertainty-max must not be negative, got {self.uncertainty_max}"),
            (self.uncertainty_quantile is None or 0 < self.uncertainty_quantile <= 1,
             f"--uncertainty-quantile must lie in (0, 1], got {self.uncertainty_quantile}"),
            (self.mc_samples >= 1, f"--mc-samples must be at least 1, got {self.mc_samples}"),
            (self.unlabeled_ratio >= 1, f"--unlabeled-ratio must be at least 1, got {self.unlabeled_ratio}"),
            (self.lambda_u >= 0 and math.isfinite(self.lambda_u), f"--lambda-u must be >= 0, got {self.lambda_u}"),
            (0 <= self.occlusion < 1, f"--occlusion must lie in [0, 1), got {self.occlusion}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)
        if self.filter == "uncertainty" and (self.uncertainty_max is None) == (self.uncertainty_quantile is None):
            raise TrainError("--filter uncertainty needs exactly one of --uncertainty-max and --uncertainty-quantile")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SemiConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 2_000_003 + step * 7_919 + stream * 104_729) % (2**63))


def strong_view(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """FixMatch's strong augmentation on normalised ``(B, C, H, W)`` tensors: a shift of up to
    1/8 of the side (zero-filled), contrast x[0.6, 1.4] and brightness +-0.4 (in std units),
    Gaussian noise (0.1) and a cut-out rectangle over 5-30% of the image."""
    B, C, H, W = images.shape
    device = images.device

    def draw(*shape, low=0.0, high=1.0):
        return torch.empty(shape, dtype=torch.float32).uniform_(low, high, generator=generator).to(device)

    dy = (draw(B, low=-STRONG_SHIFT, high=STRONG_SHIFT) * H).round().long()
    dx = (draw(B, low=-STRONG_SHIFT, high=STRONG_SHIFT) * W).round().long()
    rows = torch.arange(H, device=device)[None, :] - dy[:, None]          # (B, H) source rows
    cols = torch.arange(W, device=device)[None, :] - dx[:, None]
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
    gathered = images[torch.arange(B, device=device)[:, None, None], :, rows.clamp(0, H - 1)[:, :, None],
                      cols.clamp(0, W - 1)[:, None, :]]                   # (B, H, W, C)
    out = gathered.permute(0, 3, 1, 2) * valid[:, None]
    mean = out.mean((1, 2, 3), keepdim=True)
    out = (out - mean) * draw(B, 1, 1, 1, low=0.6, high=1.4) + mean + draw(B, 1, 1, 1, low=-0.4, high=0.4)
    noise = torch.randn((B, C, H, W), generator=generator).to(device)
    out = out + 0.1 * noise
    share = draw(B, low=STRONG_CUTOUT[0], high=STRONG_CUTOUT[1]).cpu()
    return occlude(out, share, generator)


@torch.no_grad()
def pseudo_labels(model, images: torch.Tensor, config: SemiConfig, generator: torch.Generator):
    """(pseudo-labels, kept mask, confidence) of the weak views, by ``config.filter``."""
    if config.filter == "uncertainty":
        result = predict_with_uncertainty(model, images, config.mc_samples, generator=generator)
        confidence, labels = result.mean.max(1)
        uncertainty = result.mutual_info if config.uncertainty == "mutual_info" else result.entropy
        keep = confidence >= config.tau
        if config.uncertainty_max is not None:
            keep &= uncertainty <= config.uncertainty_max
        else:
            keep &= uncertainty <= torch.quantile(uncertainty.float(), config.uncertainty_quantile)  # no float64 on MPS
        return labels, keep, confidence
    was_training = model.training
    model.eval()
    try:
        probs = model(images).float().softmax(1)
    finally:
        model.train(was_training)
    confidence, labels = probs.max(1)
    return labels, confidence >= config.tau, confidence


class SemiLoader:
    """Training steps of semi-supervised learning: ``(labeled images, labels, unlabeled images,
    their true labels or -1)``, or only the labeled pair with ``unlabeled_images=False``. One
    epoch is one pass over the unlabeled loader; the labeled loader cycles, each cycle from
    a seed of its own, so that an epoch replays exactly."""

    def __init__(self, labeled, unlabeled, unlabeled_images: bool = True):
        self.labeled, self.unlabeled, self.unlabeled_images = labeled, unlabeled, unlabeled_images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.unlabeled.set_epoch(epoch)

    @property
    def batch_size(self) -> int:
        return self.labeled.batch_size

    @property
    def num_samples(self) -> int:
        return self.labeled.num_samples

    def __len__(self) -> int:
        return len(self.unlabeled)

    def _labeled_batches(self) -> Iterator:
        cycle = 0
        while True:
            self.labeled.set_epoch(self.epoch * 100_003 + cycle)
            yield from self.labeled
            cycle += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        labeled = self._labeled_batches()
        if not self.unlabeled_images:
            for _ in range(len(self)):
                yield next(labeled)
            return
        for x_u, y_u in self.unlabeled:
            x_l, y_l = next(labeled)
            yield x_l, y_l, x_u, y_u


class SemiSupervised:
    """The step function and the hook ``fit`` takes for semi-supervised training:
    ``fit(model, data, cfg, step_fn=semi.step, hooks=[semi])`` with ``data.train`` a
    :class:`SemiLoader`."""

    def __init__(self, config: SemiConfig, console: Console | None = None):
        config.validate()
        self.config = config
        self.console = console
        self._reset()

    def _reset(self) -> None:
        self.seen = self.kept = self.known_kept = self.correct_kept = 0
        self.known_seen = self.correct_all = 0

    def check_model(self, model) -> None:
        if self.config.filter == "uncertainty" and not supports_mc(model):
            raise TrainError(f"--filter uncertainty needs an MC-dropout head (the raum family); "
                             f"{getattr(getattr(model, 'cfg', None), 'family', type(model).__name__)} has none "
                             f"(use --filter confidence)")

    # -- the step ---------------------------------------------------------------------------------
    def step(self, ctx, batch) -> dict[str, Any]:
        cfg = self.config
        gen = step_generator(cfg.seed, ctx.step)
        x_l, y_l = batch[0], batch[1]
        if cfg.occlusion > 0:
            shares = torch.empty(len(x_l), dtype=torch.float64).uniform_(0, cfg.occlusion, generator=gen)
            x_l = occlude(x_l, shares, gen)
        if cfg.filter == "none":
            with ctx.autocast():
                logits = ctx.model(x_l)
                loss = ctx.loss_fn(logits.float(), y_l)
            ctx.backward_step(loss)
            return {"loss": loss.detach(), "correct": (logits.argmax(1) == y_l).sum(), "count": len(y_l)}
        x_u, y_u = batch[2], batch[3]
        with ctx.autocast():
            pseudo, keep, _ = pseudo_labels(ctx.model, x_u, cfg, gen)
        self._count(pseudo, keep, y_u)
        x_s = strong_view(x_u, gen)
        with ctx.autocast():
            logits = ctx.model(torch.cat([x_l, x_s])).float()
            logits_l, logits_s = logits[:len(x_l)], logits[len(x_l):]
            loss_l = ctx.loss_fn(logits_l, y_l)
            loss_u = (F.cross_entropy(logits_s, pseudo, reduction="none") * keep.float()).mean()
            loss = loss_l + cfg.lambda_u * loss_u
        ctx.backward_step(loss)
        return {"loss": loss.detach(), "correct": (logits_l.argmax(1) == y_l).sum(), "count": len(y_l)}

    def _count(self, pseudo: torch.Tensor, keep: torch.Tensor, truth: torch.Tensor) -> None:
        known = truth >= 0
        right = (pseudo == truth) & known
        self.seen += len(keep)
        self.kept += int(keep.sum())
        self.known_seen += int(known.sum())
        self.correct_all += int(right.sum())
        self.known_kept += int((keep & known).sum())
        self.correct_kept += int((keep & right).sum())

    # -- hooks ------------------------------------------------------------------------------------
    def on_fit_start(self, ctx) -> None:
        self.check_model(ctx.model)

    def on_epoch_start(self, ctx) -> None:
        self._reset()

    def on_epoch_end(self, ctx, record: dict[str, Any]) -> None:
        if self.config.filter == "none":
            return
        record["unlabeled_kept"] = self.kept / self.seen if self.seen else 0.0
        record["pseudo_precision"] = self.correct_kept / self.known_kept if self.known_kept else None
        record["pseudo_accuracy_all"] = self.correct_all / self.known_seen if self.known_seen else None
        if self.console is not None:
            precision = record["pseudo_precision"]
            text = "unknown labels" if self.known_seen == 0 else (
                "-" if precision is None else f"{precision:.1%}")
            self.console.print(f"  pseudo-labels ({self.config.filter}): kept {record['unlabeled_kept']:.1%} of "
                               f"{self.seen:,} unlabeled images, precision {text}", highlight=False)

    def state_dict(self) -> dict[str, Any]:
        return {"semi": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("semi", {})
        current = self.config.to_dict()
        changed = sorted(k for k in current if saved.get(k) != current[k])
        if changed:
            k = changed[0]
            raise TrainError(f"the checkpoint was written with {k}={saved.get(k)!r}, this run says {current[k]!r}")
