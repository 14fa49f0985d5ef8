"""`scansearch export RUN -o genotype.yaml`: the genotype a search run found, as a file of its own."""
from __future__ import annotations

import sys

from scansearch.cli.common import console
from scansearch.searchers.run import RunFolder


def register(sub) -> None:
    p = sub.add_parser("export", help="write the genotype of a finished search run",
                       description="Copy a search run's genotype (directions, alphas, provenance) to a YAML file.")
    p.add_argument("run", metavar="RUN_DIR", help="a folder written by `scansearch search`")
    p.add_argument("-o", "--output", help="genotype YAML to write (default: print it)")
    p.set_defaults(func=run)


def run(args) -> int:

    genotype = RunFolder.open(args.run).read_genotype()
    if args.output is None:
        sys.stdout.write(genotype.to_yaml())
        return 0
    path = genotype.save(args.output)
    console.print(f"wrote {path} ({len(genotype.layers)} layers, model {genotype.model})", highlight=False)
    return 0
