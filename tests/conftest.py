"""Shared test helpers: drive the command line as a user would, in a subprocess."""
import os
import subprocess
import sys

import pytest
import torch


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


@pytest.fixture
def cli():
    return run_cli


def assert_one_line_error(result, *fragments):
    """Exit code 2, one line on stderr naming every fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a 2-core machine whose other
    core is busy wait on each other (a 0.5 s fit took 17 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def short_chunks(monkeypatch):
    """Checkpoints every 3 steps on the CPU backends: chunk boundaries everywhere and a partial
    last chunk."""
    from scansearch.kernels import cpu_backend, torch_scan

    monkeypatch.setattr(torch_scan, "_CHUNK_MIN", 3)
    monkeypatch.setattr(torch_scan, "_CHUNK_MAX", 3)
    monkeypatch.setattr(cpu_backend, "CHUNK", 3)


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


def pytest_terminal_summary(terminalreporter):
    """The hostile-input suite's count of cases by kind, when it ran."""
    module = sys.modules.get("test_hostile_input")
    counts = getattr(module, "COUNTS", None)
    if counts:
        by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        terminalreporter.write_line(f"hostile input cases: {sum(counts.values())} ({by_kind})")
