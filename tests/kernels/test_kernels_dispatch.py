"""Backend choice: defaults, overrides, errors, logging, report.

The behaviour depends on the host (CUDA or not, triton importable or not); tests that
name a host pin it with monkeypatch, so each checks the same thing on every host.
"""
import importlib.util
import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import make_triton_import_fail

from scansearch.kernels import (
    BackendError,
    available_backends,
    backend_report,
    multi_scan,
    resolve_backend,
    selective_scan,
)
from scansearch.kernels import cpu_build, dispatch
from scansearch.kernels.testing import make_multi_scan_inputs


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("SCANSEARCH_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "_logged", set())


def _host(monkeypatch, cuda: bool, triton: str | None = "3.9.0"):
    """Pretend CUDA is (not) available and triton imports (or not; ``triton`` is its version)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    why = None if triton else "triton is not installed (pip install triton)"
    monkeypatch.setattr(dispatch, "_triton_import", lambda: (triton, why))


def _cuda_tensor():
    # resolve_backend reads only the device and dtype
    return SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)


NO_COMPILER = "no C compiler found ($CC unset; none of cc, gcc, clang on PATH)"


def _no_compiled_scan(monkeypatch):
    """Pretend the compiled CPU scan failed to build, as on a machine without a compiler."""
    monkeypatch.setattr(cpu_build, "_build", cpu_build.Build(lib=None, why=NO_COMPILER))


@pytest.mark.parametrize("cuda", [False, True])
def test_default_on_cpu_is_the_compiled_scan(monkeypatch, cuda):
    _host(monkeypatch, cuda)
    assert resolve_backend(torch.zeros(1)) == "cpu"
    assert resolve_backend(torch.zeros(1, dtype=torch.bfloat16)) == "cpu"
    assert resolve_backend(torch.zeros(1, dtype=torch.float64)) == "torch"  # the compiled scan is fp32


def test_without_the_compiled_scan_cpu_tensors_run_on_torch_and_say_why(monkeypatch, caplog):
    _no_compiled_scan(monkeypatch)
    with caplog.at_level(logging.INFO, logger="scansearch.kernels"):
        for _ in range(3):
            assert resolve_backend(torch.zeros(1)) == "torch"
    records = [r for r in caplog.records if r.name == "scansearch.kernels"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].getMessage() == (
        f"selective scans on CPU tensors run on the slower 'torch' backend: the compiled CPU scan is "
        f"unavailable ({NO_COMPILER}); `scansearch doctor` says more")
    with pytest.raises(BackendError) as err:  # asked for by name: an error, not a fallback
        resolve_backend(torch.zeros(1), "cpu")
    assert str(err.value) == f"scan backend 'cpu' cannot run: {NO_COMPILER}"
    assert available_backends()["cpu"] == NO_COMPILER
    report = backend_report()
    assert report["default_backend_cpu"] == "torch"
    assert report["cpu_build"]["ok"] is False and report["cpu_build"]["why"] == NO_COMPILER


def test_compiled_scan_refuses_cuda_tensors(monkeypatch):
    _host(monkeypatch, cuda=True)
    with pytest.raises(BackendError, match="^scan backend 'cpu' cannot run: the compiled CPU scan runs on CPU "
                                           "tensors, not cuda$"):
        resolve_backend(_cuda_tensor(), "cpu")


def test_default_is_triton_on_cuda(monkeypatch):
    _host(monkeypatch, cuda=True)
    assert resolve_backend(_cuda_tensor()) == "triton"
    _host(monkeypatch, cuda=False)
    with pytest.raises(BackendError, match="scan backend 'triton' cannot run: CUDA is not available"):
        resolve_backend(_cuda_tensor())
    _host(monkeypatch, cuda=True, triton=None)
    with pytest.raises(BackendError, match=r"triton is not installed \(pip install triton\)"):
        resolve_backend(_cuda_tensor())


def test_explicit_argument_wins(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "torch")
    assert resolve_backend(torch.zeros(1), "reference") == "reference"


def test_env_override(monkeypatch):
    monkeypatch.setenv("SCANSEARCH_BACKEND", "reference")
    assert resolve_backend(torch.zeros(1)) == "reference"
    monkeypatch.setenv("SCANSEARCH_BACKEND", "")
    assert resolve_backend(torch.zeros(1)) == "cpu"


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
    with pytest.raises(BackendError, match="unknown scan backend 'cuda'.*valid: reference, torch, cpu, triton"):
        resolve_backend(torch.zeros(1), backend)


@pytest.mark.parametrize("cuda", [False, True])
def test_triton_on_cpu_without_interpreter_raises(monkeypatch, cuda):
    _host(monkeypatch, cuda)
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
    assert messages == ["selective scan backend 'cpu' for cpu tensors",
                        "selective scan backend 'reference' for cpu tensors"]


@pytest.mark.parametrize("cuda", [False, True])
def test_available_backends_and_report(monkeypatch, cuda):
    _host(monkeypatch, cuda)
    monkeypatch.setenv("SCANSEARCH_BACKEND", "torch")
    needs_cuda = "triton needs CUDA tensors; for CPU tensors set TRITON_INTERPRET=1"
    backends = available_backends()
    assert backends["reference"] == "ok" and backends["torch"] == "ok" and backends["cpu"] == "ok"
    assert (backends["triton"] == "ok") if cuda else backends["triton"].startswith(needs_cuda)
    report = backend_report()
    build = report.pop("cpu_build")
    assert build["ok"] and build["isa"] and build["lanes"] >= 1 and build["threads"] == torch.get_num_threads()
    assert report == {
        "torch": torch.__version__, "triton": "3.9.0", "triton_error": None, "cuda_available": cuda,
        "device_name": "Fake GPU" if cuda else "cpu", "default_backend_cpu": "cpu",
        "default_backend_cuda": "triton", "backends": backends, "SCANSEARCH_BACKEND": "torch",
        "TRITON_INTERPRET": None,
    }
    _host(monkeypatch, cuda, triton=None)
    assert available_backends()["triton"] == "triton is not installed (pip install triton)"
    assert backend_report()["triton"] is None


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("exc, reason", [
    (ImportError("libcuda.so: cannot open shared object file"),
     "triton fails to import: ImportError: libcuda.so: cannot open shared object file"),
    (RuntimeError("Triton requires CUDA 12\n(second line of the message)"),
     "triton fails to import: RuntimeError: Triton requires CUDA 12"),
    (OSError(), "triton fails to import: OSError"),
], ids=["ImportError", "RuntimeError", "empty-message"])
def test_triton_import_failure_reported_with_its_reason(monkeypatch, cuda, exc, reason):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    make_triton_import_fail(monkeypatch, exc)
    assert available_backends()["triton"] == reason
    report = backend_report()
    assert report["triton"] is None and report["triton_error"] == reason
    assert report["backends"]["triton"] == reason
    for tensor in (_cuda_tensor(), torch.zeros(1)):
        with pytest.raises(BackendError) as err:
            resolve_backend(tensor, "triton")
        assert str(err.value) == f"scan backend 'triton' cannot run: {reason}"


def test_not_installed_only_when_missing(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else found(name, *a))
    assert available_backends()["triton"] == "triton is not installed (pip install triton)"
    assert backend_report()["triton_error"] == "triton is not installed (pip install triton)"
