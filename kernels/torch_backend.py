"""The ``torch`` backend: gather, scan, merge and their hand-written backward.

One canonical call serves both public ops (:mod:`.op` and :mod:`.api` call it);
``mode`` says what it returns:

* ``MERGE`` (``multi_scan``): channel-last inputs in image order (or, with
  ``scan_order``, per direction in scan order); the K scans are weighted, summed
  in image order and gated by ``silu(z)``: out (b, L, dim).
* ``PER_DIRECTION`` (``multi_scan(merge=False)``): the same inputs; each scan is
  put back in image order on its own and gated by ``silu(z)`` (z (b, L, dim),
  shared by the directions): out (b, L, K, dim), no weights.
* ``HEADS`` (``selective_scan``): every input is per head in scan order,
  ``(b, L, K, c)``, z included; outputs stay per head, in scan order, and ``z``
  gates each one: out (b, L, K, c). No order table is read.

Forward returns ``(out, ysum, ckpts)``: ``ysum`` is the output before the gate
(kept only when ``z`` is given, else empty) and ``ckpts`` the chunk-end states
that the backward recomputes from. Permuted copies exist only transiently.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scansearch.kernels.alloc import empty
from scansearch.kernels.torch_scan import choose_chunk, num_chunks, scan_bwd, scan_fwd

# ``mode`` of the canonical calls (see the module docstring); the triton backend takes the same
MERGE = "merge"  # multi_scan: the weighted sum in image order
PER_DIRECTION = "per_direction"  # multi_scan(merge=False): each direction in image order
HEADS = "heads"  # selective_scan: per head, in scan order, no order table
MODES = (MERGE, PER_DIRECTION, HEADS)


def compute_dtype(*tensors) -> torch.dtype:
    """fp64 if any input is fp64, else fp32 (the reference's rule)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def ckpt_shape(batch: int, L: int, K: int, dim: int, N: int, dtype: torch.dtype) -> tuple[int, ...]:
    """Shape of the checkpoint tensor this backend saves for backward (``dtype``: compute dtype)."""
    return (num_chunks(L, choose_chunk(K, batch, N, dim, dtype)), K, batch, N, dim)


def last_state(ckpts: torch.Tensor) -> torch.Tensor:
    """Final state as (batch, K, dim, N)."""
    return ckpts[-1].permute(1, 0, 3, 2)


def _flat_index(orders: torch.Tensor) -> torch.Tensor:
    """Row ``t*K + k`` of a (L*K)-row view of a (b, L, K, c) tensor read by step t of direction k."""
    K = orders.shape[0]
    return (orders.t() * K + torch.arange(K, device=orders.device)).reshape(-1)


# Gathers and scatters below use index_select on (rows, b, c) views: contiguous row
# copies measured 3-4x faster on CPU than advanced indexing with two index tensors.
def _steps(x, orders, ct):
    """(b, L, K, c) or shared (b, L, c) -> step-major (L, K, b, c), gathered through
    ``orders`` (K, L) when given."""
    b, L = x.shape[:2]
    K = orders.shape[0] if orders is not None else x.shape[2]
    if orders is None:
        xs = x.permute(1, 2, 0, 3)
    elif x.dim() == 4:
        xs = torch.index_select(x.reshape(b, L * K, -1).transpose(0, 1), 0, _flat_index(orders))
    else:
        xs = torch.index_select(x.transpose(0, 1), 0, orders.t().reshape(-1))
    return xs.to(ct).contiguous().view(L, K, b, x.shape[-1])


def _to_image(g, inverse):
    """Scan-order (L, K, b, c) -> image-order (L, K, b, c) through the inverse orders."""
    L, K, b, c = g.shape
    return torch.index_select(g.view(L * K, b, c), 0, _flat_index(inverse)).view(L, K, b, c)


def _unsteps(g, inverse, shared: bool, dtype):
    """Inverse of :func:`_steps` for gradients: (L, K, b, c) -> (b, L, K, c), or summed
    over K to (b, L, c) when the input was shared by all directions."""
    if inverse is not None:
        g = _to_image(g, inverse)
    if shared:
        return g.sum(1).transpose(0, 1).to(dtype).contiguous()
    return g.permute(2, 0, 1, 3).to(dtype).contiguous()


def _merge(y_s, inverse, weights):
    """Weighted sum of the K scans in image order: (L, K, b, d) -> (b, L, d)."""
    y_img = _to_image(y_s, inverse)
    L, K, b, d = y_img.shape
    if weights is None:
        return y_img.sum(1).transpose(0, 1)
    return torch.matmul(weights.to(y_img.dtype), y_img.view(L, K, b * d)).view(L, b, d).transpose(0, 1)


def _dt(delta_s, delta_bias, delta_softplus):
    """Discretisation step: softplus(delta + bias) when asked; also returns the pre-softplus value."""
    if delta_bias is not None:
        delta_s = delta_s + delta_bias.to(delta_s.dtype)[None, :, None, :]
    return (F.softplus(delta_s) if delta_softplus else delta_s), delta_s


def _per_direction(y_s, orders):
    """Each scan in image order on its own: scan-order (L, K, b, d) -> image-order (b, L, K, d),
    step t of direction k written to ``[:, orders[k, t], k]``. One scatter straight into the
    contiguous result (no image-order (L, K, b, d) copy to permute afterwards)."""
    L, K, b, d = y_s.shape
    out = empty((b, L, K, d), dtype=y_s.dtype, device=y_s.device)
    out.view(b, L * K, d).transpose(0, 1).index_copy_(0, _flat_index(orders), y_s.view(L * K, b, d))
    return out


def _gathers(mode, scan_order) -> bool:
    """Whether the inputs are read through the order table (image-order inputs)."""
    return mode != HEADS and not scan_order


def _layouts(u, delta, A, B, C, orders, scan_order, mode, ct):
    read = orders if _gathers(mode, scan_order) else None
    return (_steps(u, read, ct), _steps(delta, read, ct), _steps(B, read, ct), _steps(C, read, ct),
            A.to(ct).transpose(1, 2).contiguous())


def forward(u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order, mode=MERGE):
    """Canonical forward; see the module docstring. Returns (out, ysum, ckpts)."""
    if mode not in MODES:
        raise ValueError(f"torch backend: mode must be one of {MODES}, got {mode!r}")
    ct = compute_dtype(u, delta, A, B, C)
    u_s, delta_s, B_s, C_s, At = _layouts(u, delta, A, B, C, orders, scan_order, mode, ct)
    dt, _ = _dt(delta_s, delta_bias, delta_softplus)
    L, K, b, d = dt.shape
    y_s, ckpts = scan_fwd(dt, u_s, B_s, C_s, At, choose_chunk(K, b, At.shape[1], d, ct))
    if D is not None:
        y_s.addcmul_(D.to(ct)[None, :, None, :], u_s)
    if mode == MERGE:
        ysum = _merge(y_s, torch.argsort(orders, dim=1), weights)
    elif mode == PER_DIRECTION:
        ysum = _per_direction(y_s, orders)
    else:
        ysum = y_s.permute(2, 0, 1, 3)
    if z is None:
        return ysum.to(u.dtype).contiguous(), u.new_empty(0, dtype=ct), ckpts
    ysum = ysum.contiguous()
    out = ysum * _gate_view(F.silu(z.to(ct)), ysum)
    return out.to(u.dtype).contiguous(), ysum, ckpts


def _gate_view(g, y):
    """The gate broadcast to the output: a shared (b, L, d) gate gets a direction axis."""
    return g[:, :, None] if g.dim() < y.dim() else g


def gate_backward(gout, zc, ysum, want_gz: bool, z_dtype):
    """Through the gate ``out = ysum * silu(z)``: the gradient reaching ``ysum`` and, when
    ``want_gz``, z's gradient in ``z_dtype`` (else None). ``zc`` is z in the compute dtype;
    a (b, L, d) gate shared by per-direction outputs (b, L, K, d) sums over K."""
    sig = torch.sigmoid(zc)
    gz = None
    if want_gz:
        gyz = gout * ysum
        if zc.dim() < gyz.dim():  # one gate shared by the K per-direction outputs
            gyz = gyz.sum(2)
        gz = (gyz * sig * (1 + zc * (1 - sig))).to(z_dtype)
    return gout * _gate_view(zc * sig, gout), gz


def backward(gout, u, delta, A, B, C, D, orders, weights, delta_bias, z, delta_softplus, scan_order,
             ysum, ckpts, needs, mode=MERGE, g_last=None):
    """Gradients of :func:`forward`; ``gout`` has the forward output's layout (image
    order for ``MERGE`` and ``PER_DIRECTION``).

    ``needs`` flags which of (u, delta, A, B, C, D, weights, delta_bias, z) want a
    gradient; returns that 9-tuple with None where not needed. ``g_last``
    (b, K, dim, N) is the gradient of the final state (``selective_scan``).
    """
    if mode not in MODES:
        raise ValueError(f"torch backend: mode must be one of {MODES}, got {mode!r}")
    ct = compute_dtype(u, delta, A, B, C)
    u_s, delta_s, B_s, C_s, At = _layouts(u, delta, A, B, C, orders, scan_order, mode, ct)
    dt, dt_pre = _dt(delta_s, delta_bias, delta_softplus)
    gout = gout.to(ct)
    gz = None
    if z is not None:
        gout, gz = gate_backward(gout, z.to(ct), ysum, needs[8], z.dtype)
    if mode == MERGE:
        # (L, K, b, d): what each scan step receives, unweighted
        gy_img = _steps(gout, orders, ct)
        gy_s = gy_img * weights.to(ct)[None, :, None, None] if weights is not None else gy_img
    elif mode == PER_DIRECTION:
        # direction k's step t produced out[:, orders[k, t], k]: read its gradient there
        gy_img = None
        gy_s = _steps(gout, orders, ct)
    else:
        gy_img = None
        gy_s = gout.permute(1, 2, 0, 3).contiguous()
    want_y = weights is not None and needs[6]
    if g_last is not None:
        g_last = g_last.to(ct).permute(1, 0, 3, 2).contiguous()
    L, K, b, d = dt.shape
    chunk = choose_chunk(K, b, At.shape[1], d, ct)
    gdt, gu_s, gB_s, gC_s, gAt, y_s = scan_bwd(gy_s, dt, u_s, B_s, C_s, At, ckpts, chunk, g_last, want_y)
    gD = gw = gbias = None
    if D is not None:
        Dc = D.to(ct)[None, :, None, :]
        if needs[5]:
            gD = (gy_s * u_s).sum((0, 2)).to(D.dtype)
        gu_s.addcmul_(Dc, gy_s)
        if want_y:
            y_s.addcmul_(Dc, u_s)
    if want_y:
        gw = (y_s * gy_img).sum((0, 2, 3)).to(weights.dtype)
    if delta_softplus:
        gdt.mul_(torch.sigmoid(dt_pre))
    if delta_bias is not None and needs[7]:
        gbias = gdt.sum((0, 2)).to(delta_bias.dtype)
    inverse = torch.argsort(orders, dim=1) if _gathers(mode, scan_order) else None
    gu = _unsteps(gu_s, inverse, u.dim() == 3, u.dtype) if needs[0] else None
    gdelta = _unsteps(gdt, inverse, False, delta.dtype) if needs[1] else None
    gA = gAt.transpose(1, 2).to(A.dtype).contiguous() if needs[2] else None
    gB = _unsteps(gB_s, inverse, False, B.dtype) if needs[3] else None
    gC = _unsteps(gC_s, inverse, False, C.dtype) if needs[4] else None
    return gu, gdelta, gA, gB, gC, gD, gw, gbias, gz
