"""How a model trains: the settings (:class:`TrainConfig`) and what they build: the seeded
start, the device, the mixed-precision type, AdamW with its parameter groups and the
warm-up plus cosine schedule. The loop that uses them is :mod:`scansearch.train`."""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from scansearch.errors import TrainError


@dataclass
class TrainConfig:
    """Everything that decides a training run. Plain values only: it is stored in checkpoints."""

    epochs: int = 10
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    ema: float | None = None             # EMA decay, e.g. 0.999; None: no EMA
    amp: str = "auto"                    # auto | bf16 | fp16 | off
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:1 ...
    log_every: int = 20                  # steps between progress-bar refreshes
    max_steps_per_epoch: int | None = None  # cut epochs short (quick trials)

    def validate(self) -> None:
        checks = [(self.epochs >= 1, "epochs must be at least 1"),
                  (0 < self.lr < math.inf, "lr must be positive and finite"),
                  (0 <= self.weight_decay < math.inf, "weight_decay must be zero or more and finite"),
                  (0 <= self.warmup_epochs < math.inf, "warmup_epochs must be zero or more and finite"),
                  (0 <= self.min_lr <= self.lr, "min_lr must lie in [0, lr]"),
                  (self.warmup_epochs >= 0, "warmup_epochs must not be negative"),
                  (0 <= self.label_smoothing < 1, "label_smoothing must lie in [0, 1)"),
                  (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or None"),
                  (self.ema is None or 0 < self.ema < 1, "ema must lie in (0, 1) or be None"),
                  (self.amp in ("auto", "bf16", "fp16", "off"), "amp must be auto, bf16, fp16 or off"),
                  (self.log_every >= 1, "log_every must be at least 1"),
                  (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
                   "max_steps_per_epoch must be at least 1 or None")]
        for ok, message in checks:
            if not ok:
                raise TrainError(f"train config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainError(f"train config: unknown settings {unknown}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (when installed) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        np.random.seed(seed % 2**32)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {spec!r} asked for, but CUDA is not available")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" and device.type != "cuda":
        raise TrainError("amp=fp16 needs a CUDA device; use bf16 or off on the CPU")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def build_optimizer(model: nn.Module, config: TrainConfig,
                    param_filter: Callable[[str, nn.Parameter], bool] | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters ``param_filter`` keeps (all by default).

    Biases, norm weights and other 1-D parameters, parameters flagged
    ``_no_weight_decay`` (mamba's ``A_log`` and ``D``) and names listed by
    ``model.no_weight_decay()`` (timm's convention) get no weight decay.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or (param_filter is not None and not param_filter(name, param)):
            continue
        exempt = param.ndim <= 1 or getattr(param, "_no_weight_decay", False) or name in skip
        (no_decay if exempt else decay).append(param)
    if not decay and not no_decay:
        raise TrainError("the model has no trainable parameters (after param_filter)")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


class WarmupCosine:
    """LR factor at step s: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_ratio``.

    A class rather than a closure so that ``LambdaLR`` can save and restore it.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, min(warmup_steps, total_steps), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps - 1)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine; call ``step()`` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio))


__all__ = ["TrainConfig", "WarmupCosine", "autocast_dtype", "build_optimizer", "build_scheduler", "resolve_device",
           "seed_everything"]
