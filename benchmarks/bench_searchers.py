"""Which searcher's genotype trains best? DARTS, TPE, NSGA-II, random and zero-cost at one budget.

    python benchmarks/bench_searchers.py --data digits --train-epochs 10 --work /tmp/searchers_digits
    python benchmarks/bench_searchers.py --data /usr/share/datasets/fashion-mnist:n_train=2500,n_val=500,n_test=2000 \\
        --img-size 16 --set patch_size=2 --train-epochs 8 --work /tmp/searchers_fashion \\
        --darts-from value_fashion.json

Per seed, every searcher runs from the command line with its defaults:

* ``darts``: ``scansearch search`` (or, with ``--darts-from``, the genotypes and search times
  that ``bench_search_value.py`` recorded for the same data, seeds and training budget,
  whose ``searched`` row is this row);
* ``tpe``, ``nsga2``, ``random``: ``--evaluator oneshot`` on one uniform-alpha supernet per
  seed (trained once, ``--supernet`` for all three), ``--trials`` trials each; their search
  time is the supernet's plus their own;
* ``zero-cost``: ``--searcher zero-cost --proxy P``, no training.

Each searcher's genotype is then trained from scratch with the same settings and seed as
``bench_search_value.py`` (AdamW, lr 1e-2, weight decay 0.05, warm-up, cosine, batch 64)
and scored on the test split. The table gives test top-1 mean and standard deviation
over seeds, search seconds, FLOPs, parameters and CPU latency (batch 1, median of
``--repeats`` passes) of the genotypes found. A JSON copy goes to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search_value import train_once  # noqa: E402

from scansearch.data import load_data  # noqa: E402
from scansearch.genotype import Genotype  # noqa: E402
from scansearch.searchers.evaluators import Costs  # noqa: E402

SEARCHERS = ("darts", "tpe", "nsga2", "random", "zero-cost")


def cli(args: list[str]) -> float:
    """Run ``scansearch search ARGS`` quietly; its wall-clock seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scansearch", "search", *args, "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--search-epochs", type=int, default=None, help="supernet epochs (default: the CLI's)")
    parser.add_argument("--proxy", default="zico")
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--darts-from", metavar="JSON", help="a bench_search_value.py JSON of the same data and "
                                                                "budget: its searched genotypes, times and top-1")
    parser.add_argument("--work", required=True, help="folder for the run folders")
    parser.add_argument("--out", default="bench_searchers.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, *(["--img-size", str(args.img_size)] if args.img_size else []),
              *[x for s in args.set for x in ("--set", s)],
              *(["--epochs", str(args.search_epochs)] if args.search_epochs else [])]
    darts = json.loads(Path(args.darts_from).read_text()) if args.darts_from else None
    if darts is not None and (darts["data"] != args.data or darts["train_epochs"] != args.train_epochs):
        parser.error(f"--darts-from {args.darts_from} is for {darts['data']} with {darts['train_epochs']} "
                     f"training epochs, not {args.data} with {args.train_epochs}")

    rows: dict[str, dict[str, list]] = {name: {"top1": [], "seconds": [], "layers": []} for name in SEARCHERS}
    costs: dict[str, list[dict]] = {name: [] for name in SEARCHERS}
    for seed in seeds:
        s = ["--seed", str(seed)]
        supernet = work / f"supernet-{seed}"
        if not (supernet / "summary.json").exists():
            (work / f"supernet-{seed}.seconds").write_text(
                str(cli(["--searcher", "random", "--trials", "1", *common, *s, "--out", str(supernet)])))
        supernet_seconds = float((work / f"supernet-{seed}.seconds").read_text())
        found: dict[str, tuple[Genotype, float]] = {}
        for name in SEARCHERS:
            out = work / f"{name}-{seed}"
            if name == "darts" and darts is not None:
                template = Genotype.load(supernet / "genotype.yaml")
                layers = tuple(tuple(layer) if layer != "none" else layer for layer in darts["found"][str(seed)])
                found[name] = (Genotype(layers=layers, model=template.model, space=template.space,
                                        grid=template.grid, provenance={**template.provenance, "searcher": "darts"}),
                               darts["search_seconds"][seeds.index(seed)])
                continue
            if not (out / "genotype.yaml").exists():
                extra = {"darts": [], "zero-cost": ["--proxy", args.proxy, "--trials", str(args.trials)]}.get(
                    name, ["--trials", str(args.trials), "--supernet", str(supernet)])
                (work / f"{name}-{seed}.seconds").write_text(
                    str(cli(["--searcher", name, *extra, *common, *s, "--out", str(out)])))
            seconds = float((work / f"{name}-{seed}.seconds").read_text())
            if name in ("tpe", "nsga2", "random"):
                seconds += supernet_seconds
            found[name] = (Genotype.load(out / "genotype.yaml"), seconds)
        data = load_data(args.data, img_size=args.img_size, batch_size=args.batch_size, seed=seed)
        for name, (genotype, seconds) in found.items():
            if name == "darts" and darts is not None:
                top1 = darts["rows"]["searched"][seeds.index(seed)]
            else:
                top1 = train_once(genotype, args.data, args.img_size, seed, args.train_epochs, args.batch_size,
                                  args.lr, {})
            measured = Costs(genotype, num_classes=data.num_classes, img_size=data.img_size, in_chans=data.in_chans,
                             repeats=args.repeats)(genotype.layers, ("flops", "params", "latency_ms"))
            rows[name]["top1"].append(top1)
            rows[name]["seconds"].append(seconds)
            rows[name]["layers"].append([list(layer) if layer != "none" else layer for layer in genotype.layers])
            costs[name].append(measured)
            print(f"seed {seed} {name:9s} top-1 {top1:.4f}  search {seconds:.0f} s  "
                  f"{' / '.join(' '.join(layer) for layer in genotype.layers)}", flush=True)

    def mean_std(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    print(f"\n{args.data}: test top-1 over seeds {seeds}, each genotype trained {args.train_epochs} epochs "
          f"({platform.processor() or platform.machine()}, torch {torch.__version__}); one-shot searchers: "
          f"{args.trials} trials on one supernet a seed; zero-cost: {args.trials} trials of {args.proxy}")
    print("| searcher | test top-1 | search s | MFLOPs | params | latency ms | per seed |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        c = costs[name]
        print(f"| {name} | {mean_std(row['top1'])} | {statistics.mean(row['seconds']):.0f} | "
              f"{statistics.mean(x['flops'] for x in c) / 1e6:.2f} | {statistics.mean(x['params'] for x in c):.0f} | "
              f"{statistics.median(x['latency_ms'] for x in c):.2f} | {' '.join(f'{v:.4f}' for v in row['top1'])} |")
    Path(args.out).write_text(json.dumps({"data": args.data, "seeds": seeds, "train_epochs": args.train_epochs,
                                          "trials": args.trials, "proxy": args.proxy, "rows": rows, "costs": costs},
                                         indent=1))


if __name__ == "__main__":
    main()
