"""Run the command line with a fault planted at a chosen point: a SIGKILL, or a weight made
NaN or infinite. For tests/core/test_crash_recovery.py, which runs it as a subprocess:

    python crash_child.py FAULT -- search --out RUN ...

FAULT is one of

* ``checkpoint:E`` -- SIGKILL right after the checkpoint of epoch ``E`` is on disk;
* ``step:E:S`` -- SIGKILL after step ``S`` of epoch ``E`` (1-based), before its checkpoint;
* ``replace:NAME:N`` -- SIGKILL before the ``N``-th rename from or onto a path named ``NAME``
  (the temporary file or folder is complete, the rename not done);
* ``nan-start:E`` -- a weight filled with NaN at the start of epoch ``E`` (the loss goes NaN);
* ``inf-end:E`` -- a weight filled with inf after the last step of epoch ``E`` (every loss of
  the epoch was finite, the weights are not);
* ``evaluate:N`` -- SIGKILL during the ``N``-th genotype evaluation of an Optuna study.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Fault:
    """A training hook that kills the process or poisons a weight at one point of ``fit``."""

    def __init__(self, kind: str, epoch: int, step: int = 0):
        self.kind, self.epoch, self.step = kind, epoch, step

    def on_epoch_start(self, ctx):
        if self.kind == "nan-start" and ctx.epoch + 1 == self.epoch:
            poison(ctx.model, float("nan"))

    def on_step_end(self, ctx, out):
        if ctx.epoch + 1 != self.epoch:
            return
        in_epoch = ctx.step - ctx.epoch * ctx.steps_per_epoch
        if self.kind == "step" and in_epoch == self.step:
            die()
        if self.kind == "inf-end" and in_epoch == ctx.steps_per_epoch:
            poison(ctx.model, float("inf"))


def poison(model: torch.nn.Module, value: float) -> None:
    """Fill the patch embedding's weight with ``value`` (a weight, not a supernet's alphas)."""
    with torch.no_grad():
        weight = next(p for name, p in model.named_parameters() if name.endswith("patch_embed.weight"))
        weight.fill_(value)


def install(spec: str) -> None:
    kind, *numbers = spec.split(":")
    import scansearch.train as train

    if kind == "checkpoint":
        epoch = int(numbers[0])
        real_save = train.save_checkpoint

        def save_then_die(path, state):
            written = real_save(path, state)
            if state.get("epoch") == epoch:
                die()
            return written

        train.save_checkpoint = save_then_die
    elif kind in ("step", "nan-start", "inf-end"):
        fault = Fault(kind, *map(int, numbers))
        real_fit = train.fit

        def fit_with_fault(*args, hooks=(), **kwargs):
            return real_fit(*args, hooks=[*hooks, fault], **kwargs)

        import scansearch.searchers.darts as darts

        train.fit = darts.fit = fit_with_fault
    elif kind == "replace":
        name, count = numbers[0], int(numbers[1])
        import scansearch.fileio as fileio

        seen = [0]

        def or_die(rename):
            def rename_or_die(src, dst, *args, **kwargs):
                if name in (Path(src).name, Path(dst).name):
                    seen[0] += 1
                    if seen[0] == count:
                        die()
                return rename(src, dst, *args, **kwargs)
            return rename_or_die

        os.replace = or_die(os.replace)
        fileio.exchange = or_die(fileio.exchange)  # the one-step swap of a folder, where there is one
    elif kind == "evaluate":
        from scansearch.searchers.zero_cost import ZeroCost

        count, calls, real_call = int(numbers[0]), [0], ZeroCost.__call__

        def evaluate_or_die(self, layers, trial=None):
            calls[0] += 1
            if calls[0] == count:
                die()
            return real_call(self, layers, trial)

        ZeroCost.__call__ = evaluate_or_die
    else:
        raise SystemExit(f"crash_child: unknown fault {spec!r}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit("usage: crash_child.py FAULT -- SCANSEARCH_ARGS...")
    install(sys.argv[1])
    from scansearch.cli import main

    sys.exit(main(sys.argv[3:]))
