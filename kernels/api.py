"""Public entry points: validate, pick a backend, run it.

``multi_scan`` goes through the ``scansearch::multi_scan`` custom op for the
``torch``, ``cpu`` and ``triton`` backends (so FLOP counters and ``torch.compile`` see
one op); ``selective_scan`` (mamba's signature) maps groups of channels to the
canonical per-head call and wraps it in a ``torch.autograd.Function``.
"""
from __future__ import annotations

import math

import torch

from scansearch.kernels import op  # noqa: F401  (registers the custom ops)
from scansearch.kernels.dispatch import resolve_backend
from scansearch.kernels.op import backend_module
from scansearch.kernels.reference import multi_scan_ref, selective_scan_ref
from scansearch.kernels.torch_backend import HEADS
from scansearch.kernels.validate import check_multi_scan, check_selective_scan


def multi_scan(u, delta, A, B, C, D, orders, weights=None, delta_bias=None, delta_softplus=False,
               z=None, scan_order=False, merge=True, backend=None):
    """K selective scans over K token orders, returned in image order (channel-last).

    Image order (``scan_order=False``): u (batch, L, dim); delta (batch, L, K, dim);
    B, C (batch, L, K, N); direction k reads token ``orders[k, t]`` at step t.
    Scan order (``scan_order=True``): u (batch, L, K, dim) and delta, B, C already in
    each direction's scan order. A (K, dim, N); D (K, dim) or None; orders (K, L)
    permutations of range(L) (else :class:`OrderError`; checked once per table and
    version); weights (K,) or None (ones); delta_bias (K, dim) or None;
    z (batch, L, dim) or None, a gate ``silu(z)``.

    ``merge=True``: returns (batch, L, dim) = silu(z) * sum_k weights[k] * unpermute_k(scan_k).
    ``merge=False``: returns each direction's output on its own, from the same single
    kernel call: (batch, L, K, dim) with ``[:, l, k]`` = silu(z[:, l]) * (direction k's
    output at the step that visits token l); ``weights`` must be None (ValueError).
    Output in u's dtype; states and sums are fp32 (fp64 for fp64 inputs). ``backend``:
    "reference", "torch", "cpu" or "triton"; None picks by device (or ``SCANSEARCH_BACKEND``).
    """
    check_multi_scan(u, delta, A, B, C, D, orders, weights, delta_bias, z, scan_order, merge)
    name = resolve_backend(u, backend)
    if name == "reference":
        return multi_scan_ref(u, delta, A, B, C, D, orders.long(), weights, delta_bias, delta_softplus, z,
                              scan_order, merge)
    # the table goes to the op as given (no fresh .long() copy), so the op's check hits the cache
    out, _, _ = torch.ops.scansearch.multi_scan(u, delta, A, B, C, D, orders, weights, delta_bias, z,
                                                bool(delta_softplus), bool(scan_order), name, bool(merge))
    return out


def _heads(x, K):
    """(batch, dim, L) -> (batch, L, K, dim // K) view."""
    b, dim, L = x.shape
    return x.view(b, K, dim // K, L).permute(0, 3, 1, 2)


def _from_heads(g):
    """(batch, L, K, dg) -> (batch, K * dg, L)."""
    b, L, K, dg = g.shape
    return g.permute(0, 2, 3, 1).reshape(b, K * dg, L)


def _bc_heads(x, K):
    """B or C, (batch, N, L) or (batch, G, N, L) -> (batch, L, K, N), each head its group's."""
    if x.dim() == 3:
        b, N, L = x.shape
        return x.permute(0, 2, 1)[:, :, None].expand(b, L, K, N)
    h = x.permute(0, 3, 1, 2)
    return h if h.shape[2] == K else h.repeat_interleave(K // h.shape[2], dim=2)


def _bc_grad(g, like):
    """Gradient of :func:`_bc_heads`: (batch, L, K, N) -> ``like``'s layout."""
    b, L, K, N = g.shape
    if like.dim() == 3:
        return g.sum(2).permute(0, 2, 1).contiguous()
    G = like.shape[1]
    return g.view(b, L, G, K // G, N).sum(3).permute(0, 2, 3, 1).contiguous()


class SelectiveScanFn(torch.autograd.Function):
    """mamba's selective scan on the ``torch`` or ``triton`` backend, hand-written backward."""

    @staticmethod
    def forward(ctx, backend, return_last_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        K = math.lcm(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
        mod = backend_module(backend)
        dim, N = A.shape
        heads = lambda v: None if v is None else v.view(K, dim // K)  # noqa: E731
        out, ysum, ckpts = mod.forward(_heads(u, K), _heads(delta, K), A.view(K, dim // K, N),
                                       _bc_heads(B, K), _bc_heads(C, K), heads(D), None, None,
                                       heads(delta_bias), None if z is None else _heads(z, K),
                                       delta_softplus, True, mode=HEADS)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ysum, ckpts)
        ctx.meta = (backend, K, delta_softplus)
        ctx.set_materialize_grads(False)
        out = _from_heads(out)
        if not return_last_state:
            return out
        last = mod.last_state(ckpts).reshape(u.shape[0], dim, N).clone()
        return out, last

    @staticmethod
    def backward(ctx, gout, g_last=None):
        backend, K, delta_softplus = ctx.meta
        u, delta, A, B, C, D, z, delta_bias, ysum, ckpts = ctx.saved_tensors
        b, dim, L = u.shape
        N = A.shape[1]
        if gout is None:
            gout = u.new_zeros(b, dim, L)
        heads = lambda v: None if v is None else v.view(K, dim // K)  # noqa: E731
        needs = list(ctx.needs_input_grad[2:10])
        needs = needs[:6] + [False] + needs[7:8] + needs[6:7]  # (.., D, weights, delta_bias, z)
        g4 = None if g_last is None else g_last.reshape(b, K, dim // K, N)
        gu, gdelta, gA, gB, gC, gD, _, gbias, gz = backend_module(backend).backward(
            _heads(gout, K), _heads(u, K), _heads(delta, K), A.view(K, dim // K, N), _bc_heads(B, K),
            _bc_heads(C, K), heads(D), None, None, heads(delta_bias), None if z is None else _heads(z, K),
            delta_softplus, True, ysum, ckpts, needs, mode=HEADS, g_last=g4)
        return (None, None,
                None if gu is None else _from_heads(gu),
                None if gdelta is None else _from_heads(gdelta),
                None if gA is None else gA.reshape(dim, N),
                None if gB is None else _bc_grad(gB, B),
                None if gC is None else _bc_grad(gC, C),
                None if gD is None else gD.reshape(dim),
                None if gz is None else _from_heads(gz),
                None if gbias is None else gbias.reshape(dim),
                None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend=None):
    """mamba_ssm's ``selective_scan_fn`` (same signature and semantics) for real inputs.

    u, delta, z: (batch, dim, L); A: (dim, N), real; B, C, each independently:
    (batch, N, L), (batch, groups, N, L) with groups dividing dim, or time-invariant
    (dim, N) (one row per channel, the same at every step and batch element; its
    gradient is summed over batch and L); D, delta_bias: (dim,). Returns y
    (batch, dim, L) in u's dtype, and the last state (batch, dim, N) in fp32 (fp64
    for fp64 inputs) when ``return_last_state``; gradients flow through both.
    Not supported: mamba's complex A (S4D-complex) and the complex B and C that go
    with it (ValueError).
    """
    check_selective_scan(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(u, backend)
    if name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    # a (dim, N) B or C is a grouped one with a group per channel, as a zero-stride view over
    # batch and L (no copy); the expand's autograd sums its gradient over batch and L
    batch, dim, L = u.shape
    B, C = (x[None, :, :, None].expand(batch, dim, x.shape[1], L) if x.dim() == 2 else x for x in (B, C))
    return SelectiveScanFn.apply(name, bool(return_last_state), u, delta, A, B, C, D, z, delta_bias,
                                 bool(delta_softplus))
