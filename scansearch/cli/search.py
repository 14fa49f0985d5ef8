"""`scansearch search`: parse the options, run :func:`scansearch.searchers.run_search`, print.

The search itself (settings, searchers, the run folder, resume, ``--join``, seeds, torchrun)
is library code in :mod:`scansearch.searchers`; see ``docs/searching.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scansearch import distributed
from scansearch.cli.common import console, set_crash_log
from scansearch.searchers import run_search
from scansearch.searchers.darts import ALPHAS, MODES, SELECTIONS
from scansearch.searchers.searcher import RunContext
from scansearch.searchers.settings import DEFAULTS, EVALUATORS, PRUNERS, SEARCHERS, settings_from_options
from scansearch.searchers.zero_cost import PROXIES


def register(sub) -> None:
    p = sub.add_parser("search", help="search per-layer scan directions (DARTS, or an Optuna study)",
                       description="Search a space's per-layer scan directions and write the genotype: a DARTS "
                                   "supernet (default) or an Optuna study of genotypes.")
    p.add_argument("--space", help="search space: a shipped name (see `scansearch spaces`) or a YAML file "
                                   "(default local8)")
    p.add_argument("--model", help="model preset the supernet is built from (default local_vim_micro)")
    p.add_argument("--data", help="digits | planted[:key=value,...] | PATH to an ImageFolder or CUB folder "
                                  "(default digits)")
    p.add_argument("--searcher", choices=SEARCHERS,
                   help="darts (default): a supernet trained with DARTS, selection by effect; tpe, random, nsga2, "
                        "bruteforce, gp: an Optuna study whose trials are genotypes; zero-cost: random genotypes "
                        "ranked by a zero-cost proxy (--proxy), no training; nni-darts, nni-gumbel, "
                        "nni-proxyless, nni-random: NNI's one-shot strategies (the nni extra)")
    p.add_argument("--epochs", type=int, help=f"supernet training epochs (default {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, help="batch size (default 64)")
    p.add_argument("--lr", type=float, help="weight learning rate (default 1e-2)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay of the weights (default 0.01)")
    p.add_argument("--seed", type=int, help="seed of the data split, initialisation and sampling (default 0)")
    p.add_argument("--img-size", type=int, help="image size (default: the data's own, or the preset's for folders)")
    p.add_argument("--mode", choices=MODES, help="bilevel (alphas on val, default) or "
                                                                  "LocalMamba's single-level joint training")
    p.add_argument("--order", type=int, choices=(1, 2), help="bilevel gradient: 1 first order (default), "
                                                            "2 unrolled second order")
    p.add_argument("--arch-lr", type=float, help="Adam learning rate of the alphas (default 3e-2)")
    p.add_argument("--beta-decay", type=float, help="beta-DARTS regularisation weight against collapse "
                                                    "(default 0: off; 0.5-5 typical)")
    p.add_argument("--warmup-epochs", type=int, help="epochs of weight training before the alphas move (default 1)")
    p.add_argument("--gumbel-k", type=int, help="sample this many candidates per layer and step "
                                                "(Gumbel top-k; saves memory and time)")
    p.add_argument("--k", type=int, help="directions kept per layer (default: the space's k)")
    p.add_argument("--select", choices=SELECTIONS,
                   help="how each layer's directions are chosen: perturb (default; mask each candidate and keep "
                        "those whose removal raises the held-out loss most, layer by layer, DARTS-PT) or alpha "
                        "(top-k of softmax(alpha))")
    p.add_argument("--alphas", choices=ALPHAS,
                   help="learned (default) or uniform: alphas frozen at zero, selection by effect alone")
    p.add_argument("--finetune-steps", type=int,
                   help="weight steps between layers in perturb selection (default 10)")
    p.add_argument("--verify-epochs", type=int,
                   help="closing check of the found genotype against cross and LocalMamba's baseline: 0 (default) "
                        "fine-tunes each from the supernet's weights before selection (--verify-steps); N trains "
                        "each from scratch for N epochs")
    p.add_argument("--verify-steps", type=int,
                   help="closing check: fine-tune steps of each genotype from the supernet before selection "
                        "(default 20)")
    p.add_argument("--verify-seeds", type=int,
                   help="closing check: fine-tune (or training) seeds per genotype, at least 2 (default 2)")
    p.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                   help="run the search once per seed (into RUN/seed-S), report per layer how many agree and "
                        "write one genotype by majority")
    o = p.add_argument_group("Optuna searchers (tpe, random, nsga2, bruteforce, gp, zero-cost)")
    o.add_argument("--trials", type=int, help="trials the study reaches in total, resumed ones included (default 60)")
    o.add_argument("--evaluator", choices=EVALUATORS,
                   help="oneshot (default): score each genotype with a supernet's shared weights, seconds a trial; "
                        "train: train its model for --train-epochs epochs; zero-cost: a proxy of the untrained model")
    o.add_argument("--proxy", choices=PROXIES,
                   help="the zero-cost proxy that ranks (default zico)")
    o.add_argument("--supernet", metavar="RUN", help="score with the supernet of this DARTS run, or of a one-shot "
                                                     "search that trained one, instead of training one (its data "
                                                     "and model settings apply)")
    o.add_argument("--objectives", metavar="M,M",
                   help="what the study optimises: loss (default) or top1, then any of flops, params, latency_ms, "
                        "ssm_layers for a Pareto front (e.g. loss,latency_ms)")
    o.add_argument("--storage", metavar="URL", help="an Optuna storage URL or a .journal file (default: "
                                                     "RUN/study.journal)")
    o.add_argument("--study", help="the study's name in the storage (default scansearch)")
    o.add_argument("--workers", type=int, help="processes that run trials of the one study (default 1)")
    o.add_argument("--join", action="store_true",
                   help="run trials of the study --study in the database --storage, created by a search on another "
                        "machine, with that search's settings (only --workers, --supernet, --out and --device "
                        "may be given)")
    o.add_argument("--heartbeat", type=float, metavar="SECONDS",
                   help="with a database --storage: workers beat every SECONDS; a trial silent for three beats is "
                        "failed and its genotype run again (default 30)")
    o.add_argument("--pruner", choices=PRUNERS,
                   help="stop bad trials between training epochs (--evaluator train; default none)")
    o.add_argument("--train-epochs", type=int, help="epochs each trial trains with --evaluator train (default 2)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a model config field of the supernet, e.g. --set dim=16 (repeatable)")
    p.add_argument("--out", help="run folder (default runs/search-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is repeated in {text!r}")
    return seeds


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings the command line gave, by their flat names."""
    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) not in (None, [])}


def run(args) -> int:
    run_dir = Path(args.out) if args.out else None
    settings = settings_from_options(given_options(args), resume=args.resume, join=args.join, run_dir=run_dir)
    outcome = run_search(settings, run_dir, resume=args.resume, log_to=set_crash_log,
                         ctx=RunContext(device=args.device, quiet=args.quiet, console=console))
    if distributed.env_rank() == 0:
        console.print(f"next: scansearch train {outcome.to_train} --data {settings.data} "
                      f"--out {outcome.folder.path / 'model'}", highlight=False, soft_wrap=True)  # one line to copy
    return 0
