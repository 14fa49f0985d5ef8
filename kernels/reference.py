"""The oracle: readable sequential selective scans, any dtype, autograd for free.

Every other backend is tested against these two functions. They follow mamba's
``selective_scan_ref`` semantics exactly; the loops walk ``tensor.unbind(dim)``
rather than indexing ``x[:, t]`` (indexing makes autograd allocate a full-size
zero gradient per step).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scansearch.kernels.validate import refuse_complex


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp64 stays fp64; everything else accumulates in fp32 (mamba's rule)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _per_step(x, batch, dim, L):
    """B or C as (batch, dim, N, L), or (batch, 1, N, L) when shared by all channels."""
    if x.dim() == 2:  # time-invariant (dim, N): the same row at every step and batch element
        return x[None, :, :, None].expand(batch, dim, x.shape[1], L)
    if x.dim() == 4:  # grouped: repeat each group's row over its channels
        return x.repeat_interleave(dim // x.shape[1], dim=1)
    return x.unsqueeze(1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """mamba's selective scan, one direction, channel-first.

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L),
    (batch, groups, N, L) with ``dim`` divisible by ``groups``, or time-invariant
    (dim, N) (one row per channel, the same at every step and batch element);
    D: (dim,); delta_bias: (dim,). Returns y (batch, dim, L) in u's dtype, and the
    last state (batch, dim, N) when asked. Complex A, B or C: ValueError.
    """
    refuse_complex("selective_scan_ref", A, B, C)
    dtype_in = u.dtype
    ct = _compute_dtype(u, delta, A, B, C)
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    B, C = B.to(ct), C.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    B, C = (_per_step(x, batch, dim, L) for x in (B, C))  # (batch, dim|1, N, L)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for u_t, d_t, b_t, c_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        h = torch.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * b_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(ct)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y


def multi_scan_ref(u, delta, A, B, C, D, orders, weights=None, delta_bias=None,
                   delta_softplus=False, z=None, scan_order=False, merge=True):
    """K directions scanned and returned in image order, channel-last.

    Image order (``scan_order=False``): u (batch, L, dim); delta (batch, L, K, dim);
    B, C (batch, L, K, N), all indexed by image token; each direction reads them
    through ``orders[k]``. Scan order (``scan_order=True``): u (batch, L, K, dim)
    and delta, B, C as above, but row ``t`` of direction ``k`` is already step
    ``t`` of that direction's scan. A (K, dim, N); D (K, dim) or None;
    delta_bias (K, dim) or None; orders (K, L) long; weights (K,) or None (ones);
    z (batch, L, dim) or None, a gate ``silu(z)``.

    ``merge=True``: returns (batch, L, dim) = silu(z) * sum_k weights[k] * unpermute_k(scan_k).
    ``merge=False``: returns (batch, L, K, dim), ``[:, l, k]`` = silu(z[:, l]) * direction k's
    output at the step that visits token l; ``weights`` must be None. In u's dtype.
    """
    if not merge and weights is not None:
        raise ValueError("multi_scan_ref: weights must be None with merge=False (weight the outputs after)")
    K = orders.shape[0]
    ct = _compute_dtype(u, delta, A, B, C)
    outs = []
    for k in range(K):
        idx = orders[k]
        if scan_order:
            u_k = u[:, :, k]
            d_k, B_k, C_k = delta[:, :, k], B[:, :, k], C[:, :, k]
        else:
            u_k = u[:, idx]
            d_k, B_k, C_k = delta[:, idx, k], B[:, idx, k], C[:, idx, k]
        y_k = selective_scan_ref(
            u_k.transpose(1, 2).to(ct), d_k.transpose(1, 2), A[k],
            B_k.transpose(1, 2), C_k.transpose(1, 2),
            D=None if D is None else D[k],
            delta_bias=None if delta_bias is None else delta_bias[k],
            delta_softplus=delta_softplus,
        ).transpose(1, 2)  # (batch, L, dim) in scan order of direction k
        if weights is not None:
            y_k = y_k * weights[k].to(ct)
        outs.append(torch.zeros_like(y_k).index_copy(1, idx, y_k))  # step t -> token idx[t]
    if merge:
        out = outs[0]
        for y_img in outs[1:]:
            out = out + y_img
    else:
        out = torch.stack(outs, dim=2)  # (batch, L, K, dim)
    if z is not None:
        gate = F.silu(z.to(ct))
        out = out * (gate if merge else gate[:, :, None])
    return out.to(u.dtype)
