"""The ``scansearch::multi_scan`` custom op: registration, FLOPs, torch.compile, memory, validation."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scansearch.kernels import multi_scan
from scansearch.kernels.testing import make_multi_scan_inputs

KEYS = ("u", "delta", "A", "B", "C", "D")
# torch's own imports (dynamo, opcheck) trip this deprecation; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _args(x, orders, softplus=True, scan_order=False):
    return (*(x[k] for k in KEYS), orders, x["weights"], x["delta_bias"], softplus, x["z"], scan_order)


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("scan_order", [False, True])
@pytest.mark.parametrize("optional", [True, False])
def test_opcheck(scan_order, optional, merge):
    x, orders = make_multi_scan_inputs(2, 3, 4, 2, 5, 4, scan_order=scan_order, has_D=optional,
                                       has_z=optional, has_bias=optional, has_weights=optional and merge, seed=1)
    for k, v in x.items():
        if v is not None:
            v.requires_grad_()
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders, x["weights"], x["delta_bias"], x["z"],
            True, scan_order, "torch")
    if not merge:  # the per-direction mode is the op's last argument; omitted it is the merged op
        args = (*args, False)
    torch.library.opcheck(torch.ops.scansearch.multi_scan.default, args)


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("z", [True, False])
def test_fake_shapes_match_real(merge, z):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, orders = make_multi_scan_inputs(2, 3, 5, 3, 4, 4, has_z=z, has_weights=merge, seed=8)
    args = (*(x[k] for k in KEYS), orders, x["weights"], x["delta_bias"], x["z"], True, False, "torch", merge)
    real = torch.ops.scansearch.multi_scan(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = torch.ops.scansearch.multi_scan(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                                 for a in args))
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert [t.dtype for t in fake] == [t.dtype for t in real]
    assert real[0].shape == ((2, 15, 4) if merge else (2, 15, 3, 4))


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("has_D", [True, False])
def test_flop_count(has_D, merge):
    # the same FLOPs whether the K outputs are summed or returned each on its own
    batch, H, W, K, dim, N = 2, 3, 5, 4, 6, 8
    x, orders = make_multi_scan_inputs(batch, H, W, K, dim, N, has_D=has_D, has_weights=merge, seed=2)
    with FlopCounterMode(display=False) as counter:
        multi_scan(*_args(x, orders), merge=merge, backend="torch")
    L = H * W
    expected = K * (9 * batch * L * dim * N + (batch * L * dim if has_D else 0))
    assert counter.get_total_flops() == expected


@pytest.mark.slow  # torch.compile takes about 10 s a case: the full suite runs it
@pytest.mark.parametrize("merge", [True, False])
def test_torch_compile_fullgraph(merge):
    x, orders = make_multi_scan_inputs(2, 3, 3, 2, 4, 4, seed=3)
    if not merge:
        x["weights"] = torch.ones(2)  # weighted after the call instead: every leaf still gets a gradient
    leaves = {k: None if v is None else v.clone().requires_grad_() for k, v in x.items()}

    def f(u, delta, A, B, C, D, weights, delta_bias, z):
        if merge:
            return multi_scan(u, delta, A, B, C, D, orders, weights, delta_bias, True, z, backend="torch")
        ys = multi_scan(u, delta, A, B, C, D, orders, None, delta_bias, True, z, merge=False, backend="torch")
        assert ys.shape == (2, 9, 2, 4)
        return torch.einsum("blkd,k->bld", ys, weights)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    names = ("u", "delta", "A", "B", "C", "D", "weights", "delta_bias", "z")
    out = compiled(*(leaves[k] for k in names))
    expected = f(*(x[k] for k in names))
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    ref = {k: v.clone().requires_grad_() for k, v in x.items()}
    f(*(ref[k] for k in names)).sum().backward()
    for k in names:
        torch.testing.assert_close(leaves[k].grad, ref[k].grad, msg=k)


def _saved_bytes(fn):
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_saved_memory_below_materialized():
    from scansearch.kernels import selective_scan

    batch, H, W, K, dim, N = 2, 8, 8, 4, 16, 8
    x, orders = make_multi_scan_inputs(batch, H, W, K, dim, N, has_z=False, has_weights=False, seed=4)
    leaves = {k: None if v is None else v.clone().requires_grad_() for k, v in x.items()}
    L = H * W

    def fused():
        return multi_scan(*_args(leaves, orders), backend="torch")

    def materialized():  # VMamba's pipeline: permuted copies, one grouped scan, un-permute, sum
        u = leaves["u"][:, orders].permute(0, 1, 3, 2).reshape(batch, K * dim, L)
        idx = torch.arange(K)[:, None]
        delta = leaves["delta"][:, orders, idx].permute(0, 1, 3, 2).reshape(batch, K * dim, L)
        B = leaves["B"][:, orders, idx].permute(0, 1, 3, 2)
        C = leaves["C"][:, orders, idx].permute(0, 1, 3, 2)
        y = selective_scan(u, delta, leaves["A"].reshape(K * dim, N), B, C, leaves["D"].reshape(-1),
                           delta_bias=leaves["delta_bias"].reshape(-1), delta_softplus=True, backend="torch")
        y = y.view(batch, K, dim, L).transpose(2, 3)
        inverse = torch.argsort(orders, dim=1)
        return sum(y[:, k, inverse[k]] for k in range(K))

    torch.testing.assert_close(fused(), materialized())
    assert _saved_bytes(fused) <= _saved_bytes(materialized)


@pytest.mark.parametrize("change, match", [
    (lambda x, o: x.update(delta=x["delta"][:, :, :1]), r"delta must have shape \(batch, L, K, dim\)"),
    (lambda x, o: x.update(B=x["B"][..., :2]), r"B must have shape \(batch, L, K, N\)"),
    (lambda x, o: x.update(D=x["D"][0]), r"D must have shape \(K, dim\)"),
    (lambda x, o: x.update(z=x["z"][:, :, :1]), r"z must have shape \(batch, L, dim\)"),
    (lambda x, o: x.update(weights=x["weights"][:1]), r"weights must have shape \(K\)"),
    (lambda x, o: x.update(u=x["u"].long()), r"u must be float16, bfloat16, float32 or float64"),
    (lambda x, o: x.update(A=x["A"][0]), r"A must have shape \(K, dim, N\)"),
])
def test_validation_messages(change, match):
    x, orders = make_multi_scan_inputs(2, 3, 3, 2, 4, 4, seed=5)
    change(x, orders)
    with pytest.raises(ValueError, match=match):
        multi_scan(*_args(x, orders), backend="torch")


def test_validation_orders():
    x, orders = make_multi_scan_inputs(2, 3, 3, 2, 4, 4, seed=5)
    with pytest.raises(ValueError, match=r"orders must have shape \(K, L\) = \(2, 9\)"):
        multi_scan(*_args(x, orders[:, :5]), backend="torch")
    with pytest.raises(ValueError, match="orders must be an int64"):
        multi_scan(*_args(x, orders.float()), backend="torch")


def test_selective_scan_validation():
    from scansearch.kernels import selective_scan

    u = torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match="B has 4 groups, which must divide dim = 6"):
        selective_scan(u, u, torch.rand(6, 3), torch.randn(2, 4, 3, 5), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"A must have shape \(dim, N\)"):
        selective_scan(u, u, torch.rand(5, 3), torch.randn(2, 3, 5), torch.randn(2, 3, 5))
