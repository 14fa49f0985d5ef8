"""Does TPE with the one-shot evaluator find the planted family, and how does it compare with random?

    python benchmarks/bench_tpe_planted.py --runs /tmp/planted_2x2 --family w2 --seeds 0,1,2
    python benchmarks/bench_tpe_planted.py --runs /tmp/planted_4x1 --family v

``--runs`` is a ``scansearch search --data planted:... --seeds S,S`` run folder: each
seed's supernet (``RUN/seed-S/checkpoint.pt``, trained on that seed's planted data) is
the one-shot evaluator's. The study starts without the known genotypes (LocalMamba's
baseline holds w2 and w2_flip in every layer, which would hand the answer to the sampler),
so the sampler finds whatever it finds alone within ``--trials`` trials.

Two criteria, per seed, each met by a random 4-of-8 pick with probability C(6,2)/C(8,4) =
15/70 = 21% (three seeds by luck: 1.0%):

* ``layer 0``: the best trial's layer 0 keeps both members of the planted family (``w2``
  and ``w2_flip``);
* ``strongest layer``: the best trial keeps both members in the layer where that seed's
  supernet reads the family (the layer whose family-masking raised the held-out loss most,
  from ``RUN/seed-S/selection.json``). Every layer keeps each token at its pixel, so a
  supernet may read the blocks in any layer; this asks whether the sampler found where.

The same study with the random sampler (same trials, same evaluator) is the baseline.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import optuna

from scansearch.searchers import SearchSettings, prepare
from scansearch.searchers.darts import held_out_halves
from scansearch.searchers.encoding import GenotypeEncoding
from scansearch.searchers.evaluators import OneShot
from scansearch.searchers.oneshot import load_supernet_weights
from scansearch.searchers.run import RunFolder
from scansearch.searchers.study import Objective, create_study, make_sampler, run_study


def chance(n: int, k: int, family: int = 2) -> float:
    """P(a random k-of-n pick holds every member of a family of ``family``)."""
    return math.comb(n - family, k - family) / math.comb(n, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True)
    parser.add_argument("--family", default="w2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--samplers", default="tpe,random")
    parser.add_argument("--batches", type=int, default=4, help="held-out batches each trial reads (default 4)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    family = {args.family, f"{args.family}_flip"}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        folder = RunFolder.open(Path(args.runs) / f"seed-{seed}")
        p = prepare(SearchSettings.from_flat(folder.read_config()["settings"]), "cpu")
        space, data, supernet = p.space, p.data, p.supernet
        load_supernet_weights(supernet, folder.file("checkpoint.pt"))
        select, _ = held_out_halves(data.val, supernet.alphas.device, args.batches)
        encoding = GenotypeEncoding(space, supernet.num_layers)
        evaluator = OneShot(supernet, select)
        selection = json.loads(folder.file("selection.json").read_text())
        reads = max(selection["layers"], key=lambda layer: layer["family_scores"][args.family]["loss"])["layer"]
        for sampler in args.samplers.split(","):
            started = time.perf_counter()
            study = create_study(None, f"{sampler}-{seed}", ("loss",),
                                 make_sampler(sampler, seed, ("loss",), args.trials), None, resume=False,
                                 encoding=encoding, enqueue_known=False)
            result = run_study(study, Objective(encoding, evaluator, ("loss",)), args.trials)
            best = encoding.decode(result.best[0].params)
            first = next((t.number for t in study.trials if family <= set(encoding.decode(t.params)[0])), None)
            rows.append((seed, sampler, best[0], family <= set(best[0]), reads, family <= set(best[reads]),
                         result.best[0].value, first, time.perf_counter() - started))
            print(f"seed {seed} {sampler:6s} best {' / '.join(' '.join(layer) for layer in best)}  "
                  f"loss {result.best[0].value:.4f}  layer 0 {family <= set(best[0])}  "
                  f"layer {reads} {family <= set(best[reads])}", flush=True)
    p = chance(len(space.patterns), space.k)
    print(f"\n{args.runs}: one-shot {args.trials} trials per study ({args.batches} held-out batches each), no "
          f"known genotypes enqueued; a pass keeps {' and '.join(sorted(family))} in layer 0, or in the layer "
          f"where the seed's supernet reads the family (chance {p:.1%} a seed, {p ** 3:.1%} for three)")
    print("| seed | sampler | best layer 0 | layer 0 pass | supernet reads in | pass there | held-out loss | "
          "first trial with the family in layer 0 | seconds |")
    print("|---:|---|---|---|---:|---|---:|---:|---:|")
    yes = {True: "yes", False: "no"}
    for seed, sampler, layer, ok, reads, ok_reads, loss, first, seconds in rows:
        print(f"| {seed} | {sampler} | {' '.join(layer)} | {yes[ok]} | {reads} | {yes[ok_reads]} | {loss:.4f} | "
              f"{'-' if first is None else first} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
