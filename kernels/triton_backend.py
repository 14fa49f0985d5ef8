"""The ``triton`` backend: launchers for the fused kernels, same canonical calls as
:mod:`.torch_backend` (``forward``, ``backward``, ``ckpt_shape``, ``last_state``).

Kernels are imported on first use, not at module import: compiling them must
happen after ``TRITON_INTERPRET`` is settled.
"""
from __future__ import annotations

import math
import sys

import torch

from scansearch.kernels.alloc import empty
from scansearch.kernels.torch_backend import HEADS, MERGE, MODES, PER_DIRECTION, compute_dtype

_KERNELS = f"{__package__}.triton_scan"


def compiled_without_interpreter() -> bool:
    """True when the kernels were already compiled for the GPU (TRITON_INTERPRET unset)."""
    mod = sys.modules.get(_KERNELS)
    return mod is not None and not mod.INTERPRETED


def _kernels():
    from scansearch.kernels import triton_scan, triton_scan_bwd

    return triton_scan, triton_scan_bwd


def _bwd_block_d() -> int:
    # fixed, not autotuned: the partial-sum buffers are sized by the number of channel blocks
    return 4 if _kernels()[0].INTERPRETED else 16


def ckpt_shape(batch: int, L: int, K: int, dim: int, N: int, dtype: torch.dtype) -> tuple[int, ...]:
    """Checkpoints: (batch, K, nchunks, N, dim), the state after every CHUNK steps."""
    return (batch, K, math.ceil(L / _kernels()[0].CHUNK), N, dim)


def last_state(ckpts: torch.Tensor) -> torch.Tensor:
    """Final state as (batch, K, dim, N)."""
    return ckpts[:, :, -1].transpose(-1, -2)


def _s4(x) -> tuple[int, int, int, int]:
    """(b, t, k, c) strides; a tensor shared by all directions, (b, t, c), gets k-stride 0."""
    if x is None:
        return (0, 0, 0, 0)
    s = x.stride()
    return (s[0], s[1], 0, s[2]) if x.dim() == 3 else tuple(s)


def _s2(x) -> tuple[int, int]:
    return (0, 0) if x is None else tuple(x.stride())


def _acc_type(ct):
    import triton.language as tl

    return tl.float64 if ct == torch.float64 else tl.float32


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"triton backend: mode must be one of {MODES}, got {mode!r}")


def forward(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, mode=MERGE):
    """Canonical forward (see :mod:`.torch_backend`). Returns (out, ysum, ckpts)."""
    _check_mode(mode)
    fwd, _ = _kernels()
    import triton

    ct = compute_dtype(u, delta, A, B, C)
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    merge = mode == MERGE
    shape = (batch, L, dim) if merge else (batch, L, K, dim)
    out = empty(shape, dtype=u.dtype, device=u.device)
    # merge: an fp32 accumulator across directions (the output itself when it is one);
    # per direction or head: the pre-gate output, kept only when z needs it for backward.
    if merge and (z is not None or out.dtype != ct):
        acc = empty(shape, dtype=ct, device=u.device)
    elif not merge and z is not None:
        acc = empty(shape, dtype=ct, device=u.device)
    else:
        acc = out
    ckpts = empty(ckpt_shape(batch, L, K, dim, N, ct), dtype=ct, device=u.device)
    ords = orders.to(torch.int32).contiguous() if mode != HEADS else u  # heads read no table
    grid = lambda meta: (triton.cdiv(dim, meta["BLOCK_D"]), batch)  # noqa: E731
    fwd.multi_scan_fwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else u, delta_bias if delta_bias is not None else u, ords,
        weights if weights is not None else u, z if z is not None else u, acc, out, ckpts,
        L, K, dim, N,
        *_s4(u), *_s4(delta), *A.stride(), *_s4(B), *_s4(C), *_s2(D), *_s2(delta_bias), *_s4(z),
        *_s4(acc), *_s4(out), *ckpts.stride(),
        CHUNK=fwd.CHUNK, GATHER=mode != HEADS and not scan_order, MERGE=merge,
        UNPERMUTE=mode == PER_DIRECTION,
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        HAS_W=weights is not None, HAS_Z=z is not None, STORE_ACC=acc is not out, ACC=_acc_type(ct),
    )
    ysum = acc if z is not None else u.new_empty(0, dtype=ct)
    return out, ysum, ckpts


def backward(gout, u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order,
             ysum, ckpts, needs, mode=MERGE, g_last=None):
    """Canonical backward (see :mod:`.torch_backend`): the 9 gradients, None where not needed."""
    _check_mode(mode)
    fwd, bwd = _kernels()
    import triton

    ct = compute_dtype(u, delta, A, B, C)
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    gy = gout.to(ct)
    gz = None
    if z is not None:  # the gate is elementwise: its gradient needs no kernel
        zc = z.to(ct)
        sig = torch.sigmoid(zc)
        if needs[8]:
            gyz = gy * ysum
            if zc.dim() < gyz.dim():  # one gate shared by the K per-direction outputs
                gyz = gyz.sum(2)
            gz = (gyz * sig * (1 + zc * (1 - sig))).to(z.dtype)
        gy = gy * (zc * sig if zc.dim() == gy.dim() else (zc * sig)[:, :, None])
    merge = mode == MERGE
    gather = mode != HEADS and not scan_order
    need_gw = weights is not None and needs[6]
    block_d = _bwd_block_d()
    n_dblocks = triton.cdiv(dim, block_d)
    block_n = triton.next_power_of_2(N)
    dev = u.device
    new = lambda *shape: empty(shape, dtype=ct, device=dev)  # noqa: E731
    gu = new(batch, L, dim) if u.dim() == 3 else new(batch, L, K, dim)
    gdt = new(batch, L, K, dim)
    gB_part, gC_part = new(n_dblocks, batch, L, K, N), new(n_dblocks, batch, L, K, N)
    gA_part = new(batch, K, dim, N)
    gD_part = new(batch, K, dim) if D is not None else None
    gw_part = new(batch, n_dblocks, K) if need_gw else None
    glast = g_last.to(ct) if g_last is not None else None
    ords = orders.to(torch.int32).contiguous() if mode != HEADS else u
    bwd.multi_scan_bwd_kernel[(n_dblocks, batch)](
        u, delta, A, B, C, D if D is not None else u, delta_bias if delta_bias is not None else u, ords,
        weights if weights is not None else u, gy, ckpts, glast if glast is not None else u,
        gu, gdt, gB_part, gC_part, gA_part, gD_part if D is not None else u, gw_part if need_gw else u,
        L, K, dim, N,
        *_s4(u), *_s4(delta), *A.stride(), *_s4(B), *_s4(C), *_s2(D), *_s2(delta_bias), *_s4(gy),
        *ckpts.stride(),
        *(glast.stride() if glast is not None else (0, 0, 0, 0)),
        *_s4(gu), *_s4(gdt), *gB_part.stride(), *gC_part.stride(), *gA_part.stride(),
        *(gD_part.stride() if D is not None else (0, 0, 0)), *(gw_part.stride() if need_gw else (0, 0, 0)),
        CHUNK=fwd.CHUNK, BLOCK_N=block_n, BLOCK_D=block_d, GATHER=gather, MERGE=merge,
        UNPERMUTE=mode == PER_DIRECTION,
        HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        HAS_W=weights is not None, HAS_GLAST=glast is not None, NEED_GW=need_gw, ACC=_acc_type(ct),
    )
    gD = gD_part.sum(0).to(D.dtype) if D is not None and needs[5] else None
    gw = gw_part.sum((0, 1)).to(weights.dtype) if need_gw else None
    gbias = gdt.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None and needs[7] else None
    return (gu.to(u.dtype) if needs[0] else None,
            gdt.to(delta.dtype) if needs[1] else None,
            gA_part.sum(0).to(A.dtype) if needs[2] else None,
            gB_part.sum(0).to(B.dtype) if needs[3] else None,
            gC_part.sum(0).to(C.dtype) if needs[4] else None,
            gD, gw, gbias, gz)
