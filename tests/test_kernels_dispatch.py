"""Backend choice: defaults, overrides, errors, logging, report."""
import logging

import pytest
import torch

from scansearch.kernels import (
    BackendError,
    available_backends,
    backend_report,
    multi_scan,
    resolve_backend,
    selective_scan,
)
from scansearch.kernels import dispatch
from scansearch.kernels.testing import make_multi_scan_inputs


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("SCANSEARCH_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "_logged", set())


def test_default_is_torch_on_cpu():
    assert resolve_backend(torch.zeros(1)) == "torch"


def test_explicit_argument_wins(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "torch")
    assert resolve_backend(torch.zeros(1), "reference") == "reference"


def test_env_override(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "reference")
    assert resolve_backend(torch.zeros(1)) == "reference"
    monkeypatch.setenv("SCANSEARCH_BACKEND", "")
    assert resolve_backend(torch.zeros(1)) == "torch"


def test_env_override_reaches_the_scan(monkeypatch):
    x, orders = make_multi_scan_inputs(1, 2, 2, 2, 3, 2, seed=0)
    calls = []
    import scansearch.kernels.api as api

    monkeypatch.setattr(api, "multi_scan_ref", lambda *a, **k: calls.append(1) or a[0])
    monkeypatch.setenv("SCANSEARCH_BACKEND", "reference")
    multi_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders)
    assert calls == [1]


@pytest.mark.parametrize("via_env", [False, True])
def test_unknown_backend_lists_valid_names(monkeypatch, via_env):
    if via_env:
        monkeypatch.setenv("SCANSEARCH_BACKEND", "cuda")
        backend = None
    else:
        backend = "cuda"
    with pytest.raises(BackendError, match="unknown scan backend 'cuda'.*valid: reference, torch, triton"):
        resolve_backend(torch.zeros(1), backend)


def test_triton_on_cpu_without_interpreter_raises():
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1") as err:
        resolve_backend(torch.zeros(1), "triton")
    assert "\n" not in str(err.value)
    assert isinstance(err.value, RuntimeError)
    x, orders = make_multi_scan_inputs(1, 2, 2, 2, 3, 2, seed=0)
    with pytest.raises(BackendError):  # never a silent fallback to another backend
        multi_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders, backend="triton")
    u = torch.randn(1, 3, 4)
    with pytest.raises(BackendError):
        selective_scan(u, u, -torch.rand(3, 2), torch.randn(1, 2, 4), torch.randn(1, 2, 4), backend="triton")


def test_env_triton_on_cpu_raises(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "triton")
    with pytest.raises(BackendError, match="cannot run"):
        resolve_backend(torch.zeros(1))


def test_choice_logged_once_per_backend_and_device(caplog):
    with caplog.at_level(logging.INFO, logger="scansearch.kernels"):
        for _ in range(3):
            resolve_backend(torch.zeros(1))
        resolve_backend(torch.zeros(1), "reference")
        resolve_backend(torch.zeros(1), "reference")
    messages = [r.getMessage() for r in caplog.records if r.name == "scansearch.kernels"]
    assert messages == ["selective scan backend 'torch' for cpu tensors",
                        "selective scan backend 'reference' for cpu tensors"]


def test_available_backends_and_report(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "torch")
    backends = available_backends()
    assert backends["reference"] == "ok" and backends["torch"] == "ok"
    assert isinstance(backends["triton"], str) and backends["triton"]
    report = backend_report()
    assert report["torch"] == torch.__version__
    assert report["default_backend_cpu"] == "torch" and report["default_backend_cuda"] == "triton"
    assert report["SCANSEARCH_BACKEND"] == "torch" and report["TRITON_INTERPRET"] is None
    for key in ("triton", "cuda_available", "device_name", "backends"):
        assert key in report
