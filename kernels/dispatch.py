"""Which backend runs a scan: explicit argument, else ``SCANSEARCH_BACKEND``, else by device.

Defaults: ``triton`` for CUDA tensors; ``cpu`` (the compiled scan) for CPU tensors where
it builds, else ``torch``, and float64 CPU tensors on ``torch`` (the compiled scan is
float32). A backend asked for by name that cannot run raises :class:`BackendError` with
the reason. The one default that can change, the compiled CPU scan missing (no compiler,
a failed build), is never silent: the first such scan logs a warning with the reason,
and ``scansearch doctor`` shows it. The choice is logged once per (backend, device type)
on the ``scansearch.kernels`` logger.
"""
from __future__ import annotations

import importlib.util
import logging
import os

import torch

from scansearch.errors import InputError
from scansearch.kernels.cpu_build import cache_dir, load

BACKENDS = ("reference", "torch", "cpu", "triton")
ENV_BACKEND = "SCANSEARCH_BACKEND"
ENV_INTERPRET = "TRITON_INTERPRET"

logger = logging.getLogger("scansearch.kernels")
_logged: set[tuple[str, str]] = set()


class BackendError(InputError, RuntimeError):
    """A requested scan backend cannot run here (the message says why, in one line)."""


def _interpret() -> bool:
    return os.environ.get(ENV_INTERPRET, "") == "1"


def _triton_import() -> tuple[str | None, str | None]:
    """(triton's version, None) when it imports, else (None, why not in one line): "not
    installed" only when there is no triton to import; otherwise the import's own error,
    since a broken install (a missing libcuda, a mismatched torch) needs a different fix."""
    try:
        missing = importlib.util.find_spec("triton") is None
    except (ImportError, ValueError) as exc:  # a half-imported or stubbed triton in sys.modules
        return None, f"triton cannot be found: {_one_line(exc)}"
    if missing:
        return None, "triton is not installed (pip install triton)"
    try:
        import triton
    except Exception as exc:
        return None, f"triton fails to import: {_one_line(exc)}"
    return getattr(triton, "__version__", "unknown"), None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _triton_problem(device_type: str) -> str | None:
    """Why the triton backend cannot run on ``device_type`` tensors (None if it can)."""
    version, why = _triton_import()
    if version is None:
        return why
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        return None
    if device_type == "cpu":
        if not _interpret():
            return (f"triton needs CUDA tensors; for CPU tensors set {ENV_INTERPRET}=1 "
                    f"before the first scan (the Triton interpreter, slow, for testing)")
        from scansearch.kernels import triton_backend  # no triton import at module level

        if triton_backend.compiled_without_interpreter():
            return (f"{ENV_INTERPRET}=1 was set after the Triton kernels were compiled; "
                    f"set it before importing scansearch.kernels' Triton kernels")
        return None
    return f"triton does not run on {device_type} tensors"


def constant_to_compiler(fn):
    """What ``torch.compiler.assume_constant_result`` does (mark ``fn`` so that torch.compile calls
    it while tracing and uses its result as a constant), without that function's import of
    torch._dynamo, which costs every command line about 2 s. A test checks that torch still
    marks functions this way."""
    fn._dynamo_marked_constant = True
    return fn


@constant_to_compiler  # built (or not) once per process: a constant to a traced graph
def _cpu_build_problem() -> str | None:

    build = load()
    return None if build.ok else build.why


def _cpu_problem(device_type: str) -> str | None:
    """Why the compiled ``cpu`` backend cannot run on ``device_type`` tensors (None if it can).
    Builds the library on the first call of the process (see :mod:`.cpu_build`)."""
    if device_type != "cpu":
        return f"the compiled CPU scan runs on CPU tensors, not {device_type}"
    return _cpu_build_problem()


def available_backends() -> dict[str, str]:
    """Backend name -> "ok", or the reason it cannot run here (for the default device:
    CUDA when available, else CPU; ``cpu`` is always judged for CPU tensors)."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "reference": "ok",
        "torch": "ok",
        "cpu": _cpu_problem("cpu") or "ok",
        "triton": _triton_problem(device_type) or "ok",
    }


def _requested(backend: str | None) -> str | None:
    name = backend if backend is not None else os.environ.get(ENV_BACKEND) or None
    if name is not None and name not in BACKENDS:
        source = "backend argument" if backend is not None else f"{ENV_BACKEND}"
        raise BackendError(f"unknown scan backend {name!r} (from {source}); valid: {', '.join(BACKENDS)}")
    return name


def default_backend(device_type: str, dtype: torch.dtype = torch.float32) -> str:
    """The backend chosen for tensors on ``device_type`` when nothing overrides it."""
    if device_type == "cuda":
        return "triton"
    if device_type == "cpu" and dtype != torch.float64 and _cpu_problem("cpu") is None:
        return "cpu"
    return "torch"


def resolve_backend(tensor: torch.Tensor, backend: str | None = None) -> str:
    """The backend that will run a scan on ``tensor``'s device; raises BackendError if it cannot."""
    device_type = tensor.device.type
    name = _requested(backend) or default_backend(device_type, tensor.dtype)
    problem = None
    if name == "triton":
        problem = _triton_problem(device_type)
    elif name == "cpu":
        problem = _cpu_problem(device_type)
    if problem is not None:
        raise BackendError(f"scan backend {name!r} cannot run: {problem}")
    if not torch.compiler.is_compiling() and (name, device_type) not in _logged:
        _logged.add((name, device_type))
        missing = _cpu_problem("cpu") if device_type == "cpu" and name == "torch" else None
        if missing is not None and tensor.dtype != torch.float64:
            logger.warning("selective scans on CPU tensors run on the slower 'torch' backend: the compiled "
                           "CPU scan is unavailable (%s); `scansearch doctor` says more", missing)
        else:
            logger.info("selective scan backend %r for %s tensors", name, device_type)
    return name


def backend_report() -> dict:
    """Everything ``scansearch doctor`` shows about the scan kernels."""
    cuda = torch.cuda.is_available()
    triton_version, triton_error = _triton_import()
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_error": triton_error,
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "default_backend_cpu": default_backend("cpu"),
        "cpu_build": _cpu_build_report(),
        "default_backend_cuda": default_backend("cuda"),
        "backends": available_backends(),
        ENV_BACKEND: os.environ.get(ENV_BACKEND),
        ENV_INTERPRET: os.environ.get(ENV_INTERPRET),
    }


def _cpu_build_report() -> dict:
    """What the compiled CPU scan was built with, or why it was not."""

    build = load()
    return {"ok": build.ok, "why": build.why, "path": build.path, "compiler": build.compiler,
            "flags": " ".join(build.flags), "isa": build.isa, "lanes": build.lanes, "openmp": build.openmp,
            "threads": torch.get_num_threads(), "cache_dir": str(cache_dir())}
