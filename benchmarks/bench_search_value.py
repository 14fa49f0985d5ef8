"""Is a search worth running? The searched genotype against fixed ones at equal training budget.

    python benchmarks/bench_search_value.py --data digits
    python benchmarks/bench_search_value.py --data planted:n_train=2000,motifs_per_image=10 --set dim=16
    python benchmarks/bench_search_value.py --data /usr/share/datasets/fashion-mnist:n_train=2500,n_val=500,n_test=2000 \\
        --img-size 16 --set patch_size=2

For each data set: one search per seed (the command line's defaults unless options say
otherwise), then every genotype below trained from scratch with the same settings for
each seed, test top-1 mean and spread in one table, with the search time beside it:

* ``searched``: the search's genotype for that seed;
* ``cross``: VMamba's ``h h_flip v v_flip`` in every layer;
* ``localmamba_baseline``: LocalMamba's un-searched ``h h_flip w2 w2_flip``;
* ``random-1..3``: k directions of the space drawn at random per layer (fixed draws).

Fixed genotypes with more directions than the space keeps (cross with k = 2) are trained
as they are: a row then compares more scan directions, and the table says how many.
A row's spread is the standard deviation over seeds. The table and a JSON copy are
written beside ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from scansearch.searchers import SearchSettings, prepare
from scansearch.searchers.settings import DEFAULTS
from scansearch.data import load_data
from scansearch.genotype import Genotype
from scansearch.models import build_model
from scansearch.searchers.darts import search
from scansearch.searchers.run import RunFolder
from scansearch.searchers.verify import REFERENCES, as_genotype
from scansearch.train import TrainConfig, evaluate, fit


def random_genotypes(space, layers: int, count: int, seed: int = 1234) -> dict[str, tuple]:
    rng = random.Random(seed)
    patterns = list(space.patterns)
    return {f"random-{i + 1}": tuple(tuple(sorted(rng.sample(patterns, space.k), key=patterns.index))
                                     for _ in range(layers)) for i in range(count)}


def train_once(genotype: Genotype, data_spec: str, img_size, seed: int, epochs: int, batch_size: int, lr: float,
               overrides: dict) -> float:
    data = load_data(data_spec, img_size=img_size, batch_size=batch_size, seed=seed)
    torch.manual_seed(seed)
    model = build_model(genotype, num_classes=data.num_classes, img_size=data.img_size, in_chans=data.in_chans,
                        **overrides)
    config = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=min(2.0, epochs / 5), seed=seed,
                         device="cpu")
    result = fit(model, data, config, progress=False)
    loader = data.test if data.test is not None else data.val
    return evaluate(result.model, loader, data.num_classes)["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--space", default="local8")
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--search-epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--select", default=DEFAULTS["select"])
    parser.add_argument("--randoms", type=int, default=3)
    parser.add_argument("--searched", metavar="RUN",
                        help="take each seed's genotype and search time from RUN/seed-S (a `scansearch search "
                             "--seeds` run) instead of searching here")
    parser.add_argument("--out", default="bench_search_value.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from scansearch.models.options import parse_overrides

    overrides = parse_overrides(args.set)
    rows: dict[str, list[float]] = {}
    search_seconds, found = [], {}
    for seed in seeds:
        if args.searched:
            folder = RunFolder.open(Path(args.searched) / f"seed-{seed}")
            genotype = folder.read_genotype()
            search_seconds.append(folder.read_json(RunFolder.SUMMARY)["seconds"])
            space = genotype.load_space()
        else:
            settings = SearchSettings.from_flat({
                "data": args.data, "space": args.space, "k": args.k, "seed": seed, "epochs": args.search_epochs,
                "img_size": args.img_size, "set": args.set or [], "select": args.select})
            p = prepare(settings, "cpu")
            space = p.space
            started = time.perf_counter()
            genotype = search(p.supernet, p.data, p.train_config, p.darts_config, progress=False).genotype
            search_seconds.append(time.perf_counter() - started)
            if args.k is not None:
                space = genotype.load_space()
        found[seed] = [list(layer) for layer in genotype.layers]
        n = len(genotype.layers)
        candidates = {"searched": genotype.layers,
                      **{name: (dirs,) * n for name, dirs in REFERENCES.items()},
                      **random_genotypes(space, n, args.randoms)}
        for name, layers in candidates.items():
            g = as_genotype(genotype, layers, name)
            top1 = train_once(g, args.data, args.img_size, seed, args.train_epochs, args.batch_size, args.lr, {})
            rows.setdefault(name, []).append(top1)
            print(f"seed {seed} {name:20s} {top1:.4f}", flush=True)

    print(f"\n{args.data}: test top-1 over seeds {seeds}, {args.train_epochs} training epochs each "
          f"(search: {args.search_epochs} epochs, select {args.select}, "
          f"{statistics.mean(search_seconds):.0f} s a seed on {platform.processor() or platform.machine()})")
    print(f"| genotype | mean | spread (std) | per seed |\n|---|---:|---:|---|")
    for name, values in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.4f} | {spread:.4f} | "
              f"{' '.join(f'{v:.4f}' for v in values)} |")
    Path(args.out).write_text(json.dumps({"data": args.data, "seeds": seeds, "rows": rows, "found": found,
                                          "search_seconds": search_seconds, "train_epochs": args.train_epochs,
                                          "search_epochs": args.search_epochs, "select": args.select}, indent=2))


if __name__ == "__main__":
    main()
