"""`scansearch doctor`: what this installation can run, and what it will run by default."""
from __future__ import annotations

import importlib.metadata
import json
import platform
import sys

from rich.markup import escape
from rich.table import Table

from scansearch import __version__
from scansearch.cli.common import console
from scansearch.kernels import backend_report

PACKAGES = ("torch", "triton", "optuna", "networkx", "pyyaml", "rich", "safetensors", "matplotlib", "nni")


def register(sub) -> None:
    p = sub.add_parser("doctor", help="versions, devices and which scan backend runs where",
                       description="Report the scan backends (and why one cannot run), devices and versions.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_line(report: dict) -> str:
    """One line on the CPU path: the compiled scan and how it was built, or why it is missing."""
    build = report["cpu_build"]
    if not build["ok"]:
        return (f"CPU scans run on the 'torch' backend: the compiled CPU scan is unavailable "
                f"({escape(build['why'])})")
    threads = f"{build['threads']} threads" if build["openmp"] else "1 thread (built without OpenMP)"
    return (f"CPU scans run on the compiled 'cpu' backend: {build['isa']}, {build['lanes']} lanes, {threads}; "
            f"float64 on 'torch'; built by {escape(build['compiler'])} {escape(build['flags'])} into "
            f"{escape(build['path'])}")


def run(args) -> int:

    report = backend_report()
    versions = {name: _version(name) for name in PACKAGES}
    if args.json:

        print(json.dumps({"scansearch": __version__, "python": platform.python_version(),
                          "packages": versions, **report}, default=str))
        return 0
    backends = Table(title="scan backends")
    backends.add_column("backend")
    backends.add_column("status")
    backends.add_column("default for")
    for name, status in report["backends"].items():
        default_for = [d for d in ("cpu", "cuda") if report[f"default_backend_{d}"] == name]
        shown = "[green]ok[/]" if status == "ok" else f"[yellow]{escape(status)}[/]"  # reasons may hold [brackets]
        backends.add_row(name, shown, ", ".join(default_for))
    console.print(backends)
    console.print(_cpu_line(report), highlight=False)
    env = Table(title="installation")
    env.add_column("item")
    env.add_column("value")
    env.add_row("scansearch", __version__)
    env.add_row("python", f"{platform.python_version()} ({sys.executable})")
    env.add_row("device", report["device_name"] + (" (CUDA)" if report["cuda_available"] else ""))
    for key, value in report.items():
        if key.startswith("SCANSEARCH") or key.startswith("TRITON"):
            env.add_row(key, "unset" if value is None else str(value))
    for name, version in versions.items():
        env.add_row(name, version or "[dim]not installed[/]")
    console.print(env)
    return 0
