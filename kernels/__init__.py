"""Selective scans: one direction (mamba's signature) and K directions in image order, merged
(weighted sum) or each on its own (``multi_scan(..., merge=False)``).

Backends: ``reference`` (readable loops, the oracle), ``torch`` (vectorised CPU
path with a hand-written backward), ``triton`` (fused CUDA kernels; CPU tensors
under ``TRITON_INTERPRET=1``). See :func:`resolve_backend` for how one is chosen.
"""
from scansearch.kernels.api import multi_scan, selective_scan
from scansearch.kernels.dispatch import BackendError, available_backends, backend_report, resolve_backend
from scansearch.kernels.reference import multi_scan_ref, selective_scan_ref
from scansearch.kernels.validate import OrderError

__all__ = [
    "BackendError",
    "OrderError",
    "available_backends",
    "backend_report",
    "multi_scan",
    "multi_scan_ref",
    "resolve_backend",
    "selective_scan",
    "selective_scan_ref",
]
