"""Order tables are checked where they enter the kernels: once per table and version."""
import gc

import pytest
import torch

from scansearch.kernels import OrderError, multi_scan
from scansearch.kernels import validate
from scansearch.kernels.testing import make_multi_scan_inputs

KEYS = ("u", "delta", "A", "B", "C", "D")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _inputs(K=3, H=3, W=3, seed=0):
    return make_multi_scan_inputs(2, H, W, K, 4, 4, seed=seed)


def _call(x, orders, backend="torch", scan_order=False, merge=True):
    return multi_scan(*(x[k] for k in KEYS), orders, x["weights"] if merge else None, x["delta_bias"], True,
                      x["z"], scan_order, merge=merge, backend=backend)


@pytest.fixture
def checks(monkeypatch):
    """Count the real permutation checks (cache misses)."""
    calls = []
    real = validate._check_permutations
    monkeypatch.setattr(validate, "_check_permutations", lambda fn, t: calls.append(tuple(t.shape)) or real(fn, t))
    return calls


def _bad(orders, row, pos, kind):
    """A copy of ``orders`` whose entry (row, pos) is a duplicate, -1 or L; returns (table, message tail)."""
    bad = orders.clone()
    L = bad.shape[1]
    if kind == "duplicate":
        other = (pos + L // 2) % L
        bad[row, pos] = bad[row, other]
        return bad, f"{int(bad[row, other])} appears twice"
    value = -1 if kind == "negative" else L
    bad[row, pos] = value
    return bad, f"entry {value} out of range"


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("kind", ["duplicate", "negative", "too_large"])
@pytest.mark.parametrize("row, pos", [(0, 0), (1, 4), (2, 8)])
def test_bad_row_named(backend, kind, row, pos):
    x, orders = _inputs()
    bad, tail = _bad(orders, row, pos, kind)
    with pytest.raises(OrderError) as err:
        _call(x, bad, backend)
    assert str(err.value) == f"multi_scan: orders row {row} is not a permutation of range(9): {tail}"
    assert isinstance(err.value, ValueError)
    with pytest.raises(OrderError, match=f"orders row {row} "):  # int32 tables too, and scan-order inputs
        xs, _ = make_multi_scan_inputs(2, 3, 3, 3, 4, 4, scan_order=True, seed=1)
        _call(xs, bad.int(), backend, scan_order=True)
    for scan_order in (False, True):  # the per-direction outputs read the same table
        xs, _ = make_multi_scan_inputs(2, 3, 3, 3, 4, 4, scan_order=scan_order, seed=2)
        with pytest.raises(OrderError) as err:
            _call(xs, bad, backend, scan_order=scan_order, merge=False)
        assert str(err.value) == f"multi_scan: orders row {row} is not a permutation of range(9): {tail}"


def test_first_bad_row_and_repeat_count():
    x, orders = _inputs()
    bad = orders.clone()
    bad[1, :3] = bad[1, 5]
    bad[2, 0] = 99
    with pytest.raises(OrderError, match=rf"orders row 1 .*: {int(orders[1, 5])} appears 4 times$"):
        _call(x, bad)


def test_custom_ops_check_their_orders():
    x, orders = _inputs()
    bad, _ = _bad(orders, 2, 3, "too_large")
    args = [x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], bad, x["weights"], x["delta_bias"], x["z"],
            True, False, "torch"]
    with pytest.raises(OrderError, match=r"^scansearch::multi_scan: orders row 2 .*entry 9 out of range"):
        torch.ops.scansearch.multi_scan(*args)
    args[6] = orders
    out, ysum, ckpts = torch.ops.scansearch.multi_scan(*args)
    grad_args = [torch.ones_like(out), *args[:6], bad, *args[7:10], ysum, ckpts, True, False, "torch", [True] * 9]
    with pytest.raises(OrderError, match=r"^scansearch::multi_scan_backward: orders row 2 "):
        torch.ops.scansearch.multi_scan_backward(*grad_args)
    # the per-direction mode (the ops' last argument) checks its table in both ops too
    args[6], args[7] = bad, None
    with pytest.raises(OrderError, match=r"^scansearch::multi_scan: orders row 2 .*entry 9 out of range"):
        torch.ops.scansearch.multi_scan(*args, False)
    args[6] = orders
    out, ysum, ckpts = torch.ops.scansearch.multi_scan(*args, False)
    grad_args = [torch.ones_like(out), *args[:6], bad, *args[7:10], ysum, ckpts, True, False, "torch", [True] * 9,
                 False]
    with pytest.raises(OrderError, match=r"^scansearch::multi_scan_backward: orders row 2 "):
        torch.ops.scansearch.multi_scan_backward(*grad_args)


def test_checked_once_per_table(checks):
    x, orders = _inputs()
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    for _ in range(3):
        _call(leaves, orders).sum().backward()
        _call(leaves, orders, "reference")
    assert checks == [(3, 9)]
    table32 = orders.int()  # converted inside the op, not before it: still one check
    for _ in range(3):
        _call(leaves, table32).sum().backward()
    assert checks == [(3, 9)] * 2
    # a model's per-direction calls pass slices of its cached table: one check per slice
    for _ in range(3):
        for k in range(3):
            one = slice(k, k + 1)
            multi_scan(x["u"], x["delta"][:, :, one], x["A"][one], x["B"][:, :, one], x["C"][:, :, one], None,
                       orders[one], backend="torch")
    assert checks == [(3, 9)] * 2 + [(1, 9)] * 3


def test_per_direction_mode_shares_the_verdict(checks):
    x, orders = _inputs()
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    for scan_order in (False, True):
        xs = leaves if not scan_order else {
            **leaves, "u": make_multi_scan_inputs(2, 3, 3, 3, 4, 4, scan_order=True)[0]["u"].requires_grad_()}
        for _ in range(3):
            _call(xs, orders, scan_order=scan_order, merge=False).sum().backward()
            _call(xs, orders, scan_order=scan_order).sum().backward()
            _call(xs, orders, "reference", scan_order=scan_order, merge=False)
    assert checks == [(3, 9)]


def test_model_forward_checks_its_tables_once(checks):
    from scansearch.models import ScanMixer

    mixer = ScanMixer(8, ("h", "v_flip", "w2"), d_state=4, expand=1.0)
    x = torch.randn(2, 12, 8)
    for _ in range(3):
        mixer(x, (3, 4)).sum().backward()
    assert checks == [(3, 12)]


def test_direction_subsets_check_each_subset_table_once(checks):
    """The supernet's Gumbel paths scan a subset of rows: one cached table per subset."""
    from scansearch.models import DirectionSubset, ScanMixer

    mixer = ScanMixer(8, ("h", "v_flip", "w2", "w2_flip"), d_state=4, expand=1.0)
    x = torch.randn(2, 12, 8)
    for _ in range(3):
        for rows in ([0, 2], [1, 3], [0, 2]):
            subset = DirectionSubset(torch.tensor(rows), torch.full((2,), 0.5))
            mixer(x, (3, 4), subset).sum().backward()
    assert checks == [(2, 12), (2, 12)]


def test_in_place_change_is_rechecked(checks):
    x, orders = _inputs()
    _call(x, orders)
    _call(x, orders)
    assert len(checks) == 1
    kept = int(orders[1, 2])
    orders[1, 2] = orders[1, 7]  # bumps the version counter
    with pytest.raises(OrderError, match=rf"orders row 1 .*: {int(orders[1, 7])} appears twice"):
        _call(x, orders)
    orders[1, 2] = kept
    _call(x, orders)
    _call(x, orders)
    assert len(checks) == 3
    view = orders[2:]
    view[0, 0] = view[0, 1]  # an edit through a view bumps the counter it shares with its base
    with pytest.raises(OrderError, match="orders row 2 "):
        _call(x, orders)


def test_dead_table_verdict_not_reused():
    # A new table at a dead one's address, often with its id, version 0 and the same shape:
    # two tensors over one numpy buffer, edited through numpy (no torch version bump).
    x, orders = _inputs()
    buffer = orders.numpy().copy()
    for _ in range(20):
        buffer[0, 0] = orders[0, 0]
        good = torch.from_numpy(buffer)
        _call(x, good)
        del good
        gc.collect()
        buffer[0, 0] = buffer[0, 1]
        bad = torch.from_numpy(buffer)
        with pytest.raises(OrderError, match="orders row 0 "):
            _call(x, bad)
        del bad


def test_verdicts_freed_with_their_tables():
    x, orders = _inputs()
    before = len(validate._verified)
    tables = [orders.clone() for _ in range(5)]
    for t in tables:
        _call(x, t)
    assert len(validate._verified) == before + 5
    del tables, t
    gc.collect()
    assert len(validate._verified) == before


def test_torch_compile_checks_at_run_time(checks):
    x, orders = _inputs(K=2, seed=3)
    bad, _ = _bad(orders, 1, 0, "duplicate")
    torch._dynamo.reset()
    f = torch.compile(lambda u, delta, A, B, C, D, o: multi_scan(u, delta, A, B, C, D, o, backend="torch"),
                      fullgraph=True)
    args = [x[k] for k in KEYS]
    for _ in range(2):
        f(*args, orders)
    assert checks == [(2, 9)]
    with pytest.raises(OrderError, match=r"orders row 1 "):
        f(*args, bad)
