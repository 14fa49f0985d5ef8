"""`scansearch genotype validate|show FILE`: check a genotype and print it as a table."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from scansearch.cli.common import console
from scansearch.genotype import Genotype
from scansearch.spaces import NONE, set_locality


def register(sub) -> None:
    p = sub.add_parser("genotype", help="validate or show a genotype file")
    gsub = p.add_subparsers(dest="genotype_command", metavar="ACTION", required=True,
                            parser_class=type(p))
    v = gsub.add_parser("validate", help="check a genotype YAML file (exit 2 with the reason if invalid)")
    v.add_argument("file", help="genotype YAML file, or the name of a shipped preset")
    v.set_defaults(func=run_validate)
    s = gsub.add_parser("show", help="print a genotype's layers as a table")
    s.add_argument("file", help="genotype YAML file, or the name of a shipped preset")
    s.set_defaults(func=run_show)


def load_genotype(text: str) -> Genotype:
    """A genotype file, or a shipped preset's name when no such file exists."""
    if not Path(text).exists() and text in Genotype.presets():
        return Genotype.preset(text)
    return Genotype.load(text)


def run_validate(args) -> int:
    g = load_genotype(args.file)
    space = f", space {g.space_name}" if g.space else ""
    console.print(f"{args.file}: ok ({len(g)} layers{space})")
    return 0


def run_show(args) -> int:
    g = load_genotype(args.file)
    title = f"{args.file}: {len(g)} layers" + (f", model {g.model}" if g.model else "") + \
        (f", space {g.space_name}" if g.space else "")
    table = Table(title=title)
    table.add_column("layer", justify="right")
    table.add_column("directions")
    if g.grid:
        table.add_column(f"locality on {g.grid[0]}x{g.grid[1]}", justify="right")
    for i, layer in enumerate(g.layers):
        row = [str(i), "none (gated CNN, no SSM)" if layer == NONE else " ".join(layer)]
        if g.grid:
            row.append("-" if layer == NONE else f"{set_locality(layer, *g.grid):.2f}")
        table.add_row(*row)
    console.print(table)
    if g.provenance:
        console.print("provenance: " + ", ".join(f"{k}={v}" for k, v in g.provenance.items()))
    return 0
