"""Benchmark the multi-direction selective scan: reference vs materialized vs fused.

    python benchmarks/bench_kernels.py                   # CPU, every shape
    python benchmarks/bench_kernels.py --quick           # Vim-Ti K=4 only
    python benchmarks/bench_kernels.py --device cuda     # GPU: adds copy bandwidth
    python benchmarks/bench_kernels.py --per-direction-only

A second table times per-direction outputs (batch, L, K, dim): K separate K=1
calls against one ``multi_scan(..., merge=False)`` call (``--no-per-direction``
skips it, ``--per-direction-only`` runs only it).

The measuring code lives in ``scansearch.kernels.bench`` (also behind
``scansearch bench kernels``); this script parses arguments and renders the
results as a rich table.
"""
from __future__ import annotations

import argparse
import platform
import sys

import torch

from scansearch.kernels.bench import (
    PER_DIRECTION_SHAPES,
    SHAPES,
    per_direction_ratio_lines,
    ratio_lines,
    run_kernel_bench,
    run_per_direction_bench,
    table_rows,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--quick", action="store_true", help="only Vim-Ti K=4")
    p.add_argument("--shapes", default=None, help=f"comma-separated subset of: {', '.join(SHAPES)}")
    p.add_argument("--batch", type=int, default=None, help="override the per-device batch size")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference loops")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--no-per-direction", action="store_true",
                       help="skip the per-direction table (K=1 calls vs one merge=False call)")
    which.add_argument("--per-direction-only", action="store_true",
                       help=f"only the per-direction table ({', '.join(PER_DIRECTION_SHAPES)})")
    return p.parse_args(argv)


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def render(console, rows, title, lines) -> None:
    from rich.table import Table

    columns, cells = table_rows(rows)
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c.endswith(("ms", "MB")) or c in ("K", "batch") else "left",
                         no_wrap=c != "note")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    for line in lines:
        console.print(line)


def main(argv=None) -> list[dict]:
    """Returns the rows of both tables (per-direction rows after the main ones)."""
    args = parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress

    console = Console(width=None if sys.stdout.isatty() else 150)
    shapes = args.shapes.split(",") if args.shapes else None
    rows, per_direction = [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=None)
        show = lambda r: progress.update(task, description=f"{r['shape']} {r['path']}")  # noqa: E731
        if not args.per_direction_only:
            rows = run_kernel_bench(device=args.device, repeats=args.repeats, quick=args.quick, shapes=shapes,
                                    batch=args.batch, include_reference=not args.no_reference, on_row=show)
        if not args.no_per_direction:
            per_direction = run_per_direction_bench(device=args.device, repeats=args.repeats, on_row=show)
    if rows:
        render(console, rows, f"selective scan kernels on {machine(args.device)}", ratio_lines(rows))
    if per_direction:
        render(console, per_direction, f"per-direction outputs on {machine(args.device)}",
               per_direction_ratio_lines(per_direction))
    return rows + per_direction


if __name__ == "__main__":
    main()
