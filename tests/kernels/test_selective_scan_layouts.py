"""``selective_scan`` with mamba's time-invariant (dim, N) B and C, on every backend that runs
here, against the float64 reference; and the inputs it refuses (complex A, B, C; bad shapes)."""
import os
import re

import pytest
import torch
import torch.nn.functional as F

from scansearch.kernels import available_backends, selective_scan, selective_scan_ref
from scansearch.kernels.testing import FWD_TOL, check_selective_scan, grad_tol, make_selective_scan_inputs

INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"


def _backends():
    """Every backend whose status is "ok"; triton (CPU tensors here) only under its interpreter."""
    params = []
    for name, status in available_backends().items():
        if status != "ok":
            continue
        skip = name == "triton" and not INTERPRET
        params.append(pytest.param(name, marks=pytest.mark.skipif(skip, reason="triton on CPU tensors "
                                                                  "needs TRITON_INTERPRET=1")))
    return params


BACKENDS = _backends()


def _tiny_only(backend, shape):
    """The Triton interpreter is slow: it runs only the tiny shape."""
    if backend == "triton" and shape != TINY:
        pytest.skip("the Triton interpreter runs only the tiny shape")


def _layout(x, which, kind, groups, g):
    """Replace x[which] with a B or C of layout ``kind``: "shared" (batch, N, L),
    "grouped" (batch, groups, N, L) or "dimN" (dim, N)."""
    batch, dim, L = x["u"].shape
    N = x["A"].shape[1]
    shape = {"shared": (batch, N, L), "grouped": (batch, groups, N, L), "dimN": (dim, N)}[kind]
    x[which] = torch.randn(*shape, generator=g)


# (batch, dim, L, N, groups for a grouped B or C)
TINY = (1, 3, 10, 2, 3)
SHAPES = [
    TINY,
    (2, 9, 13, 4, 3),    # odd dim
    (3, 6, 1, 5, 2),     # L = 1
    (2, 5, 150, 3, 5),   # several chunks of the torch backend
]
# (B layout, C layout)
LAYOUTS = [("dimN", "shared"), ("shared", "dimN"), ("dimN", "dimN"), ("dimN", "grouped"), ("grouped", "dimN")]
# (has_D, has_z, has_bias, softplus, return_last_state)
OPTIONS = [(True, True, True, True, True), (False, False, False, False, False),
           (True, False, True, False, True), (False, True, False, True, False)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "".join("DzbSl"[i] if v else "-" for i, v in enumerate(o)))
@pytest.mark.parametrize("layout", LAYOUTS, ids="-".join)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}-d{}-L{}-N{}-g{}".format(*s))
@pytest.mark.parametrize("backend", BACKENDS)
def test_time_invariant_matches_reference(backend, shape, layout, options):
    _tiny_only(backend, shape)
    batch, dim, L, N, groups = shape
    has_D, has_z, has_bias, softplus, rls = options
    x = make_selective_scan_inputs(batch, dim, L, N, has_D=has_D, has_z=has_z, has_bias=has_bias,
                                   seed=dim * 100 + L)
    g = torch.Generator().manual_seed(L)
    for which, kind in zip("BC", layout):
        _layout(x, which, kind, groups, g)
    check_selective_scan(backend, x, delta_softplus=softplus, return_last_state=rls)


def _mamba_loop(u, delta, A, B, C, D, z, delta_bias, softplus):
    """mamba's per-channel recurrence, written out: B, C given per (batch, channel, n, step)."""
    batch, dim, L = u.shape
    dt = delta + delta_bias[:, None]
    dt = F.softplus(dt) if softplus else dt
    rows = []
    for b in range(batch):
        for d in range(dim):
            h, ys = torch.zeros_like(A[d]), []
            for t in range(L):
                h = torch.exp(dt[b, d, t] * A[d]) * h + dt[b, d, t] * u[b, d, t] * B[b, d, :, t]
                ys.append((h * C[b, d, :, t]).sum() + D[d] * u[b, d, t])
            rows.append(torch.stack(ys))
    return torch.stack(rows).view(batch, dim, L) * F.silu(z)


@pytest.mark.parametrize("which", ["B", "C", "BC"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_time_invariant_is_per_channel_row_at_every_step(backend, which):
    """A (dim, N) B (or C) is the row B[d] used by channel d at every step of every batch
    element; its gradient is the per-step gradient summed over batch and L."""
    shape = TINY if backend == "triton" else (2, 5, 6, 3, 1)
    batch, dim, L, N, _ = shape
    x = make_selective_scan_inputs(batch, dim, L, N, seed=7)
    g = torch.Generator().manual_seed(8)
    for name in which:
        x[name] = torch.randn(dim, N, generator=g)
    ours = {k: v.clone().requires_grad_() for k, v in x.items()}
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    out = selective_scan(*(ours[k] for k in keys), delta_softplus=True, backend=backend)

    ref = {k: v.double() for k, v in x.items()}
    full = {}  # the (batch, dim, N, L) B and C that mamba's math reads, as independent leaves
    for name in "BC":
        v = ref[name]
        if v.dim() == 2:
            v = v[None, :, :, None].expand(batch, dim, N, L)
        else:  # (batch, N, L): one row for all channels
            v = v[:, None].expand(batch, dim, N, L)
        full[name] = v.clone().requires_grad_()
    expected = _mamba_loop(ref["u"], ref["delta"], ref["A"], full["B"], full["C"], ref["D"], ref["z"],
                           ref["delta_bias"], True)
    torch.testing.assert_close(out.double(), expected, rtol=FWD_TOL[torch.float32][0],
                               atol=FWD_TOL[torch.float32][1])

    gout = torch.randn(out.shape, generator=g)
    out.backward(gout)
    expected.backward(gout.double())
    for name in which:
        assert ours[name].grad.shape == (dim, N)
        torch.testing.assert_close(ours[name].grad.double(), full[name].grad.sum((0, 3)),
                                   rtol=grad_tol(name, torch.float32)[0], atol=grad_tol(name, torch.float32)[1])


def _inputs():
    x = make_selective_scan_inputs(2, 6, 7, 4, seed=3)
    return [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]


def _refused(backend, args, match):
    with pytest.raises(ValueError, match=match) as info:
        selective_scan(*args, backend=backend)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_refused(backend):
    u, delta, A, B, C, D, z, bias = _inputs()
    complex_A = torch.complex(A, torch.rand_like(A))
    msg_A = r"^selective_scan: complex A \(as in S4D-complex\) is not supported; pass a real A$"
    _refused(backend, (u, delta, complex_A, B, C, D, z, bias), msg_A)
    # mamba's complex pairing: complex A with complex (dim, N) B and C
    cB = torch.complex(torch.randn(6, 4), torch.randn(6, 4))
    _refused(backend, (u, delta, complex_A, cB, cB, D, z, bias), msg_A)
    for name in "BC":
        args = [u, delta, A, B, C, D, z, bias]
        i = 3 if name == "B" else 4
        args[i] = torch.complex(args[i], torch.randn_like(args[i]))
        _refused(backend, args, rf"^selective_scan: complex {name} is not supported .*; pass a real {name}$")
        args[i] = cB
        _refused(backend, args, rf"complex {name} is not supported")
    with pytest.raises(ValueError, match=r"selective_scan_ref: complex A \(as in S4D-complex\)"):
        selective_scan_ref(u, delta, complex_A, B, C)


SHAPES_NAMED = (r"\(batch, N, L\) = \(2, 4, 7\), \(batch, groups, N, L\) = \(2, groups, 4, 7\) "
                r"with groups dividing dim = 6, or \(dim, N\) = \(6, 4\)")


@pytest.mark.parametrize("name", ["B", "C"])
@pytest.mark.parametrize("bad", [(6, 5), (5, 4), (4, 6), (2, 4, 8), (2, 5, 7), (4,), (2, 2, 4, 6), (1, 2, 6, 4, 7)])
def test_wrong_shape_names_the_three_layouts(name, bad):
    args = _inputs()
    args[3 if name == "B" else 4] = torch.randn(*bad)
    _refused("torch", args, rf"^selective_scan: {name} must have shape {SHAPES_NAMED}; got {re.escape(str(bad))}$")


def test_wrong_groups_and_missing():
    args = _inputs()
    args[3] = torch.randn(2, 4, 4, 7)
    _refused("torch", args, r"^selective_scan: B has 4 groups, which must divide dim = 6$")
    args = _inputs()
    args[4] = None
    _refused("torch", args, rf"^selective_scan: C is required, expected shape {SHAPES_NAMED}$")
