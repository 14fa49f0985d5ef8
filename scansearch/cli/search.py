"""`scansearch search`: the DARTS searcher is not built yet; this says so instead of pretending."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("search", help="search per-layer scan directions (not available yet)")
    p.add_argument("--space", default="local8")
    p.set_defaults(func=run)


def run(args) -> int:
    sys.stderr.write("scansearch: search is not available yet: the DARTS searcher (supernet, training "
                     "loop wiring) is still to be built; spaces, genotypes, kernels and models work today\n")
    return 1
