"""Utilities for testing scan backends against the float64 reference.

Tolerances follow mamba-ssm's ``tests/ops/test_selective_scan.py``: forward
(rtol, atol) = (6e-4, 2e-3) for fp32, (3e-3, 5e-3) for fp16, (3e-2, 5e-2) for
bf16; gradients scaled from those as mamba does (u x2, delta x5 rtol / x10 atol,
A with the weight tolerance and x5 atol, B and C the forward tolerance, D, z,
delta_bias and weights the weight tolerance ``max(1e-3, fwd)``). The reference
here runs in float64 on the same (rounded) inputs, so the bounds only have to
absorb the backend's own rounding.
"""
from __future__ import annotations

import torch

from scansearch.kernels.alloc import poisoned
from scansearch.kernels.api import multi_scan, selective_scan

CPU_BACKENDS = ("torch", "cpu")  # the backends that run CPU tensors for real (not the reference oracle)

FWD_TOL = {
    torch.float32: (6e-4, 2e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
    torch.float64: (1e-9, 1e-9),
}


def grad_tol(name: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for the gradient of input ``name`` when activations are ``dtype``."""
    rtol, atol = FWD_TOL[dtype]
    if dtype == torch.float64:
        return rtol, atol
    rtolw, atolw = max(1e-3, rtol), max(1e-3, atol)
    return {
        "u": (2 * rtol, 2 * atol),
        "delta": (5 * rtol, 10 * atol),
        "A": (rtolw, 5 * atolw),
        "B": (rtol, atol),
        "C": (rtol, atol),
    }.get(name, (rtolw, atolw))


def grid_orders(H: int, W: int, K: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K scan orders of an H x W grid, cycling through row-major, its flip, column-major,
    its flip, then random permutations. Returns (K, H*W) int64."""
    L = H * W
    row = torch.arange(L)
    col = row.view(H, W).t().reshape(-1)
    fixed = [row, row.flip(0), col, col.flip(0)]
    orders = [fixed[k] if k < 4 else torch.randperm(L, generator=generator) for k in range(K)]
    return torch.stack(orders)


# activations take the test dtype; A, D, bias and weights stay fp32 as in a model (all fp64 for fp64)
ACTIVATIONS = ("u", "delta", "B", "C", "z")


def make_multi_scan_inputs(batch, H, W, K, dim, N, *, scan_order=False, has_D=True, has_z=True,
                           has_bias=True, has_weights=True, dtype=torch.float32, seed=0, device="cpu"):
    """Random ``multi_scan`` inputs (mamba's test distributions). Returns (inputs dict, orders)."""
    g = torch.Generator().manual_seed(seed)
    L = H * W
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u_shape = (batch, L, K, dim) if scan_order else (batch, L, dim)
    x = {
        "u": r(*u_shape),
        "delta": 0.5 * torch.rand(batch, L, K, dim, generator=g),
        "A": -0.5 * torch.rand(K, dim, N, generator=g),
        "B": r(batch, L, K, N),
        "C": r(batch, L, K, N),
        "D": r(K, dim) if has_D else None,
        "weights": torch.rand(K, generator=g) + 0.5 if has_weights else None,
        "delta_bias": 0.5 * torch.rand(K, dim, generator=g) if has_bias else None,
        "z": r(batch, L, dim) if has_z else None,
    }
    for name in ACTIVATIONS if dtype != torch.float64 else x:
        if x[name] is not None:
            x[name] = x[name].to(dtype)
    orders = grid_orders(H, W, K, g)
    return {k: None if v is None else v.to(device) for k, v in x.items()}, orders.to(device)


def _leaves(x: dict, dtype=None) -> dict:
    return {k: None if v is None else v.detach().to(dtype or v.dtype).clone().requires_grad_()
            for k, v in x.items()}


def _assert_close(name, actual, expected, rtol, atol):
    actual = actual.detach().to(torch.float64)
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (unwritten or overflowed elements)"
    torch.testing.assert_close(actual, expected.detach(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def check_multi_scan(backend: str, x: dict, orders: torch.Tensor, *, delta_softplus=True, scan_order=False,
                     merge=True, seed=0):
    """Forward and every gradient of ``multi_scan`` on ``backend`` vs the float64 reference
    (``merge=False``: the per-direction outputs; ``x["weights"]`` must then be None)."""
    dtype = x["u"].dtype
    ours, ref = _leaves(x), _leaves(x, torch.float64)
    keys = ("u", "delta", "A", "B", "C", "D")

    def call(v, name):
        return multi_scan(*(v[k] for k in keys), orders, v["weights"], v["delta_bias"], delta_softplus, v["z"],
                          scan_order, merge=merge, backend=name)

    with poisoned():
        out = call(ours, backend)
    expected = call(ref, "reference")
    assert out.dtype == dtype and out.shape == expected.shape
    _assert_close("out", out, expected, *FWD_TOL[dtype])
    gout = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed + 1)).to(out.device, dtype)
    with poisoned():
        out.backward(gout)
    expected.backward(gout.to(torch.float64))
    for name, leaf in ours.items():
        if leaf is not None:
            assert leaf.grad is not None, f"{name}: no gradient"
            _assert_close(f"grad {name}", leaf.grad, ref[name].grad, *grad_tol(name, dtype))


def make_selective_scan_inputs(batch, dim, L, N, *, groups_B=1, groups_C=1, has_D=True, has_z=True,
                               has_bias=True, dtype=torch.float32, seed=0, device="cpu"):
    """Random ``selective_scan`` inputs in mamba's layouts (dict)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = {
        "u": r(batch, dim, L),
        "delta": 0.5 * torch.rand(batch, dim, L, generator=g),
        "A": -0.5 * torch.rand(dim, N, generator=g),
        "B": r(batch, groups_B, N, L) if groups_B > 1 else r(batch, N, L),
        "C": r(batch, groups_C, N, L) if groups_C > 1 else r(batch, N, L),
        "D": r(dim) if has_D else None,
        "z": r(batch, dim, L) if has_z else None,
        "delta_bias": 0.5 * torch.rand(dim, generator=g) if has_bias else None,
    }
    for name in ACTIVATIONS if dtype != torch.float64 else x:
        if x[name] is not None:
            x[name] = x[name].to(dtype)
    return {k: None if v is None else v.to(device) for k, v in x.items()}


def check_selective_scan(backend: str, x: dict, *, delta_softplus=True, return_last_state=True, seed=0):
    """Forward (and last state) and every gradient of ``selective_scan`` vs the float64 reference."""
    dtype = x["u"].dtype
    ours, ref = _leaves(x), _leaves(x, torch.float64)
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

    def call(v, name):
        res = selective_scan(*(v[k] for k in keys), delta_softplus=delta_softplus,
                             return_last_state=return_last_state, backend=name)
        return res if return_last_state else (res, None)

    with poisoned():
        out, last = call(ours, backend)
    expected, expected_last = call(ref, "reference")
    assert out.dtype == dtype and out.shape == expected.shape
    _assert_close("out", out, expected, *FWD_TOL[dtype])
    g = torch.Generator().manual_seed(seed + 1)
    gout = torch.randn(expected.shape, generator=g).to(out.device, dtype)
    loss, loss_ref = (out * gout).sum(), (expected * gout.to(torch.float64)).sum()
    if return_last_state:
        assert last.shape == expected_last.shape
        _assert_close("last_state", last, expected_last, *FWD_TOL[dtype])
        glast = torch.randn(expected_last.shape, generator=g).to(out.device)
        loss = loss + (last * glast.to(last.dtype)).sum()
        loss_ref = loss_ref + (expected_last * glast.to(torch.float64)).sum()
    with poisoned():
        loss.backward()
    loss_ref.backward()
    for name, leaf in ours.items():
        if leaf is not None:
            assert leaf.grad is not None, f"{name}: no gradient"
            _assert_close(f"grad {name}", leaf.grad, ref[name].grad, *grad_tol(name, dtype))
