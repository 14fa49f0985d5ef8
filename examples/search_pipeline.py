"""The search pipeline from Python: what `scansearch search` runs, with its settings as objects.

    python examples/search_pipeline.py            # a DARTS search, then TPE on its supernet (minutes)
    python examples/search_pipeline.py --fast     # a smoke run in about a minute

The same as two commands:

    scansearch search --space local8 --out runs/pipeline/darts
    scansearch search --searcher tpe --supernet runs/pipeline/darts --trials 30 --out runs/pipeline/tpe
"""
from __future__ import annotations

import argparse
from pathlib import Path

from scansearch.errors import InputError
from scansearch.searchers import OptunaSettings, RunContext, SearchSettings, run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, one epoch: checks the pipeline, not the result")
    parser.add_argument("--out", default="runs/pipeline")
    args = parser.parse_args()
    out = Path(args.out)
    tiny = ("dim=8", "depth=2", "d_state=4", "expand=1.0") if args.fast else ()
    ctx = RunContext(quiet=args.fast)  # the device ("auto"), the console its tables go to, progress or not

    # Settings are checked on construction: a bad value fails here, before any folder exists.
    try:
        SearchSettings(epochs=0)
    except InputError as err:
        print(f"refused before anything ran: {err}")

    darts = SearchSettings(space="local8", data="digits", epochs=1 if args.fast else 5, set=tiny)
    found = run_search(darts, out / "darts", ctx=ctx)
    print(f"DARTS found {['+'.join(layer) for layer in found.genotype.layers]} in {found.folder.path}")

    # TPE scores genotypes with the DARTS run's supernet; the supernet's data and model settings apply.
    tpe = SearchSettings(searcher="tpe", data="digits", epochs=darts.epochs, set=tiny,
                         optuna=OptunaSettings(trials=6 if args.fast else 30, supernet=str(found.folder.path)))
    best = run_search(tpe, out / "tpe", ctx=ctx)
    print(f"TPE's best: {['+'.join(layer) for layer in best.genotype.layers]}; train it with:\n"
          f"  scansearch train {best.to_train} --data digits --out {out / 'model'}")

    # A run folder remembers its settings: resume it (a finished search runs its last step again).
    again = run_search(None, out / "darts", resume=True, ctx=ctx)
    print(f"resumed {again.folder.path}: same genotype: {again.genotype.layers == found.genotype.layers}")


if __name__ == "__main__":
    main()
