"""Fused multi-direction selective scan, forward (Triton).

One program per (channel block, batch) walks the K directions one after the
other. A direction is processed in chunks of CHUNK steps: the chunk's inputs are
read as (CHUNK, BLOCK_D) tiles through the order table (image mode: no permuted
copy of anything is ever written), and for each state index n the recurrence
``h_t = exp(dt_t A_n) h_{t-1} + dt_t u_t B_t[n]`` is solved for all CHUNK steps at
once with a parallel associative scan, started from the previous chunk's final
state. Many independent loads per chunk and a log-depth scan keep the GPU busy
where a step-by-step loop would wait on memory latency.

The chunk's output ``w_k * y`` is added into the image-order fp32 accumulator.
The same program owns every token of its channel block, so the merge is a plain
read-add-write: no atomics, deterministic; a barrier orders the directions. The
last direction applies ``silu(z)`` and writes the output. Without merge, each
direction k writes its own outputs to ``out[b, :, k]``: at the image token its step
visits (``UNPERMUTE``, ``multi_scan(merge=False)``; the gate ``z`` (b, L, dim) is
shared, read with k-stride 0) or at the step itself (``selective_scan``'s heads).

The state after every chunk goes to ``ckpt`` (batch, K, nchunks, N, dim): the
next chunk starts from it and the backward recomputes from it instead of storing
all L states. ``ACC`` is the state and accumulation type (fp32; fp64 for fp64).

Importing this module compiles the kernels: set ``TRITON_INTERPRET=1`` before
importing it to run them on CPU tensors with the interpreter.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "") == "1"
# GPU: 32-step chunks keep the (CHUNK, BLOCK_D) tiles in registers (ptxas for sm_90:
# ~110 registers forward at BLOCK_D=16, 4 warps; 64-step chunks hit the 255 limit).
# The interpreter runs every element of a scan in Python: short chunks and small
# blocks let tiny test shapes cross several chunks and channel blocks.
CHUNK = 8 if INTERPRETED else 32


def _configs():
    if INTERPRETED:
        return [triton.Config({"BLOCK_D": 4}, num_warps=1)]
    return [triton.Config({"BLOCK_D": bd}, num_warps=nw) for bd in (16, 32) for nw in (4, 8)]


@triton.jit
def linear_combine(a1, b1, a2, b2):
    """Compose two steps of x -> a x + b (first, then second)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _column(tile, offs, j):
    """Column ``j`` of a (rows, cols) register tile, as a (rows,) vector."""
    return tl.sum(tl.where(offs[None, :] == j, tile, 0.0), axis=1)


@triton.jit
def _row(tile, offs, i):
    """Row ``i`` of a (rows, cols) register tile, as a (cols,) vector."""
    return tl.sum(tl.where(offs[:, None] == i, tile, 0.0), axis=0)


@triton.autotune(configs=_configs(), key=["dim", "N", "K", "L", "MERGE", "GATHER", "UNPERMUTE"])
@triton.jit
def multi_scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ord_ptr, w_ptr, z_ptr, acc_ptr, out_ptr, ck_ptr,
    L, K, dim, N,
    su_b, su_t, su_k, su_d,
    sdt_b, sdt_t, sdt_k, sdt_d,
    sA_k, sA_d, sA_n,
    sB_b, sB_t, sB_k, sB_n,
    sC_b, sC_t, sC_k, sC_n,
    sD_k, sD_d,
    sbias_k, sbias_d,
    sz_b, sz_t, sz_k, sz_d,
    sa_b, sa_t, sa_k, sa_d,
    so_b, so_t, so_k, so_d,
    sck_b, sck_k, sck_c, sck_n, sck_d,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr,
    GATHER: tl.constexpr, MERGE: tl.constexpr, UNPERMUTE: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_W: tl.constexpr, HAS_Z: tl.constexpr, STORE_ACC: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, CHUNK)
    md = offs_d < dim
    zeros_d = offs_d * 0  # scalar conditions become (BLOCK_D,) vectors: masks keep one shape
    n_chunks = tl.cdiv(L, CHUNK)
    for k in range(K):
        if HAS_D:
            Dk = tl.load(D_ptr + k * sD_k + offs_d * sD_d, mask=md, other=0.0).to(ACC)
        if HAS_BIAS:
            bias_k = tl.load(bias_ptr + k * sbias_k + offs_d * sbias_d, mask=md, other=0.0).to(ACC)
        if HAS_W:
            w_k = tl.load(w_ptr + k).to(ACC)
        not_first = md & ((zeros_d + k) > 0)
        is_last = md & ((zeros_d + k) == K - 1)
        for c in range(n_chunks):
            offs_t = (c * CHUNK + offs_c).to(tl.int64)
            mt = offs_t < L
            mtd = mt[:, None] & md[None, :]
            if GATHER or MERGE or UNPERMUTE:
                tok = tl.load(ord_ptr + k * L + offs_t, mask=mt, other=0).to(tl.int64)
            if GATHER:
                rows = tok
            else:
                rows = offs_t
            u = tl.load(u_ptr + pid_b * su_b + rows[:, None] * su_t + k * su_k + offs_d[None, :] * su_d,
                        mask=mtd, other=0.0).to(ACC)
            dt = tl.load(dt_ptr + pid_b * sdt_b + rows[:, None] * sdt_t + k * sdt_k + offs_d[None, :] * sdt_d,
                         mask=mtd, other=0.0).to(ACC)
            if HAS_BIAS:
                dt += bias_k[None, :]
            if SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            dtu = dt * u
            y = tl.zeros([CHUNK, BLOCK_D], dtype=ACC)
            for n in range(N):
                A_n = tl.load(A_ptr + k * sA_k + offs_d * sA_d + n * sA_n, mask=md, other=0.0).to(ACC)
                B_n = tl.load(B_ptr + pid_b * sB_b + rows * sB_t + k * sB_k + n * sB_n, mask=mt, other=0.0).to(ACC)
                C_n = tl.load(C_ptr + pid_b * sC_b + rows * sC_t + k * sC_k + n * sC_n, mask=mt, other=0.0).to(ACC)
                # steps past L decay by 1 and add 0: the chunk's last row is then the state at L-1
                decay = tl.where(mtd, tl.exp(dt * A_n[None, :]), 1.0)
                decay_prod, h = tl.associative_scan((decay, dtu * B_n[:, None]), 0, linear_combine)
                ck_n = ck_ptr + pid_b * sck_b + k * sck_k + n * sck_n + offs_d * sck_d
                h0 = tl.load(ck_n + (c - 1) * sck_c, mask=md & ((zeros_d + c) > 0), other=0.0)
                h += decay_prod * h0[None, :]
                y += h * C_n[:, None]
                tl.store(ck_n + c * sck_c, _row(h, offs_c, CHUNK - 1), mask=md)
            if HAS_D:
                y += Dk[None, :] * u
            if MERGE:
                if HAS_W:
                    y = y * w_k
                a_ptrs = acc_ptr + pid_b * sa_b + tok[:, None] * sa_t + offs_d[None, :] * sa_d
                y += tl.load(a_ptrs, mask=mt[:, None] & not_first[None, :], other=0.0)
                tl.store(a_ptrs, y, mask=mtd)
                if HAS_Z:
                    z = tl.load(z_ptr + pid_b * sz_b + tok[:, None] * sz_t + offs_d[None, :] * sz_d,
                                mask=mt[:, None] & is_last[None, :], other=0.0).to(ACC)
                    y = y * z * tl.sigmoid(z)
                tl.store(out_ptr + pid_b * so_b + tok[:, None] * so_t + offs_d[None, :] * so_d,
                         y.to(out_ptr.dtype.element_ty), mask=mt[:, None] & is_last[None, :])
            else:
                if UNPERMUTE:  # step t of direction k is image token orders[k, t]
                    orow = tok
                else:
                    orow = offs_t
                if STORE_ACC:
                    tl.store(acc_ptr + pid_b * sa_b + orow[:, None] * sa_t + k * sa_k + offs_d[None, :] * sa_d,
                             y, mask=mtd)
                if HAS_Z:
                    z = tl.load(z_ptr + pid_b * sz_b + orow[:, None] * sz_t + k * sz_k + offs_d[None, :] * sz_d,
                                mask=mtd, other=0.0).to(ACC)
                    y = y * z * tl.sigmoid(z)
                tl.store(out_ptr + pid_b * so_b + orow[:, None] * so_t + k * so_k + offs_d[None, :] * so_d,
                         y.to(out_ptr.dtype.element_ty), mask=mtd)
            tl.debug_barrier()  # the next chunk reads this chunk's checkpoint
        tl.debug_barrier()  # the next direction reads this one's accumulator writes
