"""`scansearch bench kernels|model`: the benchmarks of ``benchmarks/`` from the command line.

Numbers on a shared machine are noise; the ratios between paths measured in one run are
what to read. ``benchmarks/RESULTS.md`` records runs with the machine they came from.
"""
from __future__ import annotations

import torch
from rich.table import Table

from scansearch.cli.common import InputError, console
from scansearch.kernels.bench import SHAPES, ratio_lines, run_kernel_bench, table_rows
from scansearch.models import PRESETS
from scansearch.models.bench import BENCH_MODELS, print_table, run_model_bench


def register(sub) -> None:
    p = sub.add_parser("bench", help="time the scan kernels or whole models on this machine",
                       description="Benchmark the fused scan against its baselines, or model throughput.")
    p.add_argument("what", choices=("kernels", "model"), help="kernels: fused vs reference vs materialized "
                                                              "scan; model: images/s of model presets")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when there is one)")
    p.add_argument("--quick", action="store_true", help="the smallest useful run (one shape, one model step)")
    p.add_argument("--models", nargs="+", default=None, metavar="PRESET", help="model presets (bench model)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: per device)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    p.add_argument("--shapes", nargs="+", default=None, metavar="SHAPE",
                   help="bench kernels: layer shapes (vim_ti_k2, vim_ti_k4, vim_ti_k8, vmamba_t1_k4, vmamba_t1_k8)")
    p.add_argument("--threads", nargs="+", type=int, default=None, metavar="N",
                   help="bench kernels on the CPU: thread counts to time each shape at (default: torch's)")
    p.set_defaults(func=run)


def run(args) -> int:

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch here")
    for name in ("batch", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    if args.threads is not None and min(args.threads) < 1:
        raise InputError(f"--threads must be at least 1, got {min(args.threads)}")
    if args.what != "kernels" and (args.shapes or args.threads):
        raise InputError("--shapes and --threads apply to `bench kernels` only")
    if args.what == "kernels":

        unknown = [s for s in args.shapes or () if s not in SHAPES]
        if unknown:
            raise InputError(f"--shapes: unknown shape {unknown[0]!r}; known: {', '.join(SHAPES)}")
        with console.status("timing the scan kernels"):
            rows = run_kernel_bench(device=device, repeats=args.repeats or 5, quick=args.quick, batch=args.batch,
                                    shapes=args.shapes, threads=args.threads)
        columns, cells = table_rows(rows)
        table = Table(title=f"selective scan kernels on {device}")
        for c in columns:
            table.add_column(c, justify="right" if c.endswith(("ms", "MB")) or c in ("K", "batch", "threads")
                             else "left")
        for row in cells:
            table.add_row(*row)
        console.print(table)
        for line in ratio_lines(rows):
            console.print(line, highlight=False)
        return 0

    models = args.models or (["local_vim_micro", "vmamba_micro"] if args.quick else list(BENCH_MODELS))
    unknown = [m for m in models if m not in PRESETS]
    if unknown:
        raise InputError(f"--models: unknown preset {unknown[0]!r} (see `scansearch derive --help` for presets)")
    with console.status("timing the models"):
        rows = run_model_bench(device, args.batch, None, args.quick, models, None, args.repeats)
    print_table(rows, console)
    return 0
