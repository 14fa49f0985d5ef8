"""``scansearch::multi_scan`` as a torch.library custom op.

Registered with a fake (meta) kernel, a hand-written autograd formula (whose
backward is itself the custom op ``scansearch::multi_scan_backward``) and a FLOP
formula, so ``torch.compile(fullgraph=True)`` traces through it and
``FlopCounterMode`` counts it. The ``backend`` argument ("torch" or "triton")
is resolved by the caller; the op only runs it.

The op returns ``(out, ysum, ckpts)``: ``ysum`` (the output before the ``silu(z)``
gate, empty without ``z``) and ``ckpts`` (the backend's chunk-end
states) exist to be saved for backward; the public ``multi_scan`` returns ``out``.
``merge`` (last, default True) picks the output: the weighted sum of the K scans,
(batch, L, dim), or each scan on its own, (batch, L, K, dim), both in image order.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from scansearch.kernels.torch_backend import MERGE, PER_DIRECTION, compute_dtype
from scansearch.kernels.validate import check_orders

_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "weights", "delta_bias", "z")
_GRAD_INPUT = (0, 1, 2, 3, 4, 5, 7, 8, 9)  # positions of those inputs in the op's signature


def backend_module(name: str):
    """The module implementing a backend's canonical forward/backward (imported lazily:
    importing the Triton kernels compiles them, which must follow TRITON_INTERPRET)."""
    return importlib.import_module(f".{name}_backend", __package__)


@torch.library.custom_op("scansearch::multi_scan", mutates_args=())
def multi_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                  orders: Tensor, weights: Optional[Tensor], delta_bias: Optional[Tensor],
                  z: Optional[Tensor], delta_softplus: bool, scan_order: bool,
                  backend: str, merge: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Fused K-direction selective scan, merged or per direction, in image order; see ``multi_scan``."""
    check_orders("scansearch::multi_scan", orders)  # the kernels index buffers with it unchecked
    if not merge and weights is not None:
        raise ValueError("scansearch::multi_scan: weights must be None with merge=False")
    return backend_module(backend).forward(u, delta, A, B, C, D, orders.long(), weights, delta_bias, z,
                                           delta_softplus, scan_order, mode=_mode(merge))


def _mode(merge: bool) -> str:
    return MERGE if merge else PER_DIRECTION


@multi_scan_op.register_fake
def _multi_scan_fake(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, backend,
                     merge=True):
    batch, L = u.shape[:2]
    K, dim, N = A.shape
    ct = compute_dtype(u, delta, A, B, C)
    shape = (batch, L, dim) if merge else (batch, L, K, dim)
    out = u.new_empty(shape)
    ysum = u.new_empty(shape if z is not None else (0,), dtype=ct)
    ckpts = u.new_empty(backend_module(backend).ckpt_shape(batch, L, K, dim, N, ct), dtype=ct)
    return out, ysum, ckpts


@torch.library.custom_op("scansearch::multi_scan_backward", mutates_args=())
def multi_scan_backward_op(gout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor], orders: Tensor, weights: Optional[Tensor],
                           delta_bias: Optional[Tensor], z: Optional[Tensor], ysum: Tensor, ckpts: Tensor,
                           delta_softplus: bool, scan_order: bool, backend: str,
                           needs: list[bool], merge: bool = True) -> list[Tensor]:
    """Gradients of ``multi_scan`` for (u, delta, A, B, C, D, weights, delta_bias, z);
    an empty tensor stands for a gradient that is not needed. ``gout`` has the forward
    output's layout: (batch, L, dim), or (batch, L, K, dim) when not ``merge``."""
    check_orders("scansearch::multi_scan_backward", orders)
    grads = backend_module(backend).backward(gout, u, delta, A, B, C, D, orders.long(), weights, delta_bias,
                                             z, delta_softplus, scan_order, ysum, ckpts, needs,
                                             mode=_mode(merge))
    return [g if g is not None else u.new_empty(0) for g in grads]


@multi_scan_backward_op.register_fake
def _multi_scan_backward_fake(gout, u, delta, A, B, C, D, orders, weights, delta_bias, z, ysum, ckpts,
                              delta_softplus, scan_order, backend, needs, merge=True):
    inputs = (u, delta, A, B, C, D, weights, delta_bias, z)
    return [torch.empty_like(t) if n and t is not None else u.new_empty(0) for t, n in zip(inputs, needs)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, backend, merge = inputs
    _, ysum, ckpts = output
    ctx.save_for_backward(u, delta, A, B, C, D, orders, weights, delta_bias, z, ysum, ckpts)
    ctx.flags = (delta_softplus, scan_order, backend)
    ctx.merge = merge
    ctx.mark_non_differentiable(ysum, ckpts)
    ctx.set_materialize_grads(False)  # ysum/ckpts never get gradients: no zero tensors for them


def _backward(ctx, gout, _gysum, _gckpts):
    needs = [ctx.needs_input_grad[i] for i in _GRAD_INPUT]
    grads = [None] * len(_GRAD_NAMES)
    if gout is not None and any(needs):
        u, delta, A, B, C, D, orders, weights, delta_bias, z, ysum, ckpts = ctx.saved_tensors
        out = torch.ops.scansearch.multi_scan_backward(gout, u, delta, A, B, C, D, orders, weights, delta_bias,
                                                       z, ysum, ckpts, *ctx.flags, needs, ctx.merge)
        grads = [g if n else None for g, n in zip(out, needs)]
    gu, gdelta, gA, gB, gC, gD, gw, gbias, gz = grads
    return gu, gdelta, gA, gB, gC, gD, None, gw, gbias, gz, None, None, None, None


multi_scan_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.scansearch.multi_scan)
def multi_scan_flops(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, *args, out_shape=None, **kwargs) -> int:
    """K * (9*B*L*D*N + B*L*D). ``9*B*L*D*N`` is mamba-ssm's count for one selective
    scan (the count VMamba's FLOP tables use); the ``B*L*D`` skip term ``D*u`` is
    counted per direction only when D is given. The gate, the weights and the merge
    are not counted, so ``merge=False`` counts the same. The backward op has no
    formula (forward FLOPs only, as in mamba's and VMamba's tables)."""
    K, dim, N = A_shape
    batch, L = u_shape[:2]
    skip = batch * L * dim if D_shape is not None else 0
    return K * (9 * batch * L * dim * N + skip)
