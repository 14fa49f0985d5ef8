"""Shared test helpers, importable from every test folder (``tests`` is on pytest's
``pythonpath``): ``from helpers import run_cli``. Fixtures stay in ``conftest.py``."""
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent   # the repository root
FIXTURES = Path(__file__).resolve().parent / "fixtures"   # anchors/, bad_genotypes/


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m scansearch ARGS` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "scansearch", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


class InterruptAt:
    """A training hook that stands in for a crash or Ctrl-C at the start of an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, ctx):
        if ctx.epoch == self.epoch:
            raise KeyboardInterrupt


def assert_one_line_error(result, *fragments):
    """Exit code 2, one line on stderr naming every fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def make_triton_import_fail(monkeypatch, exc):
    """Make ``import triton`` raise ``exc`` while its spec is still found (triton installed but broken)."""
    import builtins
    import importlib.util

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise exc
        return real(name, *args, **kwargs)

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "triton" else found(name, *a))
    monkeypatch.setattr(builtins, "__import__", fake)


def assert_only_order_three_differs(stats, labels, classes: int = 4):
    """Per statistic (a value per image): the class means of every low-order one agree within
    4 standard errors; those of ``triple`` (order 3, where the classes differ) spread over 20."""
    for name, value in stats.items():
        means = torch.stack([value[labels == k].mean() for k in range(classes)])
        stderr = value.std() / (len(value) / classes) ** 0.5
        if name == "triple":   # order 3 is where the classes differ
            assert (means.max() - means.min()) > 20 * stderr
        else:
            assert (means - value.mean()).abs().max() < 4 * stderr, name
