"""The ``cpu`` backend: the compiled scan of ``cpu_scan.c``, same canonical calls as
:mod:`.torch_backend` (``forward``, ``backward``, ``ckpt_shape``, ``last_state``; see its
docstring for the three modes).

Inputs of any float dtype and layout are brought to contiguous float32 first (no copy when
they already are); bf16 and fp16 activations are therefore computed with fp32 states and
sums, and the output comes back in u's dtype. float64 inputs run on the ``torch`` backend's
code (float64 is for tests; the C kernel is float32 only), so results keep fp64 precision.

Work splits over (batch element, channel group) units on torch's OpenMP threads,
``torch.get_num_threads()`` of them; the channel groups are as many as it takes to give
every thread two units. Sums over channels and batch go through per-unit buffers reduced
in a fixed order: repeated calls give bit-identical results.
"""
from __future__ import annotations

import ctypes
import math

import torch

from scansearch.kernels import torch_backend
from scansearch.kernels.alloc import empty
from scansearch.kernels.cpu_build import load
from scansearch.kernels.dispatch import BackendError
from scansearch.kernels.torch_backend import HEADS, MERGE, MODES, PER_DIRECTION, compute_dtype

CHUNK = 16  # steps between checkpoints; the backward recomputes one chunk at a time
_MODE_ID = {MERGE: 0, PER_DIRECTION: 1, HEADS: 2}
_F32 = torch.float32


class _Args(ctypes.Structure):
    """Mirror of ``ScanArgs`` in cpu_scan.c (field order and types must match)."""

    _fields_ = ([(n, ctypes.c_int64) for n in ("batch", "L", "K", "dim", "N", "chunk", "groups", "threads")]
                + [(n, ctypes.c_int32) for n in ("mode", "gather", "u_shared", "softplus")]
                + [(n, ctypes.c_void_p) for n in (
                    "u", "delta", "At", "B", "C", "D", "weights", "bias", "z", "orders", "out", "ysum", "ckpts",
                    "gg", "g_last", "gu", "gdelta", "gB", "gC", "gA", "gD", "gbias", "gw")])


def ckpt_shape(batch: int, L: int, K: int, dim: int, N: int, dtype: torch.dtype) -> tuple[int, ...]:
    """Checkpoints: (batch, K, nchunks, N, dim), the state after every CHUNK steps."""
    if dtype == torch.float64:
        return torch_backend.ckpt_shape(batch, L, K, dim, N, dtype)
    return (batch, K, math.ceil(L / CHUNK), N, dim)


def last_state(ckpts: torch.Tensor) -> torch.Tensor:
    """Final state as (batch, K, dim, N)."""
    if ckpts.dtype == torch.float64:
        return torch_backend.last_state(ckpts)
    return ckpts[:, :, -1].transpose(-1, -2)


def _f32(x):
    return None if x is None else x.to(_F32).contiguous()


def _ptr(x) -> int | None:
    return None if x is None else x.data_ptr()


def _groups(batch: int, dim: int, threads: int, lanes: int) -> int:
    """Channel groups per batch element: enough units for two per thread, at most one per block."""
    blocks = -(-dim // lanes)
    return max(1, min(blocks, -(-2 * threads // batch)))


def _library():
    build = load()
    if not build.ok:

        raise BackendError(f"scan backend 'cpu' cannot run: {build.why}")
    return build


def _prepare(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, mode, build):
    """Contiguous float32 inputs and the argument block shared by forward and backward."""
    if mode not in MODES:
        raise ValueError(f"cpu backend: mode must be one of {MODES}, got {mode!r}")
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    threads = torch.get_num_threads()
    t = {"u": _f32(u), "delta": _f32(delta), "At": A.to(_F32).transpose(1, 2).contiguous(), "B": _f32(B),
         "C": _f32(C), "D": _f32(D), "weights": _f32(weights), "bias": _f32(delta_bias), "z": _f32(z),
         "orders": None if mode == HEADS else orders.to(torch.int64).contiguous()}
    args = _Args(batch=batch, L=L, K=K, dim=dim, N=N, chunk=CHUNK,
                 groups=_groups(batch, dim, threads, build.lanes), threads=threads, mode=_MODE_ID[mode],
                 gather=int(mode != HEADS and not scan_order), u_shared=int(u.dim() == 3),
                 softplus=int(bool(delta_softplus)))
    for name, value in t.items():
        setattr(args, name, _ptr(value))
    return args, t


def _call(fn, args) -> None:
    if fn(ctypes.byref(args)) != 0:
        raise MemoryError("cpu backend: the scan kernel could not allocate its working memory")


def forward(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, mode=MERGE):
    """Canonical forward; see :mod:`.torch_backend`. Returns (out, ysum, ckpts)."""
    if compute_dtype(u, delta, A, B, C) == torch.float64:
        return torch_backend.forward(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus,
                                     scan_order, mode)
    build = _library()
    args, keep = _prepare(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order,
                          mode, build)
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    shape = (batch, L, dim) if mode == MERGE else (batch, L, K, dim)
    out = empty(shape, dtype=_F32, device=u.device)
    ysum = empty(shape, dtype=_F32, device=u.device) if z is not None else u.new_empty(0, dtype=_F32)
    ckpts = empty(ckpt_shape(batch, L, K, dim, N, _F32), dtype=_F32, device=u.device)
    args.out, args.ysum, args.ckpts = out.data_ptr(), _ptr(ysum if z is not None else None), ckpts.data_ptr()
    _call(build.lib.scan_forward, args)
    del keep
    return out.to(u.dtype), ysum, ckpts


def backward(gout, u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order,
             ysum, ckpts, needs, mode=MERGE, g_last=None):
    """Gradients of :func:`forward` for (u, delta, A, B, C, D, weights, delta_bias, z), None where
    ``needs`` says no; ``g_last`` (b, K, dim, N) is the final state's gradient (``selective_scan``)."""
    if compute_dtype(u, delta, A, B, C) == torch.float64:
        return torch_backend.backward(gout, u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus,
                                      scan_order, ysum, ckpts, needs, mode, g_last)
    build = _library()
    args, keep = _prepare(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order,
                          mode, build)
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    G = args.groups
    gout = gout.to(_F32).contiguous()
    gz = None
    if z is not None:  # z contiguous: torch's elementwise kernels round alike whatever z's layout
        gout, gz = torch_backend.gate_backward(gout, keep["z"], ysum, needs[8], z.dtype)
    gg = gout.contiguous()
    new = lambda *shape: empty(shape, dtype=_F32, device=u.device)  # noqa: E731
    gu = new(*u.shape) if needs[0] else None
    gdelta = new(*delta.shape) if needs[1] else None
    gB_p, gC_p, gA_p = new(G, batch, L, K, N), new(G, batch, L, K, N), new(batch, K, N, dim)
    gD_p = new(batch, K, dim) if D is not None and needs[5] else None
    gbias_p = new(batch, K, dim) if delta_bias is not None and needs[7] else None
    gw_p = new(batch, G, K) if weights is not None and needs[6] else None
    gl = None if g_last is None else g_last.to(_F32).transpose(-1, -2).contiguous()
    ck = ckpts.contiguous()
    for name, value in (("gg", gg), ("g_last", gl), ("gu", gu), ("gdelta", gdelta), ("gB", gB_p), ("gC", gC_p),
                        ("gA", gA_p), ("gD", gD_p), ("gbias", gbias_p), ("gw", gw_p), ("ckpts", ck)):
        setattr(args, name, _ptr(value))
    _call(build.lib.scan_backward, args)
    del keep
    cast = lambda g, like: None if g is None else g.to(like.dtype)  # noqa: E731
    gA = gA_p.sum(0).transpose(1, 2).to(A.dtype).contiguous() if needs[2] else None
    gB = cast(gB_p.sum(0) if G > 1 else gB_p[0], B) if needs[3] else None
    gC = cast(gC_p.sum(0) if G > 1 else gC_p[0], C) if needs[4] else None
    gD = cast(gD_p.sum(0), D) if gD_p is not None else None
    gbias = cast(gbias_p.sum(0), delta_bias) if gbias_p is not None else None
    gw = cast(gw_p.sum((0, 1)), weights) if gw_p is not None else None
    return cast(gu, u), cast(gdelta, delta), gA, gB, gC, gD, gw, gbias, gz
