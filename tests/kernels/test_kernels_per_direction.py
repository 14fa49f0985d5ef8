"""``multi_scan(..., merge=False)``: each direction's output on its own, in image order, from one call.

Against the float64 reference (forward and every gradient), against the merged op
(the weighted sum over directions), against K separate K=1 calls (what a caller did
before), and the argument checks. The ``triton`` cases run under the interpreter in
``test_kernels_triton.py``; the op's registration (opcheck, FLOPs, torch.compile) in
``test_kernels_op.py``.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scansearch.kernels import OrderError, multi_scan, multi_scan_ref
from scansearch.kernels.alloc import poisoned
from scansearch.kernels.testing import CPU_BACKENDS, FWD_TOL, check_multi_scan, make_multi_scan_inputs

KEYS = ("u", "delta", "A", "B", "C", "D")
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias", "z")

# (K, H, W, dim, N, scan_order, has_D, has_z, has_bias, softplus)
CASES = [
    (1, 1, 1, 3, 4, False, True, True, True, True),       # L = 1
    (1, 3, 5, 5, 8, True, False, False, False, False),    # bare scan, one direction
    (2, 7, 5, 7, 16, False, True, True, True, True),      # non-square grid, Vim-style pair
    (2, 3, 11, 6, 4, True, True, True, True, True),
    (3, 4, 7, 5, 4, False, False, True, True, True),      # no D
    (3, 5, 3, 4, 8, True, True, False, True, False),      # no z
    (4, 6, 6, 33, 16, False, True, True, True, True),     # VMamba cross4 orders
    (4, 5, 9, 9, 8, True, True, True, False, True),
    (4, 4, 6, 5, 4, False, False, False, False, True),    # neither D nor z
    (8, 3, 4, 3, 2, False, True, True, True, True),       # 4 fixed + 4 random orders
    (4, 14, 14, 17, 16, True, True, True, True, True),    # Vim-Ti grid, L = 196
]


def _id(c):
    return "K{}-{}x{}-d{}-N{}-{}{}{}".format(*c[:5], "scan" if c[5] else "image", "-D" if c[6] else "",
                                            "-z" if c[7] else "")


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_fp32(backend, case):
    K, H, W, dim, N, scan_order, has_D, has_z, has_bias, softplus = case
    x, orders = make_multi_scan_inputs(2, H, W, K, dim, N, scan_order=scan_order, has_D=has_D, has_z=has_z,
                                       has_bias=has_bias, has_weights=False, seed=K * 100 + H * 10 + W)
    check_multi_scan(backend, x, orders, delta_softplus=softplus, scan_order=scan_order, merge=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_dtypes(backend, dtype, scan_order, gate):
    x, orders = make_multi_scan_inputs(2, 5, 6, 3, 7, 8, scan_order=scan_order, has_D=gate, has_z=gate,
                                       has_weights=False, dtype=dtype, seed=5 + scan_order)
    check_multi_scan(backend, x, orders, scan_order=scan_order, merge=False)


@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_many_short_chunks(backend, short_chunks, scan_order):
    x, orders = make_multi_scan_inputs(2, 4, 5, 3, 6, 4, scan_order=scan_order, has_weights=False, seed=9)
    check_multi_scan(backend, x, orders, scan_order=scan_order, merge=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_random_orders_int32(backend):
    x, orders = make_multi_scan_inputs(2, 4, 5, 3, 5, 4, has_weights=False, seed=12)
    orders = torch.stack([torch.randperm(20, generator=torch.Generator().manual_seed(k)) for k in range(3)])
    check_multi_scan(backend, x, orders.int(), merge=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", GRAD_NAMES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_one_gradient(backend, name, dtype):
    # only `name` needs a gradient: it matches the float64 reference, the others get none
    seed = 70 + GRAD_NAMES.index(name) + (100 if dtype == torch.float64 else 0)
    x, orders = make_multi_scan_inputs(2, 4, 5, 3, 5, 4, has_weights=False, dtype=dtype, seed=seed)
    ours = {k: v.clone() for k, v in x.items() if v is not None}
    ref = {k: v.to(torch.float64) for k, v in ours.items()}
    ours[name].requires_grad_()
    ref[name].requires_grad_()

    def call(v, backend):
        return multi_scan(*(v[k] for k in KEYS), orders, None, v["delta_bias"], True, v["z"], merge=False,
                          backend=backend)

    with poisoned():
        out = call(ours, backend)
    expected = call(ref, "reference")
    torch.testing.assert_close(out.to(torch.float64), expected, rtol=FWD_TOL[dtype][0], atol=FWD_TOL[dtype][1])
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with poisoned():
        out.backward(gout.to(dtype))
    expected.backward(gout)
    assert [k for k, v in ours.items() if v.grad is not None] == [name]
    torch.testing.assert_close(ours[name].grad.to(torch.float64), ref[name].grad, rtol=FWD_TOL[dtype][0],
                               atol=FWD_TOL[dtype][1])


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "reference"])
@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("K, H, W", [(1, 3, 4), (2, 3, 5), (4, 4, 6)])
def test_weighted_sum_of_directions_is_the_merged_output(backend, scan_order, K, H, W):
    """sum_k w_k out[:, :, k] (merge=False) is the merged output with weights w, forward and
    every gradient (weights included, through the sum)."""
    x, orders = make_multi_scan_inputs(2, H, W, K, 6, 4, scan_order=scan_order, seed=K + H,
                                       dtype=torch.float64 if backend == "reference" else torch.float32)
    runs = []
    for merge in (True, False):
        v = {k: None if t is None else t.clone().requires_grad_() for k, t in x.items()}
        out = multi_scan(*(v[k] for k in KEYS), orders, v["weights"] if merge else None, v["delta_bias"], True,
                         v["z"], scan_order, merge=merge, backend=backend)
        if not merge:
            assert out.shape == (2, H * W, K, 6)
            out = torch.einsum("blkd,k->bld", out, v["weights"])
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype))
        runs.append((out, v))
    (merged, vm), (summed, vs) = runs
    rtol, atol = (1e-10, 1e-10) if backend == "reference" else (1e-5, 1e-5)
    torch.testing.assert_close(summed, merged, rtol=rtol, atol=atol)
    for name, leaf in vm.items():
        if leaf is not None:
            torch.testing.assert_close(vs[name].grad, leaf.grad, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_separate_single_direction_calls(backend, scan_order):
    """One merge=False call returns what K calls with K=1 (the per-direction path it replaces) stack."""
    K = 4
    x, orders = make_multi_scan_inputs(2, 3, 5, K, 6, 4, scan_order=scan_order, has_weights=False, seed=21)
    leaves = [{k: None if t is None else t.clone().requires_grad_() for k, t in x.items()} for _ in range(2)]
    one = leaves[0]
    out = multi_scan(*(one[k] for k in KEYS), orders, None, one["delta_bias"], True, one["z"], scan_order,
                     merge=False, backend=backend)
    v = leaves[1]
    ys = []
    for k in range(K):
        s = slice(k, k + 1)
        ys.append(multi_scan(v["u"][:, :, s] if scan_order else v["u"], v["delta"][:, :, s], v["A"][s],
                             v["B"][:, :, s], v["C"][:, :, s], v["D"][s], orders[s], None, v["delta_bias"][s],
                             True, v["z"], scan_order, backend=backend))
    separate = torch.stack(ys, dim=2)
    torch.testing.assert_close(out, separate, rtol=1e-5, atol=1e-6)
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    out.backward(gout)
    separate.backward(gout)
    for name, leaf in one.items():
        if leaf is not None:
            torch.testing.assert_close(leaf.grad, v[name].grad, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "reference", "triton"])
def test_weights_rejected(backend):
    # checked before the backend is chosen: the same error wherever it would have run
    x, orders = make_multi_scan_inputs(1, 2, 3, 2, 4, 4, seed=0)
    with pytest.raises(ValueError, match=r"^multi_scan: weights must be None with merge=False") as err:
        multi_scan(*(x[k] for k in KEYS), orders, x["weights"], merge=False, backend=backend)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^multi_scan_ref: weights must be None with merge=False"):
        multi_scan_ref(*(x[k] for k in KEYS), orders, x["weights"], merge=False)
    args = [*(x[k] for k in KEYS), orders, x["weights"], None, None, True, False, "torch", False]
    with pytest.raises(ValueError, match=r"^scansearch::multi_scan: weights must be None with merge=False"):
        torch.ops.scansearch.multi_scan(*args)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "reference"])
@pytest.mark.parametrize("scan_order", [False, True])
def test_bad_orders_rejected(backend, scan_order):
    x, orders = make_multi_scan_inputs(1, 3, 3, 2, 4, 4, scan_order=scan_order, has_weights=False, seed=1)
    bad = orders.clone()
    bad[1, 4] = bad[1, 0]
    with pytest.raises(OrderError, match=rf"^multi_scan: orders row 1 is not a permutation of range\(9\): "
                                         rf"{int(bad[1, 0])} appears twice$"):
        multi_scan(*(x[k] for k in KEYS), bad, None, x["delta_bias"], True, x["z"], scan_order, merge=False,
                   backend=backend)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 7), K=st.integers(1, 4),
    dim=st.integers(1, 9), N=st.integers(1, 9), scan_order=st.booleans(), has_D=st.booleans(),
    has_z=st.booleans(), has_bias=st.booleans(), softplus=st.booleans(), seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_direction_hypothesis(backend, batch, H, W, K, dim, N, scan_order, has_D, has_z, has_bias, softplus,
                                  seed):
    x, orders = make_multi_scan_inputs(batch, H, W, K, dim, N, scan_order=scan_order, has_D=has_D,
                                       has_z=has_z, has_bias=has_bias, has_weights=False, seed=seed)
    check_multi_scan(backend, x, orders, delta_softplus=softplus, scan_order=scan_order, merge=False, seed=seed)

