"""`scansearch doctor` in-process: why the triton backend cannot run, as the user sees it."""
import importlib.util
import io
import json

import pytest
import torch
from helpers import make_triton_import_fail
from rich.console import Console

from scansearch.cli import doctor, main


@pytest.fixture
def output(monkeypatch):
    """The doctor's table output, wide enough that no reason wraps."""
    buffer = io.StringIO()
    monkeypatch.setattr(doctor, "console", Console(file=buffer, width=250))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return buffer


def _triton_row(text):
    """The triton row of the "scan backends" table (the installation table, after it, has one too)."""
    backends = text.split("installation")[0]
    rows = [line for line in backends.splitlines() if line.startswith("│ triton ")]
    assert len(rows) == 1, text
    return rows[0]


@pytest.mark.parametrize("exc, reason", [
    (ImportError("libcuda.so: cannot open [errno 2]"),
     "triton fails to import: ImportError: libcuda.so: cannot open [errno 2]"),
    (RuntimeError("version mismatch\nmore detail"), "triton fails to import: RuntimeError: version mismatch"),
], ids=["ImportError", "RuntimeError"])
def test_doctor_shows_why_triton_fails_to_import(monkeypatch, output, capsys, exc, reason):
    make_triton_import_fail(monkeypatch, exc)
    assert main(["doctor"]) == 0
    row = _triton_row(output.getvalue())
    assert reason in row and "not installed" not in row
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"]["triton"] == reason and data["triton_error"] == reason and data["triton"] is None


def test_doctor_not_installed_only_when_missing(monkeypatch, output):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else found(name, *a))
    assert main(["doctor"]) == 0
    assert "triton is not installed (pip install triton)" in _triton_row(output.getvalue())
