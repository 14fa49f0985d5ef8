"""The ``triton`` backend under the Triton interpreter (CPU), against the float64 reference.

``TRITON_INTERPRET=1`` must be set before the kernels are compiled, so the cases
run in a fresh interpreter process: ``test_triton_interpreter`` launches pytest
on this file with the variable set, where the ``test_interp_*`` cases exist.
Shapes are tiny (the interpreter runs every step in Python); the kernels use
4-channel blocks and 8-step chunks there, so the cases still cross several
channel blocks and chunk boundaries. ``test_kernels_compile_for_gpu`` compiles
the kernels for sm_90 (no GPU needed) to catch what the interpreter cannot.
"""
import os
import subprocess
import sys

import pytest

INNER = os.environ.get("SCANSEARCH_TRITON_INNER") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.interpret
@pytest.mark.slow  # about 100 s of interpreted kernels: the full suite runs it
def test_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", SCANSEARCH_TRITON_INNER="1")
    env.pop("SCANSEARCH_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-k", "test_interp_"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"interpreter tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def _compile_for_sm90():
    """Compile forward and backward kernels for an H100 (sm_90) without a GPU: catches
    what the interpreter cannot (typing, layouts, register allocation)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from scansearch.kernels import triton_scan, triton_scan_bwd

    assert not triton_scan.INTERPRETED

    def signature(fn, pointer_types, constexprs):
        return {name: "constexpr" if name in constexprs else
                pointer_types.get(name, "*fp32") if name.endswith("_ptr") else "i32"
                for name in fn.arg_names}

    fwd, bwd = triton_scan.multi_scan_fwd_kernel.fn, triton_scan_bwd.multi_scan_bwd_kernel.fn
    # (gather, merge, unpermute, flags, activations, accumulator): merged, per head (selective_scan),
    # per direction (merge=False) from image-order and scan-order inputs
    for gather, merge, unpermute, flags, act, acc in [(True, True, False, True, "*bf16", tl.float32),
                                                      (False, True, False, False, "*fp32", tl.float32),
                                                      (False, False, False, True, "*fp16", tl.float32),
                                                      (True, True, False, True, "*fp64", tl.float64),
                                                      (True, False, True, True, "*bf16", tl.float32),
                                                      (False, False, True, False, "*fp32", tl.float32)]:
        common = dict(CHUNK=triton_scan.CHUNK, BLOCK_D=16, GATHER=gather, MERGE=merge, UNPERMUTE=unpermute,
                      HAS_D=flags, HAS_BIAS=flags, SOFTPLUS=flags, HAS_W=flags and merge, ACC=acc)
        acc_ptr = "*fp64" if acc == tl.float64 else "*fp32"
        types = {n: act for n in ("u_ptr", "dt_ptr", "B_ptr", "C_ptr", "z_ptr", "out_ptr")}
        types.update(ord_ptr="*i32", acc_ptr=acc_ptr, ck_ptr=acc_ptr)
        c = dict(common, HAS_Z=flags, STORE_ACC=flags)
        triton.compile(ASTSource(fwd, signature(fwd, types, c), c), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
        types = {n: acc_ptr for n in ("gy_ptr", "ck_ptr", "gl_ptr", "gu_ptr", "gdt_ptr", "gB_ptr", "gC_ptr",
                                      "gA_ptr", "gD_ptr", "gw_ptr")}
        types.update({n: act for n in ("u_ptr", "dt_ptr", "B_ptr", "C_ptr")}, ord_ptr="*i32")
        c = dict(common, BLOCK_N=16, HAS_GLAST=not merge and not unpermute, NEED_GW=flags and merge)
        triton.compile(ASTSource(bwd, signature(bwd, types, c), c), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4})
    print("compiled for sm_90")


@pytest.mark.slow  # compiles every kernel for sm_90 in a subprocess: the full suite runs it
def test_kernels_compile_for_gpu():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SCANSEARCH_TRITON_INNER")}
    proc = subprocess.run([sys.executable, __file__, "--compile-sm90"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "compiled for sm_90" in proc.stdout, proc.stderr[-4000:]


CUDA_CASES = [  # (K, H, W, dim, N, scan_order): real launches, checked only where a GPU exists
    (1, 1, 1, 3, 4, False), (2, 14, 14, 64, 16, False), (4, 7, 9, 33, 16, True), (8, 8, 8, 96, 16, False),
    (4, 56, 56, 24, 16, False),
]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_multi_scan(case, backend):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from scansearch.kernels.testing import check_multi_scan, make_multi_scan_inputs

    K, H, W, dim, N, scan_order = case
    for dtype in (torch.float32, torch.bfloat16):
        x, orders = make_multi_scan_inputs(2, H, W, K, dim, N, scan_order=scan_order, dtype=dtype, seed=K,
                                           device="cuda")
        check_multi_scan(backend, x, orders, scan_order=scan_order)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_multi_scan_per_direction(case, backend):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from scansearch.kernels.testing import check_multi_scan, make_multi_scan_inputs

    K, H, W, dim, N, scan_order = case
    for dtype in (torch.float32, torch.bfloat16):
        x, orders = make_multi_scan_inputs(2, H, W, K, dim, N, scan_order=scan_order, dtype=dtype, seed=K + 1,
                                           has_weights=False, device="cuda")
        check_multi_scan(backend, x, orders, scan_order=scan_order, merge=False)


@pytest.mark.parametrize("groups", [(1, 1), (2, 2), (2, 4)])
def test_cuda_selective_scan(groups):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from scansearch.kernels.testing import check_selective_scan, make_selective_scan_inputs

    x = make_selective_scan_inputs(2, 64, 300, 16, groups_B=groups[0], groups_C=groups[1], device="cuda")
    check_selective_scan("triton", x)


if __name__ == "__main__" and sys.argv[1:] == ["--compile-sm90"]:
    _compile_for_sm90()

if INNER:
    import torch

    from scansearch.kernels import available_backends, multi_scan, resolve_backend
    from scansearch.kernels.testing import (
        check_multi_scan,
        check_selective_scan,
        make_multi_scan_inputs,
        make_selective_scan_inputs,
    )

    # (K, H, W, dim, N, scan_order, has_D, has_z, has_bias, has_weights, softplus)
    MULTI_CASES = [
        (1, 1, 1, 3, 4, False, True, True, True, True, True),      # L = 1
        (2, 3, 4, 5, 4, False, True, True, True, True, True),      # 2 channel blocks, 2 chunks
        (2, 3, 4, 5, 4, True, True, True, True, True, True),
        (3, 2, 9, 3, 3, False, False, True, False, True, False),   # N not a power of two, 3 chunks
        (4, 5, 4, 4, 2, True, True, False, True, False, True),
        (4, 4, 4, 6, 4, False, True, True, True, True, True),      # VMamba cross4 orders
        (8, 2, 3, 2, 2, False, True, True, True, True, True),      # 4 fixed + 4 random orders
        (8, 3, 2, 3, 2, True, False, False, False, True, False),
    ]

    @pytest.mark.parametrize("case", MULTI_CASES)
    def test_interp_multi_scan(case):
        K, H, W, dim, N, scan_order, has_D, has_z, has_bias, has_w, softplus = case
        x, orders = make_multi_scan_inputs(2 if K < 8 else 1, H, W, K, dim, N, scan_order=scan_order,
                                           has_D=has_D, has_z=has_z, has_bias=has_bias, has_weights=has_w,
                                           seed=K + H)
        check_multi_scan("triton", x, orders, delta_softplus=softplus, scan_order=scan_order)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_interp_multi_scan_dtypes(dtype):
        x, orders = make_multi_scan_inputs(1, 3, 3, 2, 5, 4, dtype=dtype, seed=1)
        check_multi_scan("triton", x, orders)

    # (K, H, W, dim, N, scan_order, has_D, has_z): merge=False, per-direction outputs in image order
    PER_DIRECTION_CASES = [
        (1, 1, 1, 3, 4, False, True, True),       # L = 1
        (2, 3, 4, 5, 4, False, True, True),       # 2 channel blocks, 2 chunks, non-square
        (2, 3, 4, 5, 4, True, True, True),
        (3, 2, 9, 3, 3, False, False, True),      # no D, 3 chunks
        (4, 3, 5, 4, 2, True, True, False),       # no z
        (4, 4, 3, 6, 4, False, False, False),     # neither
    ]

    @pytest.mark.parametrize("case", PER_DIRECTION_CASES)
    def test_interp_per_direction(case):
        K, H, W, dim, N, scan_order, has_D, has_z = case
        x, orders = make_multi_scan_inputs(2, H, W, K, dim, N, scan_order=scan_order, has_D=has_D, has_z=has_z,
                                           has_weights=False, seed=10 + K + H)
        check_multi_scan("triton", x, orders, scan_order=scan_order, merge=False)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
    def test_interp_per_direction_dtypes(dtype):
        x, orders = make_multi_scan_inputs(1, 3, 3, 2, 5, 4, has_weights=False, dtype=dtype, seed=4)
        check_multi_scan("triton", x, orders, merge=False)

    def test_interp_per_direction_sums_to_merged():
        x, orders = make_multi_scan_inputs(1, 2, 5, 3, 5, 4, seed=6)
        args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
        merged = multi_scan(*args, orders, x["weights"], x["delta_bias"], True, x["z"], backend="triton")
        each = multi_scan(*args, orders, None, x["delta_bias"], True, x["z"], merge=False, backend="triton")
        torch.testing.assert_close(torch.einsum("blkd,k->bld", each, x["weights"]), merged, rtol=1e-5, atol=1e-5)

    def test_interp_random_orders():
        x, orders = make_multi_scan_inputs(1, 3, 5, 2, 3, 2, seed=2)
        orders = torch.stack([torch.randperm(15, generator=torch.Generator().manual_seed(k)) for k in range(2)])
        check_multi_scan("triton", x, orders)

    # (groups_B, groups_C, dim, L, has_D, has_z, has_bias, softplus, return_last_state)
    SELECTIVE_CASES = [
        (1, 1, 5, 11, True, True, True, True, True),
        (2, 2, 8, 9, True, True, True, True, True),
        (2, 4, 8, 6, False, False, True, False, True),
        (1, 1, 3, 1, False, False, False, False, False),
    ]

    @pytest.mark.parametrize("case", SELECTIVE_CASES)
    def test_interp_selective_scan(case):
        gB, gC, dim, L, has_D, has_z, has_bias, softplus, rls = case
        x = make_selective_scan_inputs(2, dim, L, 4, groups_B=gB, groups_C=gC, has_D=has_D, has_z=has_z,
                                       has_bias=has_bias, seed=L)
        check_selective_scan("triton", x, delta_softplus=softplus, return_last_state=rls)

    def test_interp_selective_scan_bf16():
        x = make_selective_scan_inputs(1, 4, 9, 4, dtype=torch.bfloat16, seed=3)
        check_selective_scan("triton", x)

    def test_interp_dispatch_accepts_cpu_tensors():
        assert available_backends()["triton"] == "ok"
        assert resolve_backend(torch.zeros(1), "triton") == "triton"
