"""Fused multi-direction selective scan, backward (Triton).

Same grid as the forward: one program per (channel block, batch), directions one
after the other, chunks of CHUNK steps visited last to first. For a chunk and
each state index n:

* the states ``h_t`` are recomputed from the forward's checkpoint with the same
  parallel scan as the forward (the full state sequence is never stored);
* the adjoint ``gh_t = gy_t C_t[n] + exp(dt_{t+1} A_n) gh_{t+1}`` comes from a
  reverse parallel scan started from the later chunk's ``gh`` (register carry);
* every gradient of step t follows elementwise; ``exp(dt_t A_n) h_{t-1}`` is
  taken as ``h_t - dt_t u_t B_t[n]`` (no shifted copy of the states needed).

Where a gradient sums over what other programs own, each program writes a
partial and the launcher sums them (deterministic, no atomics): dB and dC (over
channel blocks), dA, dD (over the batch) and d weights. du in image order
gathers K contributions per token; the program owns them all and adds them in
place with a barrier between directions, as the forward's merge does.

The output gradient ``gy`` has the forward output's layout: image order
(b, L, dim) read at ``orders[k, t]`` when merged; (b, L, K, dim) read at
``[orders[k, t], k]`` with ``UNPERMUTE`` (per-direction outputs in image order);
(b, L, K, dim) read at ``[t, k]`` for ``selective_scan``'s heads.
"""
from __future__ import annotations

import triton
import triton.language as tl

from scansearch.kernels.triton_scan import INTERPRETED, _column, _row, linear_combine


def _configs():
    if INTERPRETED:
        return [triton.Config({}, num_warps=1)]
    return [triton.Config({}, num_warps=nw) for nw in (4, 8)]


@triton.jit
def _load_dt(dt_ptr, bias_k, rows, k, offs_d, mask, pid_b, sdt_b, sdt_t, sdt_k, sdt_d,
             HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """(delta + bias) and the step softplus(delta + bias) (or the same, without softplus)."""
    raw = tl.load(dt_ptr + pid_b * sdt_b + rows[:, None] * sdt_t + k * sdt_k + offs_d[None, :] * sdt_d,
                  mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        raw += bias_k[None, :]
    if SOFTPLUS:
        dt = tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    else:
        dt = raw
    return raw, dt


@triton.autotune(configs=_configs(), key=["dim", "N", "K", "L", "MERGE", "GATHER", "UNPERMUTE"])
@triton.jit
def multi_scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ord_ptr, w_ptr,
    gy_ptr, ck_ptr, gl_ptr,
    gu_ptr, gdt_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr, gw_ptr,
    L, K, dim, N,
    su_b, su_t, su_k, su_d,
    sdt_b, sdt_t, sdt_k, sdt_d,
    sA_k, sA_d, sA_n,
    sB_b, sB_t, sB_k, sB_n,
    sC_b, sC_t, sC_k, sC_n,
    sD_k, sD_d,
    sbias_k, sbias_d,
    sgy_b, sgy_t, sgy_k, sgy_d,
    sck_b, sck_k, sck_c, sck_n, sck_d,
    sgl_b, sgl_k, sgl_d, sgl_n,
    sgu_b, sgu_t, sgu_k, sgu_d,
    sgdt_b, sgdt_t, sgdt_k, sgdt_d,
    sgB_p, sgB_b, sgB_t, sgB_k, sgB_n,
    sgC_p, sgC_b, sgC_t, sgC_k, sgC_n,
    sgA_b, sgA_k, sgA_d, sgA_n,
    sgD_b, sgD_k, sgD_d,
    sgw_b, sgw_p, sgw_k,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    GATHER: tl.constexpr, MERGE: tl.constexpr, UNPERMUTE: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_W: tl.constexpr, HAS_GLAST: tl.constexpr,
    NEED_GW: tl.constexpr,
    ACC: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, CHUNK)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < dim
    mdn = md[:, None] & (offs_n < N)[None, :]
    zeros_d = offs_d * 0
    n_chunks = tl.cdiv(L, CHUNK)
    bias_k = tl.zeros([BLOCK_D], dtype=ACC)
    for k in range(K):
        if HAS_D:
            Dk = tl.load(D_ptr + k * sD_k + offs_d * sD_d, mask=md, other=0.0).to(ACC)
            gD_acc = tl.zeros([BLOCK_D], dtype=ACC)
        if HAS_BIAS:
            bias_k = tl.load(bias_ptr + k * sbias_k + offs_d * sbias_d, mask=md, other=0.0).to(ACC)
        if HAS_W:
            w_k = tl.load(w_ptr + k).to(ACC)
        if NEED_GW:
            gw_acc = tl.zeros([BLOCK_D], dtype=ACC)
        not_first = md & ((zeros_d + k) > 0)
        # carry[:, n]: gh at the first step of the chunk processed last (a later chunk)
        if HAS_GLAST:
            carry = tl.load(gl_ptr + pid_b * sgl_b + k * sgl_k + offs_d[:, None] * sgl_d + offs_n[None, :] * sgl_n,
                            mask=mdn, other=0.0).to(ACC)
        else:
            carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
        gA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
        for cc in range(n_chunks):
            c = n_chunks - 1 - cc
            offs_t = (c * CHUNK + offs_c).to(tl.int64)
            mt = offs_t < L
            mtd = mt[:, None] & md[None, :]
            has_next = (offs_t + 1) < L
            mnd = has_next[:, None] & md[None, :]
            if GATHER or MERGE or UNPERMUTE:
                tok = tl.load(ord_ptr + k * L + offs_t, mask=mt, other=0).to(tl.int64)
            if GATHER:
                rows = tok
                rows_next = tl.load(ord_ptr + k * L + offs_t + 1, mask=has_next, other=0).to(tl.int64)
            else:
                rows = offs_t
                rows_next = offs_t + 1
            u = tl.load(u_ptr + pid_b * su_b + rows[:, None] * su_t + k * su_k + offs_d[None, :] * su_d,
                        mask=mtd, other=0.0).to(ACC)
            dt_raw, dt = _load_dt(dt_ptr, bias_k, rows, k, offs_d, mtd, pid_b, sdt_b, sdt_t, sdt_k, sdt_d,
                                  HAS_BIAS, SOFTPLUS, ACC)
            _, dt_next = _load_dt(dt_ptr, bias_k, rows_next, k, offs_d, mnd, pid_b, sdt_b, sdt_t, sdt_k, sdt_d,
                                  HAS_BIAS, SOFTPLUS, ACC)
            if MERGE:
                gy_raw = tl.load(gy_ptr + pid_b * sgy_b + tok[:, None] * sgy_t + offs_d[None, :] * sgy_d,
                                 mask=mtd, other=0.0).to(ACC)
            elif UNPERMUTE:  # the forward wrote step t of direction k to [orders[k, t], k]
                gy_raw = tl.load(gy_ptr + pid_b * sgy_b + tok[:, None] * sgy_t + k * sgy_k
                                 + offs_d[None, :] * sgy_d, mask=mtd, other=0.0).to(ACC)
            else:
                gy_raw = tl.load(gy_ptr + pid_b * sgy_b + offs_t[:, None] * sgy_t + k * sgy_k
                                 + offs_d[None, :] * sgy_d, mask=mtd, other=0.0).to(ACC)
            if HAS_W:
                gy = gy_raw * w_k
            else:
                gy = gy_raw
            dtu = dt * u
            g_dt = tl.zeros([CHUNK, BLOCK_D], dtype=ACC)
            ghB_sum = tl.zeros([CHUNK, BLOCK_D], dtype=ACC)
            if NEED_GW:
                y = tl.zeros([CHUNK, BLOCK_D], dtype=ACC)
            for n in range(N):
                A_n = tl.load(A_ptr + k * sA_k + offs_d * sA_d + n * sA_n, mask=md, other=0.0).to(ACC)
                B_n = tl.load(B_ptr + pid_b * sB_b + rows * sB_t + k * sB_k + n * sB_n, mask=mt, other=0.0).to(ACC)
                C_n = tl.load(C_ptr + pid_b * sC_b + rows * sC_t + k * sC_k + n * sC_n, mask=mt, other=0.0).to(ACC)
                # states of the chunk, from the previous chunk's checkpoint
                decay = tl.where(mtd, tl.exp(dt * A_n[None, :]), 1.0)
                inp = dtu * B_n[:, None]
                decay_prod, h = tl.associative_scan((decay, inp), 0, linear_combine)
                h0 = tl.load(ck_ptr + pid_b * sck_b + k * sck_k + (c - 1) * sck_c + n * sck_n + offs_d * sck_d,
                             mask=md & ((zeros_d + c) > 0), other=0.0)
                h += decay_prod * h0[None, :]
                # adjoint: gh_t = gy_t C_t + decay_{t+1} gh_{t+1}; past L-1 the decay is 1 (the carry
                # is then the last state's own gradient) and padded steps add nothing
                decay_next = tl.where(mnd, tl.exp(dt_next * A_n[None, :]), 1.0)
                carry_n = _column(carry, offs_n, n)
                next_prod, gh = tl.associative_scan((decay_next, gy * C_n[:, None]), 0, linear_combine,
                                                    reverse=True)
                gh += next_prod * carry_n[None, :]
                carry = tl.where(offs_n[None, :] == n, _row(gh, offs_c, 0)[:, None], carry)
                X = tl.where(mtd, gh * (h - inp), 0.0)  # gradient of the log-decay dt * A_n
                g_dt += X * A_n[None, :]
                ghB = gh * B_n[:, None]
                ghB_sum += ghB
                gA_acc = tl.where(offs_n[None, :] == n, gA_acc + tl.sum(X * dt, axis=0)[:, None], gA_acc)
                tl.store(gB_ptr + pid_d * sgB_p + pid_b * sgB_b + rows * sgB_t + k * sgB_k + n * sgB_n,
                         tl.sum(gh * dtu, axis=1), mask=mt)
                tl.store(gC_ptr + pid_d * sgC_p + pid_b * sgC_b + rows * sgC_t + k * sgC_k + n * sgC_n,
                         tl.sum(gy * h, axis=1), mask=mt)
                if NEED_GW:
                    y += h * C_n[:, None]
            g_dt += u * ghB_sum
            if SOFTPLUS:
                g_dt = g_dt * tl.sigmoid(dt_raw)
            tl.store(gdt_ptr + pid_b * sgdt_b + rows[:, None] * sgdt_t + k * sgdt_k + offs_d[None, :] * sgdt_d,
                     g_dt, mask=mtd)
            g_u = dt * ghB_sum
            if HAS_D:
                g_u += Dk[None, :] * gy
                gD_acc += tl.sum(gy * u, axis=0)
            if GATHER:
                gu_ptrs = gu_ptr + pid_b * sgu_b + rows[:, None] * sgu_t + offs_d[None, :] * sgu_d
                g_u += tl.load(gu_ptrs, mask=mt[:, None] & not_first[None, :], other=0.0)
                tl.store(gu_ptrs, g_u, mask=mtd)
            else:
                tl.store(gu_ptr + pid_b * sgu_b + offs_t[:, None] * sgu_t + k * sgu_k + offs_d[None, :] * sgu_d,
                         g_u, mask=mtd)
            if NEED_GW:
                if HAS_D:
                    y += Dk[None, :] * u
                gw_acc += tl.sum(y * gy_raw, axis=0)
        tl.store(gA_ptr + pid_b * sgA_b + k * sgA_k + offs_d[:, None] * sgA_d + offs_n[None, :] * sgA_n,
                 gA_acc, mask=mdn)
        if HAS_D:
            tl.store(gD_ptr + pid_b * sgD_b + k * sgD_k + offs_d * sgD_d, gD_acc, mask=md)
        if NEED_GW:
            tl.store(gw_ptr + pid_b * sgw_b + pid_d * sgw_p + k * sgw_k, tl.sum(gw_acc, axis=0))
        tl.debug_barrier()  # the next direction reads this one's du writes
