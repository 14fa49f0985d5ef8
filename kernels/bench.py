"""Kernel benchmark: reference vs materialized vs fused multi-direction scans, and
per-direction outputs from K single-direction calls vs one ``merge=False`` call.

Three ways to compute one multi-direction SSM layer, side by side:

* ``reference``: :func:`multi_scan_ref`, sequential loops with autograd.
* ``materialized``: what VMamba and LocalMamba do: write a permuted copy of the
  inputs per direction, run one grouped single-direction ``selective_scan`` over
  all directions (the best single-direction path of the device's default
  backend), un-permute and sum.
* ``fused``: :func:`multi_scan` on the device's default backend (the compiled ``cpu``
  scan on CPU, ``triton`` on CUDA).
* ``torch`` (CPU only): the same op on the vectorised ``torch`` backend, the CPU path
  the compiled scan replaced.
* ``floor`` (CPU only, not timed): the scan's exps and FLOPs at this core's peak rates,
  measured by the compiled library's probes (:func:`cpu_floor_ms`).

:func:`run_per_direction_bench` times the other use of the op: each direction's
output on its own, in image order, (batch, L, K, dim) (SCAttn in LocalVim, the
supernet that normalises each candidate before the weighted merge):

* ``K=1 calls``: one ``multi_scan`` per direction with K=1, outputs stacked
  (what ``ScanMixer.scan_each`` did).
* ``merge=False``: one ``multi_scan(..., merge=False)`` call.

Times are medians over ``repeats`` runs (paths timed round-robin after two
warm-up runs each): ``fwd`` under
``torch.no_grad`` (inference) and ``fwd+bwd`` (a training step). ``saved`` is the
memory autograd keeps for backward: the unique storages packed through
``torch.autograd.graph.saved_tensors_hooks`` (the inputs themselves included).
This module imports only torch; ``print_table`` prints plain text, and
``table_rows`` gives the cells for a richer renderer.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from scansearch.kernels.api import multi_scan, selective_scan
from scansearch.kernels.cpu_build import load
from scansearch.kernels.reference import multi_scan_ref

SHAPES = {  # one layer of each model: name -> (label, dim, L, N, K)
    "vim_ti_k2": ("Vim-Ti layer", 384, 196, 16, 2),
    "vim_ti_k4": ("Vim-Ti layer", 384, 196, 16, 4),
    "vim_ti_k8": ("Vim-Ti layer", 384, 196, 16, 8),
    "vmamba_t1_k4": ("VMamba-T stage 1", 192, 3136, 16, 4),
    "vmamba_t1_k8": ("VMamba-T stage 1", 192, 3136, 16, 8),
}
QUICK_SHAPES = ("vim_ti_k4",)
BATCH = {"cpu": {196: 4, 3136: 2}, "cuda": {196: 64, 3136: 32}}
REFERENCE_MAX_STEPS = 10_000  # batch * L * K above which the reference runs once, without warm-up


def make_inputs(batch, dim, L, N, K, device, dtype, seed=0):
    """A Vim/VMamba-like layer: D, delta_bias, softplus and a z gate; orders h, h_flip, v, v_flip, random."""
    g = torch.Generator().manual_seed(seed)
    side = int(round(L ** 0.5))
    H, W = (side, L // side) if side * (L // side) == L else (1, L)
    row = torch.arange(L)
    col = row.view(H, W).t().reshape(-1)
    fixed = [row, row.flip(0), col, col.flip(0)]
    orders = torch.stack([fixed[k] if k < 4 else torch.randperm(L, generator=g) for k in range(K)])
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = {
        "u": r(batch, L, dim).to(dtype), "delta": (0.5 * torch.rand(batch, L, K, dim, generator=g)).to(dtype),
        "A": -torch.rand(K, dim, N, generator=g), "B": r(batch, L, K, N).to(dtype),
        "C": r(batch, L, K, N).to(dtype), "D": r(K, dim), "delta_bias": 0.5 * torch.rand(K, dim, generator=g),
        "z": r(batch, L, dim).to(dtype),
    }
    return {k: v.to(device) for k, v in x.items()}, orders.to(device)


def _fused(x, orders, backend):
    return multi_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders, None, x["delta_bias"], True,
                      x["z"], backend=backend)


def _reference(x, orders, backend=None):
    return multi_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders, None, x["delta_bias"],
                          True, x["z"])


def _materialized(x, orders, backend):
    """Permuted copies (VMamba's CrossScan), one grouped scan, un-permute and sum (CrossMerge)."""
    u, delta, B, C = x["u"], x["delta"], x["B"], x["C"]
    batch, L, dim = u.shape
    K, _, N = x["A"].shape
    kidx = torch.arange(K, device=u.device)[:, None]
    xs = u[:, orders].permute(0, 1, 3, 2).reshape(batch, K * dim, L)
    dts = delta[:, orders, kidx].permute(0, 1, 3, 2).reshape(batch, K * dim, L)
    Bs = B[:, orders, kidx].permute(0, 1, 3, 2)
    Cs = C[:, orders, kidx].permute(0, 1, 3, 2)
    y = selective_scan(xs, dts, x["A"].reshape(K * dim, N), Bs, Cs, x["D"].reshape(-1),
                       delta_bias=x["delta_bias"].reshape(-1), delta_softplus=True, backend=backend)
    y = y.view(batch, K, dim, L).transpose(2, 3)
    inverse = torch.argsort(orders, dim=1)
    out = y[:, 0, inverse[0]]
    for k in range(1, K):
        out = out + y[:, k, inverse[k]]
    return out * torch.nn.functional.silu(x["z"])


def _torch(x, orders, backend=None):
    return _fused(x, orders, "torch")


PATHS = {"reference": _reference, "materialized": _materialized, "fused": _fused, "torch": _torch}
CPU_ONLY_PATHS = ("torch",)


def cpu_floor_ms(batch, dim, L, N, K) -> tuple[float, float] | None:
    """(fwd, fwd+bwd) ms the scan cannot beat on one core: per state element and step the
    forward takes one exp and 6 FLOPs (decay argument, state update, output), forward and
    backward two exps (the backward recomputes the decays) and 24 FLOPs, at the peak rates
    of independent vector exps and FMAs measured here. None without the compiled library."""

    build = load()
    if not build.ok:
        return None
    t_exp, t_fma = build.lib.scan_probe(0, 2_000_000), build.lib.scan_probe(1, 20_000_000)
    vectors = batch * K * L * N * dim / build.lanes
    return 1e3 * vectors * (t_exp + 3 * t_fma), 1e3 * vectors * (2 * t_exp + 12 * t_fma)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    """Wall time of one call of ``fn`` in ms (CUDA: with the device synchronised)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def saved_bytes(fn) -> int:
    """Bytes of the unique storages autograd saves for backward while ``fn`` runs."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


class _Path:
    """One way of computing the layer on fixed inputs: inference and training-step callables.
    ``fn`` defaults to ``PATHS[name]``; ``out_shape`` to u's, (batch, L, dim)."""

    def __init__(self, name, x, orders, backend, fn=None, out_shape=None):
        fn = fn or PATHS[name]
        leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        u = x["u"]
        gout = torch.randn(out_shape or u.shape, dtype=u.dtype, device=u.device)
        self.name = name
        self.fwd_times: list[float] = []
        self.fwd_bwd_times: list[float] = []

        def fwd():
            with torch.no_grad():
                fn(x, orders, backend)

        def fwd_bwd():
            for v in leaves.values():
                v.grad = None
            fn(leaves, orders, backend).backward(gout)

        self.fwd, self.fwd_bwd = fwd, fwd_bwd
        self.saved = lambda: saved_bytes(lambda: fn(leaves, orders, backend))


def _measure(paths, device, repeats, slow):
    """Warm every path up (twice: the first calls pay one-off imports and allocator growth),
    then time them round-robin, so that a burst of load elsewhere hits every path alike.
    ``slow`` paths run once, without warm-up."""
    for p in paths:
        for _ in range(0 if p.name in slow else 2):
            p.fwd()
            p.fwd_bwd()
    for r in range(repeats):
        for p in paths:
            if p.name in slow and r > 0:
                continue
            p.fwd_times.append(_timed(p.fwd, device))
            p.fwd_bwd_times.append(_timed(p.fwd_bwd, device))


def copy_bandwidth(device, nbytes=1 << 30, repeats=10) -> float:
    """GB/s of ``y.copy_(x)`` (read + write) on a large tensor, timed with CUDA events."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize(device)
    return 2 * nbytes * repeats / (start.elapsed_time(end) * 1e-3) / 1e9


def min_fwd_bytes(x) -> int:
    """Fewest bytes the fused forward must move: read u, delta, B, C, z once, write out once."""
    u = x["u"]
    return sum(x[k].numel() * x[k].element_size() for k in ("u", "delta", "B", "C", "z")) \
        + u.numel() * u.element_size()


def run_kernel_bench(device="cpu", repeats=5, quick=False, shapes=None, batch=None, dtype=None,
                     include_reference=True, on_row=None, threads=None) -> list[dict]:
    """Benchmark every path on every shape; returns one dict per (shape, path[, threads]).

    ``device``: "cpu" or "cuda"; ``shapes``: keys of :data:`SHAPES` (default all, or
    :data:`QUICK_SHAPES` when ``quick``); ``batch``: override the per-device batch;
    ``dtype``: activations (default fp32 on CPU, bf16 on CUDA); ``on_row``: called
    with each row as it is measured (progress); ``threads``: CPU thread counts to run
    every shape at (default: the current one), each row saying its count.
    """
    if threads and torch.device(device).type == "cpu":
        previous, rows = torch.get_num_threads(), []
        try:
            for n in threads:
                torch.set_num_threads(n)
                rows += run_kernel_bench(device, repeats, quick, shapes, batch, dtype, include_reference, on_row)
        finally:
            torch.set_num_threads(previous)
        return rows
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available")
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    backend = "triton" if dev.type == "cuda" else None  # None: the device's default
    names = list(shapes) if shapes else list(QUICK_SHAPES if quick else SHAPES)
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    bandwidth = copy_bandwidth(dev) if dev.type == "cuda" else None
    rows = []
    for name in names:
        label, dim, L, N, K = SHAPES[name]
        b = batch or BATCH[dev.type][L]
        x, orders = make_inputs(b, dim, L, N, K, dev, dtype)
        paths = [_Path(p, x, orders, backend) for p in PATHS
                 if (include_reference or p != "reference") and (dev.type == "cpu" or p not in CPU_ONLY_PATHS)]
        slow = {"reference"} if b * L * K > REFERENCE_MAX_STEPS else set()
        _measure(paths, dev, repeats, slow)
        for p in paths:
            row = {"shape": name, "label": label, "dim": dim, "L": L, "N": N, "K": K, "batch": b, "path": p.name,
                   "device": dev.type, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
                   "fwd_ms": statistics.median(p.fwd_times), "fwd_bwd_ms": statistics.median(p.fwd_bwd_times),
                   "saved_mb": p.saved() / 2**20, "note": "1 run, no warm-up" if p.name in slow else ""}
            if p.name == "fused" and bandwidth:
                achieved = min_fwd_bytes(x) / (row["fwd_ms"] * 1e-3) / 1e9
                row.update(copy_gbps=bandwidth, fwd_gbps=achieved, fwd_pct_copy=100 * achieved / bandwidth)
            rows.append(row)
            if on_row:
                on_row(row)
        floor = cpu_floor_ms(b, dim, L, N, K) if dev.type == "cpu" else None
        if floor:
            rows.append({"shape": name, "label": label, "dim": dim, "L": L, "N": N, "K": K, "batch": b,
                         "path": "floor", "device": dev.type, "dtype": "float32", "threads": torch.get_num_threads(),
                         "fwd_ms": floor[0] / torch.get_num_threads(),
                         "fwd_bwd_ms": floor[1] / torch.get_num_threads(), "saved_mb": None,
                         "note": "exps and FLOPs at peak rates, not timed"})
        if not include_reference:
            rows.insert(len(rows) - len(paths) - bool(floor), {
                "shape": name, "label": label, "dim": dim, "L": L, "N": N, "K": K, "batch": b, "path": "reference",
                "device": dev.type, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
                "fwd_ms": None, "fwd_bwd_ms": None,
                "saved_mb": None, "note": "skipped"})
    return rows


def ratios(rows) -> list[dict]:
    """Per shape: fused speed-up over reference and materialized (fwd, fwd+bwd) and saved-memory ratios."""
    out = []
    by_shape: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_shape.setdefault((r["shape"], r.get("threads")), {})[r["path"]] = r
    for (shape, _), paths in by_shape.items():
        fused = paths.get("fused")
        if not fused:
            continue
        item = {"shape": shape, "K": fused["K"], "threads": fused.get("threads")}
        for other in ("reference", "materialized", "torch"):
            o = paths.get(other)
            if o and o.get("fwd_ms"):
                item[f"fwd_x_{other}"] = o["fwd_ms"] / fused["fwd_ms"]
                item[f"fwd_bwd_x_{other}"] = o["fwd_bwd_ms"] / fused["fwd_bwd_ms"]
                item[f"saved_vs_{other}"] = fused["saved_mb"] / o["saved_mb"]
        floor = paths.get("floor")
        if floor:
            item["fwd_floor_share"] = floor["fwd_ms"] / fused["fwd_ms"]
            item["fwd_bwd_floor_share"] = floor["fwd_bwd_ms"] / fused["fwd_bwd_ms"]
        out.append(item)
    return out


COLUMNS = ("shape", "K", "batch", "threads", "path", "fwd ms", "fwd+bwd ms", "saved MB", "note")


def table_rows(rows) -> tuple[tuple[str, ...], list[list[str]]]:
    """Column names and formatted cells of the results table (one line per shape and path)."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    cells = []
    for r in rows:
        note = r["note"]
        if r.get("fwd_pct_copy") is not None:
            note = (note + "; " if note else "") + f"fwd {r['fwd_gbps']:.0f} GB/s = {r['fwd_pct_copy']:.0f}% of copy"
        cells.append([f"{r['label']} d={r['dim']} L={r['L']} N={r['N']}", str(r["K"]), str(r["batch"]),
                      str(r.get("threads", "")), r["path"],
                      fmt(r["fwd_ms"], ".1f"), fmt(r["fwd_bwd_ms"], ".1f"), fmt(r["saved_mb"], ".1f"), note])
    return COLUMNS, cells


def ratio_lines(rows) -> list[str]:
    """One line per shape (and thread count): fused vs reference, materialized and torch, and the
    share of the floor it reaches."""
    lines = []
    for item in ratios(rows):
        parts = [f"{item['shape']}" + (f" {item['threads']} thread(s):" if item.get("threads") else ":")]
        for other in ("reference", "materialized", "torch"):
            if f"fwd_x_{other}" in item:
                parts.append(f"vs {other} fwd {item[f'fwd_x_{other}']:.2f}x, fwd+bwd {item[f'fwd_bwd_x_{other}']:.2f}x,"
                             f" saved memory {item[f'saved_vs_{other}']:.2f}x")
        if "fwd_floor_share" in item:
            parts.append(f"at {100 * item['fwd_floor_share']:.0f}% (fwd) and {100 * item['fwd_bwd_floor_share']:.0f}%"
                         f" (fwd+bwd) of the floor's speed")
        lines.append(" ".join(parts))
    return lines


def print_table(rows, file=None) -> None:
    """Print the results as a plain-text table followed by the speed-up ratios."""
    file = file or sys.stdout
    columns, cells = table_rows(rows)
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)
    for line in ratio_lines(rows):
        print(line, file=file)


# -- per-direction outputs ------------------------------------------------------------------

PER_DIRECTION_SHAPES = {  # name -> (label, dim, L, N, K, batch on cpu, batch on cuda)
    "vim_ti_k4": ("Vim-Ti layer", 384, 196, 16, 4, 4, 64),
    "micro_k8": ("micro layer", 64, 64, 8, 8, 64, 256),
}


def _separate_calls(x, orders, backend):
    """K calls with K=1 (slices of the same inputs), outputs stacked: (batch, L, K, dim)."""
    ys = []
    for k in range(orders.shape[0]):
        one = slice(k, k + 1)
        ys.append(multi_scan(x["u"], x["delta"][:, :, one], x["A"][one], x["B"][:, :, one], x["C"][:, :, one],
                             x["D"][one], orders[one], None, x["delta_bias"][one], True, x["z"], backend=backend))
    return torch.stack(ys, dim=2)


def _per_direction(x, orders, backend):
    return multi_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], orders, None, x["delta_bias"], True,
                      x["z"], merge=False, backend=backend)


PER_DIRECTION_PATHS = {"K=1 calls": _separate_calls, "merge=False": _per_direction}


def run_per_direction_bench(device="cpu", repeats=5, shapes=None, batch=None, dtype=None, on_row=None) -> list[dict]:
    """Per-direction outputs (batch, L, K, dim): K separate K=1 calls vs one ``merge=False`` call.

    Same inputs as :func:`run_kernel_bench` (D, delta_bias, softplus, a z gate); ``shapes``:
    keys of :data:`PER_DIRECTION_SHAPES` (default all); ``batch`` overrides the per-device
    batch. Returns one dict per (shape, path), with the keys of :func:`run_kernel_bench`'s rows.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available")
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    backend = "triton" if dev.type == "cuda" else None  # None: the device's default
    names = list(shapes) if shapes else list(PER_DIRECTION_SHAPES)
    unknown = [n for n in names if n not in PER_DIRECTION_SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(PER_DIRECTION_SHAPES)}")
    rows = []
    for name in names:
        label, dim, L, N, K, cpu_batch, cuda_batch = PER_DIRECTION_SHAPES[name]
        b = batch or (cuda_batch if dev.type == "cuda" else cpu_batch)
        x, orders = make_inputs(b, dim, L, N, K, dev, dtype)
        paths = [_Path(p, x, orders, backend, fn, (b, L, K, dim)) for p, fn in PER_DIRECTION_PATHS.items()]
        _measure(paths, dev, repeats, set())
        for p in paths:
            row = {"shape": name, "label": label, "dim": dim, "L": L, "N": N, "K": K, "batch": b, "path": p.name,
                   "device": dev.type, "dtype": str(dtype).replace("torch.", ""),
                   "fwd_ms": statistics.median(p.fwd_times), "fwd_bwd_ms": statistics.median(p.fwd_bwd_times),
                   "saved_mb": p.saved() / 2**20, "note": ""}
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def per_direction_ratio_lines(rows) -> list[str]:
    """One line per shape: how many times faster one ``merge=False`` call is than K=1 calls."""
    by_shape: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_shape.setdefault(r["shape"], {})[r["path"]] = r
    lines = []
    for shape, paths in by_shape.items():
        one, sep = paths.get("merge=False"), paths.get("K=1 calls")
        if one and sep:
            lines.append(f"{shape}: merge=False vs K=1 calls fwd {sep['fwd_ms'] / one['fwd_ms']:.2f}x, "
                         f"fwd+bwd {sep['fwd_bwd_ms'] / one['fwd_bwd_ms']:.2f}x, "
                         f"saved memory {one['saved_mb'] / sep['saved_mb']:.2f}x")
    return lines
