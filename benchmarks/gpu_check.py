"""Device check in one table: Triton kernels against the float64 reference, scan timings,
a DARTS supernet step and model throughput.

    bash benchmarks/gpu_check.sh                 # one H100/H200: real sizes, under 8 minutes
    bash benchmarks/gpu_check.sh --smoke         # CPU, Triton interpreter, tiny sizes, about a minute
    python benchmarks/gpu_check.py [--smoke] [--json PATH]

Four parts, each in its own ``try`` (a part that raises shows FAIL in its rows, the
others still run):

1. ``correctness``: ``multi_scan`` (merged and ``merge=False``) and ``selective_scan`` on
   the ``triton`` backend against the float64 ``reference``, fp32 and bf16: the output and
   every gradient, one row each with its max abs error and PASS or FAIL at the tolerances
   of ``kernels/testing.py`` (every comparison runs; none stops the others).
2. ``scan timing``: ``run_kernel_bench`` of ``kernels/bench.py``: the fused scan against the
   materialized path, fwd and fwd+bwd, and the copy bandwidth (CUDA only).
3. ``supernet step``: one single-level DARTS step of the normalised supernet of
   ``benchmarks/bench_supernet.py`` (forward, cross-entropy, backward, an SGD step of the
   weights and an Adam step of the alphas with ``DartsConfig``'s settings); median time.
4. ``models``: ``run_model_bench`` inference and training images/s of vim_tiny and vmamba_tiny.

``--smoke`` (or ``GPU_CHECK_SMOKE=1``) runs everything on the CPU, the kernels under
``TRITON_INTERPRET=1``, at the smallest sizes. The table goes to stdout, progress to
stderr, and ``--json PATH`` (or ``GPU_CHECK_JSON``) writes the rows as JSON. Exit code 1
when any correctness check fails, else 0.
"""
from __future__ import annotations

import argparse
import os
import sys


def _smoke_requested(argv) -> bool:
    return "--smoke" in argv or os.environ.get("GPU_CHECK_SMOKE", "") == "1"


if __name__ == "__main__" and _smoke_requested(sys.argv[1:]):
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from scansearch.kernels import testing  # noqa: E402
from scansearch.kernels.bench import ratio_lines, run_kernel_bench, table_rows  # noqa: E402
from scansearch.models.bench import run_model_bench  # noqa: E402
from scansearch.searchers.darts import DartsConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
PARTS = ("correctness", "scan timing", "supernet step", "models")
COLUMNS = ("part", "check", "result", "status", "note")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of every part."""

    device: str
    multi: tuple[int, int, int, int, int, int]    # multi_scan inputs: batch, H, W, K, dim, N
    selective: tuple[int, int, int, int]          # selective_scan inputs: batch, dim, L, N
    kernel_shapes: tuple[str, ...]                # keys of kernels.bench.SHAPES
    kernel_batch: int | None                      # None: kernels.bench.BATCH[device]
    kernel_repeats: int
    supernet: str                                 # a key of bench_supernet.SETTINGS
    supernet_batch: int | None                    # None: that setting's batch for the device
    supernet_steps: int                           # timed steps (after two warm-up steps)
    models: tuple[str, ...]
    model_batch: int
    model_img: int
    model_repeats: int


GPU = Settings(device="cuda", multi=(2, 14, 14, 4, 64, 16), selective=(2, 64, 300, 16),
               kernel_shapes=("vim_ti_k4", "vmamba_t1_k4"), kernel_batch=None, kernel_repeats=10,
               supernet="local_vim_tiny_search@224", supernet_batch=None, supernet_steps=5,
               models=("vim_tiny", "vmamba_tiny"), model_batch=128, model_img=224, model_repeats=3)
# the interpreter's 4-channel blocks and 8-step chunks: dim 8 and L 16 cross two of each
SMOKE = Settings(device="cpu", multi=(1, 4, 4, 2, 8, 4), selective=(1, 8, 16, 4),
                 kernel_shapes=("vim_ti_k4", "vmamba_t1_k4"), kernel_batch=1, kernel_repeats=1,
                 supernet="local_vim_micro@8", supernet_batch=4, supernet_steps=2,
                 models=("vim_tiny", "vmamba_tiny"), model_batch=1, model_img=32, model_repeats=1)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def row(part, check, result="", status="ok", note="") -> dict:
    return {"part": part, "check": check, "result": result, "status": status, "note": note}


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_benchmark(name: str):
    """A module of this folder by file name (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- 1. correctness ----------------------------------------------------------------------------

@contextlib.contextmanager
def recording(records: list):
    """Make ``kernels.testing``'s checks record every comparison as (name, max abs error,
    None or the assertion's first line, rtol, atol) and carry on after a mismatch."""
    original = testing._assert_close

    def record(name, actual, expected, rtol, atol):
        try:
            err = (actual.detach().double() - expected.detach().double()).abs().max().item()
        except RuntimeError:  # shapes differ: the comparison below says so
            err = float("nan")
        try:
            original(name, actual, expected, rtol, atol)
        except AssertionError as exc:
            records.append((name, err, str(exc).strip().splitlines()[0], rtol, atol))
        else:
            records.append((name, err, None, rtol, atol))

    testing._assert_close = record
    try:
        yield
    finally:
        testing._assert_close = original


def correctness_cases(s: Settings):
    """(label, function running one check) for every op, layout and dtype."""
    batch, H, W, K, dim, N = s.multi
    sb, sdim, L, sN = s.selective
    for tag, dtype in DTYPES.items():
        def merged(dtype=dtype):
            x, orders = testing.make_multi_scan_inputs(batch, H, W, K, dim, N, dtype=dtype, device=s.device)
            testing.check_multi_scan("triton", x, orders)

        def per_direction(dtype=dtype):
            x, orders = testing.make_multi_scan_inputs(batch, H, W, K, dim, N, has_weights=False, dtype=dtype,
                                                       seed=1, device=s.device)
            testing.check_multi_scan("triton", x, orders, merge=False)

        def selective(dtype=dtype):
            x = testing.make_selective_scan_inputs(sb, sdim, L, sN, dtype=dtype, device=s.device)
            testing.check_selective_scan("triton", x)

        yield f"multi_scan {tag}", merged
        yield f"multi_scan merge=False {tag}", per_direction
        yield f"selective_scan {tag}", selective


def correctness_sizes(s: Settings) -> str:
    batch, H, W, K, dim, N = s.multi
    sb, sdim, L, sN = s.selective
    return f"multi_scan b={batch} {H}x{W} K={K} d={dim} N={N}; selective_scan b={sb} d={sdim} L={L} N={sN}"


def check_correctness(s: Settings, progress) -> list[dict]:
    """One row per output and gradient of every case: max abs error, PASS or FAIL."""
    rows = []
    for label, run in correctness_cases(s):
        progress(f"correctness: {label}")
        records: list = []
        try:
            with recording(records):
                run()
            failure = None
        except Exception as exc:  # noqa: BLE001  an assertion outside the comparisons, a launch error
            traceback.print_exc(file=sys.stderr)
            failure = first_line(exc)
        for name, err, problem, rtol, atol in records:
            rows.append(row("correctness", f"{label}: {name}", f"max abs err {err:.2e}",
                            "FAIL" if problem else "PASS", problem or f"rtol {rtol:g}, atol {atol:g}"))
        if failure or not records:
            rows.append(row("correctness", label, "", "FAIL", failure or "no comparison ran"))
    return rows


# -- 2. scan timing ----------------------------------------------------------------------------

def scan_timing(s: Settings, progress) -> list[dict]:
    """Fused against materialized (kernels/bench.py), and the copy bandwidth on CUDA."""
    progress(f"scan timing: {', '.join(s.kernel_shapes)}")
    rows = [r for r in run_kernel_bench(device=s.device, shapes=s.kernel_shapes, batch=s.kernel_batch,
                                        repeats=s.kernel_repeats, include_reference=False)
            if r["fwd_ms"] is not None]  # the skipped reference rows
    columns, cells = table_rows(rows)
    out = []
    for r, cell in zip(rows, cells):
        c = dict(zip(columns, cell))
        out.append(row("scan timing", f"{r['shape']} b={r['batch']} {r['dtype']} {c['path']}",
                       f"fwd {c['fwd ms']} ms, fwd+bwd {c['fwd+bwd ms']} ms, saved {c['saved MB']} MB", "ok",
                       c["note"]))
    for line in ratio_lines(rows):
        shape, _, text = line.partition(": ")
        out.append(row("scan timing", f"{shape} speed-up", text.replace("vs ", "fused vs ", 1), "ok"))
    copy = next((r["copy_gbps"] for r in rows if r.get("copy_gbps")), None)
    if copy is not None:
        out.append(row("scan timing", "copy bandwidth, 1 GiB fp32 y.copy_(x)", f"{copy:.0f} GB/s", "ok"))
    else:
        out.append(row("scan timing", "copy bandwidth", "-", "-", "CUDA only"))
    return out


# -- 3. supernet step --------------------------------------------------------------------------

class Optimizers:
    """Several optimizers stepped as one (weights and architecture parameters)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


def supernet_step(s: Settings, progress) -> list[dict]:
    """Median time of a single-level DARTS step of the normalised supernet; the alphas must move."""
    bench = load_benchmark("bench_supernet")
    progress(f"supernet step: {s.supernet}")
    _, _, _, _, cpu_batch, gpu_batch = bench.SETTINGS[s.supernet]
    batch = s.supernet_batch or (gpu_batch if s.device == "cuda" else cpu_batch)
    net, img, chans, classes = bench.make(s.supernet, s.device, "normalised")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, chans, img, img, generator=gen).to(s.device)
    labels = torch.randint(0, classes, (batch,), generator=gen).to(s.device)
    darts = DartsConfig()
    optimizer = Optimizers(
        torch.optim.SGD(net.weight_parameters(), lr=1e-3, momentum=0.9),
        torch.optim.Adam(net.arch_parameters(), lr=darts.arch_lr, betas=darts.arch_betas,
                         weight_decay=darts.arch_weight_decay))
    step = bench.step_fn(net, images, labels, optimizer)
    alphas = net.alphas.detach().clone()
    for _ in range(2):
        step()
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(s.supernet_steps):
        _sync(s.device)
        t0 = time.perf_counter()
        loss = step()
        _sync(s.device)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    problems = []
    if not torch.isfinite(loss).item():
        problems.append("loss not finite")
    if torch.equal(net.alphas.detach(), alphas):
        problems.append("the alphas did not move")
    note = f"{len(net.candidates)} candidates x {net.num_layers} layers"
    if s.device == "cuda":
        note += f", peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
    return [row("supernet step", f"{s.supernet} b={batch} normalised, SGD weights + Adam alphas",
                f"median {ms:.1f} ms of {len(times)} ({batch * 1e3 / ms:.1f} img/s)",
                "FAIL" if problems else "ok", "; ".join(problems) or note)]


# -- 4. models ---------------------------------------------------------------------------------

def model_throughput(s: Settings, progress) -> list[dict]:
    """Inference and training images/s (scansearch/models/bench.py)."""
    progress(f"models: {', '.join(s.models)}")
    out = []
    for r in run_model_bench(device=s.device, batch=s.model_batch, img_size=s.model_img, models=s.models,
                             repeats=s.model_repeats):
        out.append(row("models", f"{r['model']} b={r['batch']} {r['img_size']}x{r['img_size']}",
                       f"inference {r['infer_img_s']:.1f} img/s, training {r['train_img_s']:.1f} img/s", "ok",
                       f"{r['params'] / 1e6:.1f}M params, {r['flops'] / 1e9:.2f} GFLOPs/img"))
    return out


# -- the table ---------------------------------------------------------------------------------

def format_table(rows: list[dict], title: str) -> str:
    """Plain-text table of ``rows`` under ``title``."""
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in COLUMNS]
    cells = [COLUMNS, ["-" * w for w in widths], *([str(r[c]) for c in COLUMNS] for r in rows)]
    return "\n".join([title, *("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells)])


def describe_device(s: Settings) -> str:
    if s.device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    interp = ", Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    return f"{s.device} ({torch.get_num_threads()} threads{interp})"


def triton_version() -> str:
    try:
        import triton
    except Exception as exc:  # noqa: BLE001
        return f"not importable ({first_line(exc)})"
    return triton.__version__


def run(s: Settings, progress=None) -> tuple[list[dict], bool]:
    """Every part in turn; returns (rows, True when every correctness check passed)."""
    start = time.perf_counter()

    def say(text):
        print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr, flush=True)

    progress = progress or say
    rows: list[dict] = []
    for part, fn in zip(PARTS, (check_correctness, scan_timing, supernet_step, model_throughput)):
        try:
            rows += fn(s, progress)
        except Exception as exc:  # noqa: BLE001  one part failing must not stop the others
            traceback.print_exc(file=sys.stderr)
            rows.append(row(part, part, "", "FAIL", first_line(exc)))
        finally:
            gc.collect()
            if s.device == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()
    ok = all(r["status"] != "FAIL" for r in rows if r["part"] == "correctness")
    return rows, ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="CPU, Triton interpreter, tiny sizes (also GPU_CHECK_SMOKE=1)")
    p.add_argument("--json", default=os.environ.get("GPU_CHECK_JSON") or None, metavar="PATH",
                   help="also write the rows as JSON here (also GPU_CHECK_JSON)")
    args = p.parse_args(argv)
    smoke = args.smoke or _smoke_requested([])
    if smoke and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("--smoke needs TRITON_INTERPRET=1 before triton is imported: run it as a script or via gpu_check.sh")
    s = SMOKE if smoke else GPU
    start = time.perf_counter()
    rows, ok = run(s)
    wall = time.perf_counter() - start
    title = (f"gpu_check{' --smoke' if smoke else ''}: {describe_device(s)}, torch {torch.__version__}, "
             f"triton {triton_version()}, {wall:.0f} s\ncorrectness inputs: {correctness_sizes(s)}")
    print(format_table(rows, title))
    failed = sum(r["status"] == "FAIL" for r in rows)
    print(f"{failed} row(s) failed; correctness {'passed' if ok else 'FAILED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": describe_device(s), "smoke": smoke, "torch": torch.__version__, "triton": triton_version(),
            "wall_s": wall, "correctness_ok": ok, "settings": dataclasses.asdict(s), "rows": rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
