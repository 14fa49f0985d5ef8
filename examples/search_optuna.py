"""Discrete search with Optuna: TPE over genotypes, scored with a supernet's shared weights.

    python examples/search_optuna.py            # a few minutes on a 2-core CPU
    python examples/search_optuna.py --fast     # a smoke run in under a minute

The same from the command line (the run folder opens in optuna-dashboard):

    scansearch search --searcher tpe --trials 60 --out runs/tpe
    scansearch search --searcher nsga2 --objectives loss,latency_ms --supernet runs/tpe --out runs/nsga2
    optuna-dashboard runs/tpe/study.journal

Here in Python: train a supernet with frozen uniform alphas (every candidate trained
alike), then let TPE propose genotypes that the one-shot evaluator scores on held-out
batches, starting from the fixed genotypes (cross, LocalMamba's baseline).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
import torch

from scansearch.data import load_data
from scansearch.genotype import Genotype
from scansearch.searchers.darts import held_out_halves
from scansearch.searchers.encoding import GenotypeEncoding
from scansearch.searchers.evaluators import OneShot
from scansearch.searchers.oneshot import train_uniform
from scansearch.searchers.study import Objective, create_study, journal_storage, make_sampler, run_study
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space
from scansearch.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="one short epoch and 10 trials: checks the pipeline")
    parser.add_argument("--out", default=None, help="folder for the supernet and the study (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="scansearch-optuna-"))
    epochs, trials = (1, 10) if args.fast else (4, 60)

    data = load_data("digits", batch_size=64, seed=0)
    space = load_space("local8")
    torch.manual_seed(0)
    supernet = Supernet("local_vim_micro", space, num_classes=data.num_classes, img_size=data.img_size,
                        in_chans=data.in_chans)
    config = TrainConfig(epochs=epochs, lr=1e-2, weight_decay=0.01, seed=0, device="cpu",
                         max_steps_per_epoch=4 if args.fast else None)
    train_uniform(supernet, data, config, None, out / "supernet", progress=not args.fast)

    select, verify = held_out_halves(data.val, torch.device("cpu"), None)
    encoding = GenotypeEncoding(space, supernet.num_layers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(journal_storage(out / "study.journal"), "example", ("loss",),
                         make_sampler("tpe", 0, ("loss",), trials), None, resume=False, encoding=encoding)
    result = run_study(study, Objective(encoding, OneShot(supernet, select), ("loss",)), trials)

    best = result.best[0]
    layers = encoding.decode(best.params)
    print(f"{len(study.trials)} trials; best trial {best.number} (held-out loss {best.value:.4f}"
          + (f", the fixed genotype {best.user_attrs['known']}" if "known" in best.user_attrs else "") + "):")
    for i, layer in enumerate(layers):
        print(f"  layer {i}: {' '.join(layer) if layer != 'none' else 'none'}")
    # checked on the other half of the validation batches, which no trial read
    check = OneShot(supernet, verify)
    for name, trial in [("best", best)] + [(t.user_attrs["known"], t) for t in study.trials if "known" in t.user_attrs]:
        print(f"  {name:20s} loss on unseen batches {check(encoding.decode(trial.params))['loss']:.4f}")
    genotype = Genotype(layers=layers, model="local_vim_micro", space="local8", grid=tuple(supernet.token_grid),
                        provenance={"searcher": "tpe", "trial": best.number, "img_size": data.img_size})
    genotype.save(out / "genotype.yaml")
    print(f"genotype: {out / 'genotype.yaml'}; train it with `scansearch train {out / 'genotype.yaml'} --data digits`")


if __name__ == "__main__":
    main()
