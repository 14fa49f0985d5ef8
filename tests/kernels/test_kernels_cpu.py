"""The compiled ``cpu`` backend: hypothesis-drawn fp32 shapes against the float64 reference, any
input layout, threads and repeatability, its exp, and what happens without a compiler.

Every case of ``test_kernels_cpu_backends.py`` and ``test_kernels_per_direction.py`` runs on it
too (fixed shapes, dtypes, one gradient at a time, short chunks).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scansearch.kernels import multi_scan, multi_scan_ref, selective_scan
from scansearch.kernels import cpu_build, dispatch
from scansearch.kernels.testing import (
    check_multi_scan,
    check_selective_scan,
    make_multi_scan_inputs,
    make_selective_scan_inputs,
)

KEYS = ("u", "delta", "A", "B", "C", "D")


@pytest.fixture(autouse=True)
def _compiled():
    build = cpu_build.load()
    assert build.ok, f"the compiled CPU scan must build where the tests run: {build.why}"


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 7), K=st.integers(1, 8),
    dim=st.integers(1, 21), N=st.integers(1, 20), scan_order=st.booleans(), merge=st.booleans(),
    has_D=st.booleans(), has_z=st.booleans(), has_bias=st.booleans(), has_weights=st.booleans(),
    softplus=st.booleans(), seed=st.integers(0, 2**16),
)
def test_multi_scan_hypothesis_fp32(batch, H, W, K, dim, N, scan_order, merge, has_D, has_z, has_bias,
                                    has_weights, softplus, seed):
    x, orders = make_multi_scan_inputs(batch, H, W, K, dim, N, scan_order=scan_order, has_D=has_D,
                                       has_z=has_z, has_bias=has_bias, has_weights=has_weights and merge,
                                       seed=seed)
    orders = torch.stack([torch.randperm(H * W, generator=torch.Generator().manual_seed(seed + k))
                          for k in range(K)])
    check_multi_scan("cpu", x, orders, delta_softplus=softplus, scan_order=scan_order, merge=merge, seed=seed)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3), groups=st.sampled_from([(1, 1), (1, 3), (3, 1), (3, 3)]), per_group=st.integers(1, 7),
    L=st.integers(1, 40), N=st.integers(1, 20), has_D=st.booleans(), has_z=st.booleans(),
    has_bias=st.booleans(), softplus=st.booleans(), last=st.booleans(), seed=st.integers(0, 2**16),
)
def test_selective_scan_hypothesis_fp32(batch, groups, per_group, L, N, has_D, has_z, has_bias, softplus, last,
                                        seed):
    gB, gC = groups
    x = make_selective_scan_inputs(batch, 3 * per_group, L, N, groups_B=gB, groups_C=gC, has_D=has_D,
                                   has_z=has_z, has_bias=has_bias, seed=seed)
    check_selective_scan("cpu", x, delta_softplus=softplus, return_last_state=last, seed=seed)


def _strided(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values in another memory layout: every other element of a wider buffer, or the
    last two axes stored swapped (channel-last storage of a channel-first view)."""
    if kind == "sliced":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        out = wide[..., ::2]
    else:
        out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not out.is_contiguous() or t.shape[-1] == 1 or t.shape[-2] == 1
    return out


def _run(x, orders, layout=None, threads=None, merge=True):
    """Output and gradients of one cpu-backend call; ``layout`` restrides every input first."""
    leaves = {k: None if v is None else v.clone().requires_grad_() for k, v in x.items()}
    args = {k: None if v is None else (_strided(v, layout) if layout and v.dim() >= 2 else v)
            for k, v in leaves.items()}
    previous = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        out = multi_scan(*(args[k] for k in KEYS), orders, args["weights"] if merge else None,
                         args["delta_bias"], True, args["z"], merge=merge, backend="cpu")
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)))
    finally:
        torch.set_num_threads(previous)
    return [out.detach()] + [v.grad for v in leaves.values() if v is not None]


@pytest.mark.parametrize("layout", ["sliced", "swapped"])
@pytest.mark.parametrize("merge", [True, False])
def test_any_input_layout_gives_the_same_result(layout, merge):
    x, orders = make_multi_scan_inputs(2, 5, 6, 4, 19, 16, seed=3)
    for got, want in zip(_run(x, orders, layout, merge=merge), _run(x, orders, merge=merge)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_repeated_calls_are_bit_identical(threads):
    x, orders = make_multi_scan_inputs(3, 7, 9, 4, 37, 16, seed=8)
    first = _run(x, orders, threads=threads)
    for _ in range(3):
        for got, want in zip(_run(x, orders, threads=threads), first):
            assert torch.equal(got, want)


def test_thread_counts_agree_with_the_reference():
    x, orders = make_multi_scan_inputs(1, 6, 6, 4, 45, 16, seed=2)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            check_multi_scan("cpu", x, orders)
    finally:
        torch.set_num_threads(previous)


def test_decays_across_the_float32_range():
    """exp(dt A) over [-87, 88] through a two-step scan: h_1 = exp(A) h_0 with h_0 = 1."""
    dim = 4096
    u = torch.zeros(1, 2, dim)
    u[:, 0] = 1
    A = torch.linspace(-87, 88, dim).view(1, dim, 1)
    ones = torch.ones(1, 2, 1, 1)
    y = multi_scan(u, torch.ones(1, 2, 1, dim), A, ones, ones, None, torch.arange(2).view(1, 2), backend="cpu")
    exact = torch.exp(A.view(dim).double())
    assert ((y[0, 1].double() - exact) / exact).abs().max() < 5e-6  # the torch backend's own error: 3.7e-6
    u[0, 0, 0] = float("nan")  # NaN is never clamped away
    y = multi_scan(u, torch.ones(1, 2, 1, dim), A, ones, ones, None, torch.arange(2).view(1, 2), backend="cpu")
    assert torch.isnan(y[0, :, 0]).all() and torch.isfinite(y[0, :, 1:]).all()


@pytest.mark.parametrize("scale", [400.0, -400.0], ids=["decays-below-2^-126", "growth-above-2^128"])
def test_decays_beyond_the_exp_range_are_clamped_not_wrapped(scale):
    """dt A far below -87 (decay 0) or, for a positive A, above 88 (inf): the kernel's exp must
    clamp, where a chunk's arguments leave its range, rather than wrap the exponent bits."""
    x, orders = make_multi_scan_inputs(1, 4, 5, 2, 9, 4, has_z=False, has_weights=False, seed=12)
    x["A"] = x["A"] * scale  # A in [-200, 0] (or [0, 200] for a negative scale); dt in (0.69, 1.5)
    args = [x[k] for k in KEYS]
    out = multi_scan(*args, orders, None, x["delta_bias"], True, backend="cpu")
    torch_path = multi_scan(*args, orders, None, x["delta_bias"], True, backend="torch")
    if scale > 0:
        ref = multi_scan_ref(*[a.double() for a in args], orders, None, x["delta_bias"].double(), True)
        torch.testing.assert_close(out.double(), ref, rtol=6e-4, atol=2e-3)
    else:  # the states overflow: inf and NaN where the torch path has them, nothing finite made up
        assert torch.equal(torch.isfinite(out), torch.isfinite(torch_path))


def test_float64_runs_on_the_torch_code():
    x, orders = make_multi_scan_inputs(2, 3, 4, 2, 5, 4, dtype=torch.float64, seed=1)
    args = [x[k] for k in KEYS]
    ours = multi_scan(*args, orders, x["weights"], x["delta_bias"], True, x["z"], backend="cpu")
    torch_path = multi_scan(*args, orders, x["weights"], x["delta_bias"], True, x["z"], backend="torch")
    assert ours.dtype == torch.float64 and torch.equal(ours, torch_path)


def test_torch_compile_fullgraph_runs_the_compiled_scan():
    x, orders = make_multi_scan_inputs(2, 4, 4, 4, 9, 8, seed=4)

    def f(u, delta, A, B, C, D, weights, bias, z):
        return multi_scan(u, delta, A, B, C, D, orders, weights, bias, True, z, backend="cpu")

    keys = (*KEYS, "weights", "delta_bias", "z")
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    runs = []
    for fn in (f, compiled):
        leaves = [x[k].clone().requires_grad_() for k in keys]
        out = fn(*leaves)
        out.sum().backward()
        runs.append([out.detach()] + [v.grad for v in leaves])
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_build_check_is_a_constant_to_torch_compile_without_importing_dynamo():
    def probe():
        return None

    ours = dispatch.constant_to_compiler(lambda: None)
    torch.compiler.assume_constant_result(probe)
    assert vars(ours) == vars(probe) == {"_dynamo_marked_constant": True}
    res = subprocess.run([sys.executable, "-c", "import sys, scansearch.cli as c; c.build_parser(); "
                          "print('torch._dynamo' in sys.modules)"], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "False", res.stderr


def _python(code: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=300)


SCAN_AND_REPORT = """
    import json, torch
    from scansearch.kernels import multi_scan, multi_scan_ref
    from scansearch.kernels.testing import make_multi_scan_inputs
    x, orders = make_multi_scan_inputs(2, 3, 4, 2, 5, 4, seed=0)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
    for _ in range(2):
        out = multi_scan(*args, orders, x["weights"], x["delta_bias"], True, x["z"])
    ref = multi_scan_ref(*[a.double() for a in args], orders, x["weights"].double(), x["delta_bias"].double(),
                         True, x["z"].double())
    print(json.dumps({"err": (out.double() - ref).abs().max().item()}))
"""


@pytest.mark.slow  # three fresh processes each
@pytest.mark.parametrize("compiler", ["missing", "failing"])
def test_without_a_working_compiler_scans_run_on_torch_and_say_why(tmp_path, compiler):
    """As after a failed build: the scan still runs (torch path, right answer), the first scan
    logs one line with the reason, and the doctor says which CPU path runs and why."""
    if compiler == "missing":
        cc, why = "/nonexistent/cc", "the C compiler named by $CC ('/nonexistent/cc') was not found"
    else:
        cc = tmp_path / "cc"
        cc.write_text("#!/bin/sh\necho 'cpu_scan.c:1:1: error: this compiler is broken' >&2\nexit 1\n")
        cc.chmod(0o755)
        why = f"the C compiler '{cc}' failed: cpu_scan.c:1:1: error: this compiler is broken"
    env = {"CC": str(cc), "SCANSEARCH_CACHE_DIR": str(tmp_path / "cache"), "SCANSEARCH_BACKEND": ""}
    res = _python(SCAN_AND_REPORT, env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["err"] < 1e-5
    assert res.stderr.splitlines() == [
        f"selective scans on CPU tensors run on the slower 'torch' backend: the compiled CPU scan is "
        f"unavailable ({why}); `scansearch doctor` says more"]
    doctor = subprocess.run([sys.executable, "-m", "scansearch", "doctor", "--json"], capture_output=True,
                            text=True, env={**os.environ, **env}, cwd=tmp_path, timeout=300)
    report = json.loads(doctor.stdout)
    assert report["default_backend_cpu"] == "torch" and report["backends"]["cpu"] == why
    assert report["cpu_build"]["ok"] is False
    text = subprocess.run([sys.executable, "-m", "scansearch", "doctor"], capture_output=True, text=True,
                          env={**os.environ, **env, "COLUMNS": "400"}, cwd=tmp_path, timeout=300).stdout
    assert f"CPU scans run on the 'torch' backend: the compiled CPU scan is unavailable ({why})" in text
    assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-built left behind


@pytest.mark.slow  # two fresh processes and a build
def test_built_once_then_loaded_from_the_cache(tmp_path):
    env = {"SCANSEARCH_CACHE_DIR": str(tmp_path / "cache"), "SCANSEARCH_BACKEND": ""}
    res = _python(SCAN_AND_REPORT, env, tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert json.loads(res.stdout)["err"] < 1e-5
    (lib,) = (tmp_path / "cache" / "kernels").glob("cpu_scan-*.so")
    stamp = lib.stat().st_mtime_ns
    assert _python(SCAN_AND_REPORT, env, tmp_path).returncode == 0
    assert [p.name for p in (tmp_path / "cache" / "kernels").iterdir()] == [lib.name]
    assert lib.stat().st_mtime_ns == stamp


def test_selective_scan_last_state_with_many_chunks(monkeypatch):
    from scansearch.kernels import cpu_backend

    monkeypatch.setattr(cpu_backend, "CHUNK", 5)  # L = 23: four full chunks and a partial one
    check_selective_scan("cpu", make_selective_scan_inputs(2, 10, 23, 16, groups_B=2, seed=3))


def test_multi_scan_ref_agrees_on_a_vim_layer():
    """One Vim-Ti-shaped layer (dim 384, L 196, N 16, K 4): the shapes the benchmark times."""
    x, orders = make_multi_scan_inputs(1, 14, 14, 4, 384, 16, has_weights=False, seed=6)
    args = [x[k] for k in KEYS]
    with torch.no_grad():
        out = multi_scan(*args, orders, None, x["delta_bias"], True, x["z"], backend="cpu")
        ref = multi_scan_ref(*[a.double() for a in args], orders, None, x["delta_bias"].double(), True,
                             x["z"].double())
    torch.testing.assert_close(out.double(), ref, rtol=6e-4, atol=2e-3)
    assert selective_scan is not None
