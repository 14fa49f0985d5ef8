"""Do zero-cost proxies rank genotypes the way training does? Spearman's rho over trained genotypes.

    python benchmarks/bench_zero_cost.py --data digits --genotypes 50 --epochs 3 \\
        --out benchmarks/data/zero_cost_digits.json
    python benchmarks/bench_zero_cost.py --scores benchmarks/data/zero_cost_digits.json   # score proxies only

Draws ``--genotypes`` genotypes of the space (the known ones first: cross, LocalMamba's
baseline; then distinct random ones, a fixed draw), trains each one's stand-alone model
with the same settings and seed, and records its test top-1. Every proxy of
:mod:`scansearch.searchers.zero_cost` is computed on the untrained model, and the table
gives Spearman's rank correlation between each proxy and the trained accuracy (ties take
their mean rank), with #params and FLOPs as the baselines a proxy has to beat.

The trained genotypes, their accuracies and every proxy's value are written to ``--out``: a
small benchmark file that a later proxy is scored against without training anything
(``--scores FILE``; ``--update`` writes the recomputed proxies back).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from scansearch.models.options import parse_overrides
from scansearch.data import load_data
from scansearch.genotype import Genotype
from scansearch.models import build_model, get_preset
from scansearch.searchers.encoding import GenotypeEncoding
from scansearch.searchers.study import known_genotypes
from scansearch.searchers.zero_cost import PROXIES, ZeroCost
from scansearch.spaces import load_space
from scansearch.train import TrainConfig, evaluate, fit


def ranks(values: list[float]) -> torch.Tensor:
    """Ranks 1..n, ties sharing their mean rank."""
    x = torch.tensor(values, dtype=torch.float64)
    order = x.argsort()
    r = torch.empty_like(x)
    r[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in x.unique():
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / denom if denom else float("nan")


def draw(space, layers: int, count: int, seed: int) -> list[tuple]:
    enc = GenotypeEncoding(space, layers)
    out = list(known_genotypes(enc).values())
    rng = random.Random(seed)
    seen = {enc.decode(enc.params(g)) for g in out}
    while len(out) < count:
        g = enc.decode({enc.name(i): rng.choice(enc.choices) for i in range(layers)})
        if g not in seen:
            seen.add(g)
            out.append(g)
    return out[:count]


def template_for(args, data) -> Genotype:
    overrides = parse_overrides(args.set)
    with torch.device("meta"):
        probe = build_model(args.model, num_classes=data.num_classes, img_size=data.img_size,
                            in_chans=data.in_chans, **overrides)
    grid = probe.genotype.grid if probe.genotype is not None and probe.genotype.grid else None
    if grid is None:
        grid = probe.cfg.token_grid
    layers = (load_space(args.space).patterns[:4],) * probe.cfg.num_layers
    prov = {"img_size": data.img_size, **({"model_overrides": overrides} if overrides else {})}
    return Genotype(layers=layers, model=get_preset(args.model).name, space=args.space, grid=tuple(grid),
                    provenance=prov)


def score_table(records: list[dict]) -> list[tuple[str, float]]:
    acc = [r["top1"] for r in records]
    return [(p, spearman([r["proxies"][p] for r in records], acc)) for p in PROXIES if p in records[0]["proxies"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--space", default="local8")
    parser.add_argument("--model", default="local_vim_micro")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--genotypes", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="zero_cost.json")
    parser.add_argument("--scores", metavar="FILE", help="recompute the proxies of a benchmark file; no training")
    parser.add_argument("--family", metavar="PATTERN",
                        help="also print the rho of a rule that knows the answer: how many members of this "
                             "family (e.g. w2: w2 and w2_flip) layer 0 and all layers keep (for planted data)")
    parser.add_argument("--update", action="store_true", help="with --scores: write the proxies and correlations "
                                                               "back into FILE")
    args = parser.parse_args()

    if args.scores:
        stored = json.loads(Path(args.scores).read_text())
        for key in ("data", "space", "model", "set", "img_size", "seed", "batch_size"):
            setattr(args, key, stored["settings"][key])
        records = stored["genotypes"]
    else:
        records = None
    data = load_data(args.data, img_size=args.img_size, batch_size=args.batch_size, seed=args.seed)
    template = template_for(args, data)
    batches = [b for _, b in zip(range(2), data.train)]
    zero_cost = ZeroCost(template, data, batches, seed=args.seed)
    if records is None:
        records = []
        space = load_space(args.space)
        config = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=0.05, warmup_epochs=min(1.0, args.epochs / 3),
                             seed=args.seed, device="cpu")
        started = time.perf_counter()
        for i, layers in enumerate(draw(space, len(template.layers), args.genotypes, args.seed)):
            torch.manual_seed(args.seed)
            genotype = Genotype(layers=layers, model=template.model, space=template.space, grid=template.grid,
                                provenance=template.provenance)
            model = build_model(genotype, num_classes=data.num_classes, img_size=data.img_size,
                                in_chans=data.in_chans)
            result = fit(model, data, config, progress=False)
            top1 = evaluate(result.model, data.test if data.test is not None else data.val, data.num_classes)["top1"]
            records.append({"layers": [list(l) if l != "none" else l for l in layers], "top1": top1})
            print(f"{i + 1:3d}/{args.genotypes} top-1 {top1:.4f}  {time.perf_counter() - started:.0f} s", flush=True)
    proxy_started = time.perf_counter()
    for r in records:
        layers = tuple(l if l == "none" else tuple(l) for l in r["layers"])
        r["proxies"] = zero_cost.scores(layers)
    proxy_seconds = (time.perf_counter() - proxy_started) / len(records)
    table = score_table(records)
    accs = [r["top1"] for r in records]
    print(f"\n{args.data}: Spearman rho between each proxy and test top-1 after {args.epochs} epochs, "
          f"{len(records)} genotypes of {args.space} on {args.model} (top-1 {min(accs):.3f}-{max(accs):.3f}; "
          f"{proxy_seconds:.2f} s a genotype for all proxies; {platform.processor() or platform.machine()})")
    print("| proxy | Spearman rho |\n|---|---:|")
    for name, rho in table:
        print(f"| {name} | {rho:+.3f} |")
    if args.family:
        members = {args.family, f"{args.family}_flip"}
        in_layer0 = [len(members & set(r["layers"][0])) for r in records]
        in_all = [sum(len(members & set(layer)) for layer in r["layers"]) for r in records]
        print(f"| {args.family} family in layer 0 (knows the answer) | {spearman(in_layer0, accs):+.3f} |")
        print(f"| {args.family} family in all layers (knows the answer) | {spearman(in_all, accs):+.3f} |")
    kept = [{"layers": r["layers"], "top1": r["top1"], "proxies": r["proxies"]} for r in records]
    if args.scores and args.update:
        stored.update(genotypes=kept, spearman=dict(table))
        Path(args.scores).write_text(json.dumps(stored, indent=1))
    elif not args.scores:
        out = {"settings": {k: getattr(args, k) for k in ("data", "space", "model", "set", "img_size", "seed",
                                                          "batch_size", "epochs", "lr")},
               "genotypes": kept, "spearman": dict(table)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
