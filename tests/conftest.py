"""Shared fixtures (the plain helpers they use are in ``helpers.py``)."""
import sys

import pytest
import torch

from helpers import run_cli


@pytest.fixture
def cli():
    return run_cli


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


def pytest_terminal_summary(terminalreporter):
    """The hostile-input suite's count of cases by kind, when it ran."""
    module = sys.modules.get("test_hostile_input")
    counts = getattr(module, "COUNTS", None)
    if counts:
        by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        terminalreporter.write_line(f"hostile input cases: {sum(counts.values())} ({by_kind})")
