"""The CPU backends, ``torch`` and the compiled ``cpu``, against the float64 reference: forward and
every gradient. The compiled backend's own concerns (hypothesis-drawn fp32 shapes, layouts, threads,
repeatability, a missing compiler) are in ``test_kernels_cpu.py``."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scansearch.kernels import multi_scan, selective_scan
from scansearch.kernels.alloc import poisoned
from scansearch.kernels.testing import (
    CPU_BACKENDS,
    FWD_TOL,
    check_multi_scan,
    check_selective_scan,
    make_multi_scan_inputs,
    make_selective_scan_inputs,
)

# (K, H, W, dim, N, scan_order, has_D, has_z, has_bias, has_weights, softplus)
MULTI_CASES = [
    (1, 1, 1, 3, 4, False, True, True, True, True, True),       # L = 1
    (1, 1, 7, 5, 8, True, False, False, False, False, False),   # bare scan, one direction
    (2, 7, 5, 7, 16, False, True, True, True, True, True),      # non-square grid, Vim-style pair
    (2, 3, 11, 1, 4, True, True, False, True, False, True),     # dim = 1
    (4, 6, 6, 33, 16, False, True, True, True, True, True),     # VMamba cross4 orders
    (4, 5, 9, 9, 8, True, True, True, False, True, False),
    (8, 4, 7, 5, 4, False, False, True, True, True, True),      # 4 fixed + 4 random orders
    (8, 3, 4, 3, 2, True, True, False, False, True, True),
    (4, 14, 14, 17, 16, False, True, True, True, True, True),   # Vim-Ti grid, L = 196
    (2, 13, 23, 7, 16, True, True, True, True, False, True),    # L = 299
]


@pytest.mark.parametrize("case", MULTI_CASES, ids=lambda c: "K{}-{}x{}-d{}-N{}-{}".format(
    c[0], c[1], c[2], c[3], c[4], "scan" if c[5] else "image"))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_fp32(backend, case):
    K, H, W, dim, N, scan_order, has_D, has_z, has_bias, has_w, softplus = case
    x, orders = make_multi_scan_inputs(2, H, W, K, dim, N, scan_order=scan_order, has_D=has_D, has_z=has_z,
                                       has_bias=has_bias, has_weights=has_w, seed=K * 100 + H)
    check_multi_scan(backend, x, orders, delta_softplus=softplus, scan_order=scan_order)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_dtypes(backend, dtype, scan_order):
    x, orders = make_multi_scan_inputs(2, 5, 6, 4, 7, 8, scan_order=scan_order, dtype=dtype, seed=3)
    check_multi_scan(backend, x, orders, scan_order=scan_order)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_random_orders_long_sequence(backend):
    x, orders = make_multi_scan_inputs(1, 16, 20, 4, 5, 16, seed=11)
    orders = torch.stack([torch.randperm(320, generator=torch.Generator().manual_seed(k)) for k in range(4)])
    check_multi_scan(backend, x, orders)


GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "weights", "delta_bias", "z")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", GRAD_NAMES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_int32_orders_one_gradient(backend, name, dtype):
    # only `name` needs a gradient: it matches the float64 reference, the others get none
    seed = 40 + GRAD_NAMES.index(name) + (100 if dtype == torch.float64 else 0)
    x, orders = make_multi_scan_inputs(2, 4, 5, 3, 5, 4, dtype=dtype, seed=seed)
    orders[2] = torch.randperm(20, generator=torch.Generator().manual_seed(seed))
    keys = ("u", "delta", "A", "B", "C", "D")
    ours = {k: v.clone() for k, v in x.items()}
    ref = {k: v.to(torch.float64) for k, v in x.items()}
    ours[name].requires_grad_()
    ref[name].requires_grad_()
    with poisoned():
        out = multi_scan(*(ours[k] for k in keys), orders.int(), ours["weights"], ours["delta_bias"], True,
                         ours["z"], backend=backend)
    expected = multi_scan(*(ref[k] for k in keys), orders, ref["weights"], ref["delta_bias"], True, ref["z"],
                          backend="reference")
    torch.testing.assert_close(out.to(torch.float64), expected, rtol=FWD_TOL[dtype][0], atol=FWD_TOL[dtype][1])
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with poisoned():
        out.backward(gout.to(dtype))
    expected.backward(gout)
    assert [k for k, v in ours.items() if v.grad is not None] == [name]
    rtol, atol = FWD_TOL[dtype]  # mamba's forward tolerance, tighter than its gradient ones
    torch.testing.assert_close(ours[name].grad.to(torch.float64), ref[name].grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_gradient_without_D(backend):
    x, orders = make_multi_scan_inputs(2, 4, 4, 2, 5, 4, has_D=False, seed=6)
    grads = {}
    for name, dtype in ((backend, torch.float32), ("reference", torch.float64)):
        u = x["u"].to(dtype).clone().requires_grad_()
        rest = (x[k].to(dtype) for k in ("delta", "A", "B", "C"))
        multi_scan(u, *rest, None, orders, backend=name).sum().backward()
        grads[name] = u.grad
    torch.testing.assert_close(grads[backend].double(), grads["reference"], rtol=6e-4, atol=2e-3)


# (groups_B, groups_C, dim, L, has_D, has_z, has_bias, softplus, return_last_state)
SELECTIVE_CASES = [
    (1, 1, 4, 64, True, True, True, True, True),      # mamba's test configuration, small
    (1, 1, 5, 1, False, False, False, False, True),   # L = 1, bare
    (2, 2, 6, 37, True, True, True, True, True),      # grouped B and C
    (2, 4, 8, 20, True, False, True, False, True),    # different groupings
    (4, 1, 12, 129, False, True, False, True, False),
    (1, 1, 3, 300, True, True, True, True, True),
]


@pytest.mark.parametrize("case", SELECTIVE_CASES, ids=lambda c: "gB{}-gC{}-d{}-L{}".format(*c[:4]))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_selective_scan(backend, case):
    gB, gC, dim, L, has_D, has_z, has_bias, softplus, rls = case
    x = make_selective_scan_inputs(2, dim, L, 8, groups_B=gB, groups_C=gC, has_D=has_D, has_z=has_z,
                                   has_bias=has_bias, seed=L)
    check_selective_scan(backend, x, delta_softplus=softplus, return_last_state=rls)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_selective_scan_low_precision(backend, dtype):
    x = make_selective_scan_inputs(2, 6, 50, 8, groups_B=2, groups_C=2, dtype=dtype, seed=7)
    check_selective_scan(backend, x)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_selective_scan_last_state_only_gradient(backend):
    x = make_selective_scan_inputs(1, 4, 10, 4, seed=2)
    u = x["u"].clone().requires_grad_()
    _, last = selective_scan(u, x["delta"], x["A"], x["B"], x["C"], return_last_state=True, backend=backend)
    last.sum().backward()
    u_ref = x["u"].clone().requires_grad_()
    _, last_ref = selective_scan(u_ref, x["delta"], x["A"], x["B"], x["C"], return_last_state=True,
                                 backend="reference")
    last_ref.sum().backward()
    torch.testing.assert_close(u.grad, u_ref.grad, rtol=1.2e-3, atol=4e-3)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 7), K=st.integers(1, 4),
    dim=st.integers(1, 9), N=st.integers(1, 9), scan_order=st.booleans(), has_D=st.booleans(),
    has_z=st.booleans(), has_bias=st.booleans(), has_weights=st.booleans(), softplus=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multi_scan_hypothesis(batch, H, W, K, dim, N, scan_order, has_D, has_z, has_bias, has_weights,
                               softplus, seed):
    x, orders = make_multi_scan_inputs(batch, H, W, K, dim, N, scan_order=scan_order, has_D=has_D,
                                       has_z=has_z, has_bias=has_bias, has_weights=has_weights,
                                       dtype=torch.float64, seed=seed)
    orders = torch.stack([torch.randperm(H * W, generator=torch.Generator().manual_seed(seed + k))
                          for k in range(K)])
    check_multi_scan("torch", x, orders, delta_softplus=softplus, scan_order=scan_order, seed=seed)


@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multi_scan_many_short_chunks(backend, short_chunks, scan_order):
    x, orders = make_multi_scan_inputs(2, 4, 5, 3, 6, 4, scan_order=scan_order, seed=9)
    check_multi_scan(backend, x, orders, scan_order=scan_order)
    check_selective_scan(backend, make_selective_scan_inputs(2, 4, 20, 4, groups_B=2, groups_C=2, seed=4))
