"""Benchmark the multi-direction selective scan: reference vs materialized vs fused.

    python benchmarks/bench_kernels.py                   # CPU, every shape
    python benchmarks/bench_kernels.py --quick           # Vim-Ti K=4 only
    python benchmarks/bench_kernels.py --device cuda     # GPU: adds copy bandwidth

The measuring code lives in ``scansearch.kernels.bench`` (also behind
``scansearch bench kernels``); this script parses arguments and renders the
results as a rich table.
"""
from __future__ import annotations

import argparse
import platform
import sys

import torch

from scansearch.kernels.bench import SHAPES, ratio_lines, run_kernel_bench, table_rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--quick", action="store_true", help="only Vim-Ti K=4")
    p.add_argument("--shapes", default=None, help=f"comma-separated subset of: {', '.join(SHAPES)}")
    p.add_argument("--batch", type=int, default=None, help="override the per-device batch size")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference loops")
    return p.parse_args(argv)


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    shapes = args.shapes.split(",") if args.shapes else None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=None)
        rows = run_kernel_bench(device=args.device, repeats=args.repeats, quick=args.quick, shapes=shapes,
                                batch=args.batch, include_reference=not args.no_reference,
                                on_row=lambda r: progress.update(task, description=f"{r['shape']} {r['path']}"))
    columns, cells = table_rows(rows)
    table = Table(title=f"selective scan kernels on {machine(args.device)}")
    for c in columns:
        table.add_column(c, justify="right" if c.endswith(("ms", "MB")) or c in ("K", "batch") else "left",
                         no_wrap=c != "note")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    for line in ratio_lines(rows):
        console.print(line)
    return rows


if __name__ == "__main__":
    main()
