"""`scansearch search --searcher nni-darts|nni-gumbel|nni-proxyless|nni-random`: NNI's one-shot strategies.

The space becomes an NNI model space (:mod:`scansearch.searchers.nni_adapter`) over the
same supernet DARTS trains; NNI trains it for ``--epochs`` epochs and exports each layer's
top ``k`` candidates, which become the run's ``genotype.yaml``. NNI is an optional extra
that lives in a virtual environment of its own; without it these searchers say how to
install it, before anything is written.

NNI keeps no checkpoint this toolkit can continue from, so ``--resume`` of an interrupted
NNI search starts it again from its first epoch (a finished one is left as it is).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .common import CLIError, console, set_crash_log

# what an NNI search reads; any other search option given with it is refused, not ignored
USED = ("space", "model", "data", "searcher", "epochs", "batch_size", "lr", "weight_decay", "seed", "img_size",
        "arch_lr", "k", "set", "seeds")
NNI_DIR = "nni"


def precheck(settings: dict[str, Any], args) -> dict[str, Any]:
    """NNI installed, no option it would ignore, the space, model and data valid: before any folder exists."""
    from ..searchers.nni_adapter import NNIMissing, require_nni
    from .search import _given

    unused = [k for k in _given(args) if k not in USED]
    if unused:
        raise CLIError(f"--{unused[0].replace('_', '-')} does not apply to --searcher {settings['searcher']} "
                       f"(NNI's strategies read {', '.join('--' + k.replace('_', '-') for k in USED if k != 'searcher')})")
    try:
        require_nni()
    except NNIMissing as err:
        raise CLIError(f"--searcher {settings['searcher']}: {err}") from None
    return settings


def search_one(settings: dict[str, Any], run_dir: Path | None, resume: bool, args):
    """An NNI search into one run folder; returns (genotype, folder, None, genotype to train)."""
    from ..searchers.darts import kept_space
    from ..searchers.nni_adapter import model_space, search
    from ..searchers.report import plot_heatmap, weights_table
    from ..searchers.run import RunFolder
    from .search import RUN_FORMAT, prepare
    from .search_optuna import _template

    if resume:
        folder = RunFolder.open(run_dir)
        if folder.file(RunFolder.SUMMARY).exists():
            folder.log("resumed: finished before, nothing to do")
            return folder.read_genotype(), folder, None, folder.file(RunFolder.GENOTYPE)
    else:
        settings = precheck(settings, args)
    space, data, supernet, _, _ = prepare({**settings, "alphas": "uniform", "warmup_epochs": 0}, args.device)
    space = kept_space(space, settings["k"])
    model_space(supernet, space.k)  # a space NNI cannot search is refused before the folder exists
    if not resume:
        folder = RunFolder.create(run_dir or RunFolder.default_path())
        folder.write_config({"scansearch_run": RUN_FORMAT, "searcher": settings["searcher"], "settings": settings,
                             "data": data.describe()})
    set_crash_log(folder.file(RunFolder.LOG))
    folder.log(("resumed (from the first epoch)" if resume else "started")
               + f": {settings['searcher']} on {space.name}, {settings['model']}, data {settings['data']}")
    if not args.quiet:
        console.print(f"searching [bold]{space.name}[/] with NNI's {settings['searcher'][4:]} strategy "
                      f"({len(space.candidates)} candidates, keep {space.k}) on {settings['model']} with "
                      f"{settings['data']}, seed {settings['seed']}: {supernet.num_layers} layers, "
                      f"{settings['epochs']} epochs -> {folder.path}", highlight=False)
    started = time.perf_counter()
    result = search(supernet, data, strategy=settings["searcher"], k=space.k, epochs=settings["epochs"],
                    lr=settings["lr"], weight_decay=settings["weight_decay"], arch_lr=settings["arch_lr"],
                    seed=settings["seed"], template=_template(supernet, space),
                    root=str(folder.file(NNI_DIR)), progress=not args.quiet,
                    provenance={"data": str(settings["data"])})
    seconds = time.perf_counter() - started
    folder.write_genotype(result.genotype)
    heatmap = None
    if result.probs is not None:
        import torch

        weights = torch.tensor(result.probs)
        heatmap = plot_heatmap(weights, supernet.candidates, folder.file(RunFolder.HEATMAP),
                               title=f"{space.name} on {settings['data']} (NNI {settings['searcher'][4:]})")
        console.print(weights_table(weights, supernet.candidates, result.genotype,
                                    f"{space.name}: NNI's probabilities per layer, kept directions in bold green"))
    folder.write_summary({"genotype": result.genotype.to_dict(), "seconds": round(seconds, 1),
                          "exported": result.exported, "probabilities": result.probs,
                          "heatmap": heatmap.name if heatmap else None})
    folder.log(f"finished in {seconds:.0f} s: genotype written")
    console.print(f"NNI {settings['searcher'][4:]}: {seconds:.0f} s; genotype: {folder.file(RunFolder.GENOTYPE)}",
                  highlight=False)
    return result.genotype, folder, None, folder.file(RunFolder.GENOTYPE)
