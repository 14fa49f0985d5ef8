"""`scansearch search`: a search over a space's scan directions into a run folder.

``--searcher darts`` (default) trains a DARTS supernet and selects by effect;
``tpe``, ``random``, ``nsga2``, ``bruteforce``, ``gp`` and ``zero-cost`` run an Optuna
study of genotypes (:mod:`.search_optuna`); ``nni-darts``, ``nni-gumbel``,
``nni-proxyless`` and ``nni-random`` run NNI's one-shot strategies (:mod:`.search_nni`).

Everything is checked (space, model, data, options) before the run folder is created,
so a mistake leaves nothing behind. ``--resume`` continues a run from its checkpoint
with the settings stored in its ``config.yaml``.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from .common import CLIError, check_model_options, console, parse_overrides, set_crash_log

SEARCHERS = ("darts", "tpe", "random", "nsga2", "bruteforce", "gp", "zero-cost", "nni-darts", "nni-gumbel",
             "nni-proxyless", "nni-random")
RUN_FORMAT = 1
# Defaults that fit a micro supernet on a 2-core CPU within minutes.
DEFAULTS: dict[str, Any] = {
    "space": "local8", "model": "local_vim_micro", "data": "digits", "searcher": "darts",
    "epochs": 5, "batch_size": 64, "lr": 1e-2, "weight_decay": 0.01, "seed": 0, "img_size": None,
    "mode": "bilevel", "order": 1, "arch_lr": 3e-2, "beta_decay": 0.0, "warmup_epochs": 1,
    "gumbel_k": None, "k": None, "set": [], "select": "perturb", "alphas": "learned", "finetune_steps": 10,
    "verify_epochs": 0, "seeds": None,
    # Optuna searchers
    "trials": 60, "evaluator": "oneshot", "supernet": None, "objectives": "loss", "storage": None,
    "study": "scansearch", "workers": 1, "pruner": None, "train_epochs": 2, "proxy": "zico", "heartbeat": 30.0,
}
SETTINGS = tuple(DEFAULTS)
# an example value of each setting whose default is None, for checking a stored config's kinds
NONE_DEFAULT_KINDS = {"img_size": 1, "gumbel_k": 1, "k": 1, "seeds": [], "supernet": "", "storage": "", "pruner": ""}
OPTUNA_ONLY = ("trials", "evaluator", "supernet", "objectives", "storage", "study", "workers", "pruner",
               "train_epochs", "proxy", "heartbeat")
RESUMABLE = ("trials", "workers", "heartbeat")  # a resumed study may run to another total, with other workers
JOINABLE = ("storage", "study", "workers", "supernet")  # what --join takes; the study's settings give the rest


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
    p.add_argument("--mode", choices=("bilevel", "single"), help="bilevel (alphas on val, default) or "
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
    p.add_argument("--select", choices=("perturb", "alpha"),
                   help="how each layer's directions are chosen: perturb (default; mask each candidate and keep "
                        "those whose removal raises the held-out loss most, layer by layer, DARTS-PT) or alpha "
                        "(top-k of softmax(alpha))")
    p.add_argument("--alphas", choices=("learned", "uniform"),
                   help="learned (default) or uniform: alphas frozen at zero, selection by effect alone")
    p.add_argument("--finetune-steps", type=int,
                   help="weight steps between layers in perturb selection (default 10)")
    p.add_argument("--verify-epochs", type=int,
                   help="closing check of the found genotype against cross and LocalMamba's baseline: 0 (default) "
                        "scores each with the supernet's weights; N trains each from scratch for N epochs")
    p.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                   help="run the search once per seed (into RUN/seed-S), report per layer how many agree and "
                        "write one genotype by majority")
    o = p.add_argument_group("Optuna searchers (tpe, random, nsga2, bruteforce, gp, zero-cost)")
    o.add_argument("--trials", type=int, help="trials the study reaches in total, resumed ones included (default 60)")
    o.add_argument("--evaluator", choices=("oneshot", "train", "zero-cost"),
                   help="oneshot (default): score each genotype with a supernet's shared weights, seconds a trial; "
                        "train: train its model for --train-epochs epochs; zero-cost: a proxy of the untrained model")
    o.add_argument("--proxy", choices=("locality", "grad_norm", "zico", "synflow", "params", "flops"),
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
    o.add_argument("--pruner", choices=("none", "median", "hyperband"),
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


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) not in (None, [])}


def _settings(args: argparse.Namespace, run_dir: Path | None) -> dict[str, Any]:
    """The run's settings: the stored ones on --resume (nothing else may be given), else defaults + options."""
    from ..searchers.run import RunFolder

    given = _given(args)
    if getattr(args, "join", False):
        return _join_settings(args, given)
    if not args.resume:
        if "seed" in given and "seeds" in given:
            raise CLIError("--seed and --seeds do not mix: give every seed to run to --seeds")
        settings = {**DEFAULTS, **given}
        ignored = [k for k in OPTUNA_ONLY if k in given]
        if settings["searcher"] == "darts" and ignored:  # refused, not ignored
            raise CLIError(f"--{ignored[0].replace('_', '-')} applies to the Optuna searchers (--searcher tpe, "
                           f"random, nsga2, ...), not to the DARTS search")
        if "heartbeat" in given and "://" not in str(given.get("storage", "")):
            raise CLIError("--heartbeat applies to a database --storage (postgresql://..., sqlite:///...), whose "
                           "workers send heartbeats; a journal file has none")
        if "warmup_epochs" not in given:  # the default warm-up never takes a whole short run
            settings["warmup_epochs"] = min(DEFAULTS["warmup_epochs"], max(0, settings["epochs"] - 1))
        return settings
    if run_dir is None:
        raise CLIError("--resume needs --out RUN_DIR, the run to continue")
    config = RunFolder.open(run_dir).read_config()
    stored = config.get("settings")
    if config.get("scansearch_run") != RUN_FORMAT or not isinstance(stored, dict):
        raise CLIError(f"{run_dir / RunFolder.CONFIG}: not a scansearch search run")
    for key, value in stored.items():
        default = DEFAULTS.get(key) if DEFAULTS.get(key) is not None else NONE_DEFAULT_KINDS.get(key)
        if default is not None and value is not None and not _same_kind(value, default):
            raise CLIError(f"{run_dir / RunFolder.CONFIG}: setting {key!r} has a bad value {value!r}")
    changed = [k for k, v in given.items() if stored.get(k) != v and k not in RESUMABLE]
    if changed:
        k = changed[0]
        raise CLIError(f"--{k.replace('_', '-')}: {run_dir} was started with {stored.get(k)!r}; "
                       f"--resume keeps the stored settings (drop the option)")
    _check_stored_storage(stored.get("storage"), given.get("storage"), run_dir)
    return {**DEFAULTS, **stored, **{k: v for k, v in given.items() if k in RESUMABLE}}


def _join_settings(args: argparse.Namespace, given: dict[str, Any]) -> dict[str, Any]:
    """``--join``: the settings of the study being joined (stored in it by the search that
    created it), with this machine's --workers and --supernet."""
    from ..searchers.study import StudyError, open_storage, stored_settings

    if args.resume:
        raise CLIError("--join starts a run folder of its own for a study's trials; --resume continues a run folder")
    storage = given.get("storage")
    if storage is None or "://" not in storage and not storage.endswith((".journal", ".log")):
        raise CLIError("--join needs --storage: the database (postgresql://...) or shared .journal file of the study")
    if storage.startswith("sqlite"):
        from .search_optuna import SQLITE_ONE_PROCESS

        raise CLIError(SQLITE_ONE_PROCESS)
    extra = [k for k in given if k not in JOINABLE]
    if extra:
        raise CLIError(f"--{extra[0].replace('_', '-')}: a joined study runs with the settings it was created with; "
                       f"drop the option (--join takes only --workers, --supernet, --out and --device)")
    study = given.get("study", DEFAULTS["study"])
    if "://" not in storage and not Path(storage).is_file():  # opening it would create an empty one
        raise CLIError(f"--join: --storage {storage} does not exist")
    try:
        stored = stored_settings(open_storage(storage, Path("."), heartbeat=None), study)
    except StudyError as err:
        raise CLIError(f"--join: {err}") from None
    for key, value in stored.items():
        default = DEFAULTS.get(key) if DEFAULTS.get(key) is not None else NONE_DEFAULT_KINDS.get(key)
        if key not in DEFAULTS or default is not None and value is not None and not _same_kind(value, default):
            raise CLIError(f"--join: study {study!r} holds a bad setting {key!r}: {value!r}")
    if stored.get("searcher") not in SEARCHERS or stored.get("searcher") == "darts" or stored.get("seeds"):
        raise CLIError(f"--join: study {study!r} holds settings no Optuna search runs with")
    return {**DEFAULTS, **stored, "storage": storage, "study": study, "workers": given.get("workers", 1),
            **({"supernet": given["supernet"]} if "supernet" in given else {}), "join": True}


def _same_kind(value, default) -> bool:
    """A stored setting of the kind its default has (an int where a float is expected is fine)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_stored_storage(stored, given, run_dir: Path) -> None:
    """A resumed run writes its study where its config says; a journal file outside the run
    folder is used only when the command line names it again (a config is a file anyone
    may have edited: it must not steer writes out of the folder on its own)."""
    if not isinstance(stored, str) or "://" in stored or given == stored:
        return
    if not Path(stored).resolve().is_relative_to(run_dir.resolve()):
        raise CLIError(f"{run_dir / 'config.yaml'}: the study journal {stored} lies outside the run folder; "
                       f"pass --storage {stored} to resume with it")


def _check(settings: dict[str, Any]) -> None:
    for name in ("epochs", "batch_size"):
        if settings[name] < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {settings[name]}")
    for name in ("lr", "arch_lr"):
        if not 0 < settings[name] < math.inf:
            raise CLIError(f"--{name.replace('_', '-')} must be positive and finite, got {settings[name]}")
    for name in ("weight_decay", "beta_decay"):
        if not 0 <= settings[name] < math.inf:
            raise CLIError(f"--{name.replace('_', '-')} must be zero or more and finite, got {settings[name]}")
    if settings["img_size"] is not None and settings["img_size"] < 1:
        raise CLIError(f"--img-size must be at least 1, got {settings['img_size']}")
    if settings["verify_epochs"] < 0:
        raise CLIError(f"--verify-epochs must not be negative, got {settings['verify_epochs']}")
    if settings["warmup_epochs"] < 0 or settings["warmup_epochs"] >= settings["epochs"]:
        raise CLIError(f"--warmup-epochs must be in [0, epochs={settings['epochs']}), got {settings['warmup_epochs']}")


def prepare(settings: dict[str, Any], device: str):
    """Space, data, supernet and configs from the settings; raises a user error for anything wrong."""
    from ..data import load_data
    from ..models import get_preset
    from ..searchers.darts import DartsConfig, kept_space
    from ..searchers.supernet import Supernet
    from ..spaces import load_space
    from ..train import TrainConfig

    import torch

    _check(settings)
    space = load_space(settings["space"])
    preset = get_preset(settings["model"])
    overrides = parse_overrides(settings["set"])
    check_model_options(preset.name, settings["img_size"], overrides)
    kept_space(space, settings["k"])
    builtin = str(settings["data"]).partition(":")[0] in ("digits", "planted")
    img_size = settings["img_size"]
    if img_size is None and not builtin:
        size = preset.config.get("img_size", 224)
        img_size = size if isinstance(size, int) else size[0]
    data = load_data(settings["data"], img_size=img_size, batch_size=settings["batch_size"], seed=settings["seed"])
    torch.manual_seed(settings["seed"])
    supernet = Supernet(preset.name, space, num_classes=data.num_classes, img_size=data.img_size,
                        in_chans=data.in_chans, gumbel_k=settings["gumbel_k"], **overrides)
    train_config = TrainConfig(epochs=settings["epochs"], lr=settings["lr"], weight_decay=settings["weight_decay"],
                               warmup_epochs=0.5, seed=settings["seed"], device=device)
    train_config.validate()
    darts_config = DartsConfig(mode=settings["mode"], order=settings["order"], arch_lr=settings["arch_lr"],
                               beta_decay=settings["beta_decay"], warmup_epochs=settings["warmup_epochs"],
                               gumbel_k=settings["gumbel_k"], k=settings["k"], select=settings["select"],
                               alphas=settings["alphas"], finetune_steps=settings["finetune_steps"],
                               verify_epochs=settings["verify_epochs"])
    darts_config.validate(settings["epochs"])
    return space, data, supernet, train_config, darts_config


def _write_reference(folder, found, name: str) -> Path:
    """A fixed genotype (cross, LocalMamba's baseline) for the model searched: same preset,
    grid and recorded model settings, so that training it compares like with like."""
    from ..searchers.verify import REFERENCES, as_genotype

    path = folder.file(f"{name}.yaml")
    as_genotype(found, (REFERENCES[name],) * len(found.layers), name).save(path)
    return path


def _search_one(settings: dict[str, Any], run_dir: Path | None, resume: bool, args):
    """One search into one run folder (checked before the folder is made); prints its tables
    and returns (genotype, run folder, per-layer selection scores or None, the genotype to train)."""
    if settings["searcher"].startswith("nni-"):
        from .search_nni import search_one

        return search_one(settings, run_dir, resume, args)
    if settings["searcher"] != "darts":
        from .search_optuna import search_one

        if _distributed():
            return _search_optuna_distributed(settings, run_dir, resume, args)
        return search_one(settings, run_dir, resume, args)
    from .. import distributed
    from ..searchers.darts import search
    from ..searchers.report import plot_heatmap, selection_table, verify_table, weights_table
    from ..searchers.run import RunFolder

    space, data, supernet, train_config, darts_config = prepare(settings, args.device)
    if distributed.is_distributed():  # every batch must split over the ranks (checked before the folder)
        distributed.check_shardable(data.train, "training")
        if darts_config.mode == "bilevel" and darts_config.alphas == "learned":
            distributed.check_shardable(data.val, "validation")
    if resume:
        folder = RunFolder.open(run_dir)
        _check_checkpoint(folder.file(RunFolder.CHECKPOINT))  # before anything is written
        if not folder.file(RunFolder.CHECKPOINT).exists():  # it died in its first epoch
            resume = False
    else:
        def create() -> RunFolder:
            made = RunFolder.create(run_dir or RunFolder.default_path())
            made.write_config({"scansearch_run": RUN_FORMAT, "searcher": settings["searcher"],
                               "settings": settings, "data": data.describe(),
                               "train": train_config.to_dict(), "darts": darts_config.to_dict()})
            return made

        folder = distributed.on_main(create)  # rank 0 creates it; its folder (or its error) reaches every rank
    if distributed.is_main():
        set_crash_log(folder.file(RunFolder.LOG))
        folder.log(("resumed" if resume else "started") + f": {settings['searcher']} on {space.name}, "
                   f"{settings['model']}, data {settings['data']}")
    if not args.quiet:
        console.print(f"searching [bold]{space.name}[/] ({len(space.candidates)} candidates, keep "
                      f"{settings['k'] or space.k}) on {settings['model']} with {settings['data']}, seed "
                      f"{settings['seed']}: {supernet.num_layers} layers, {settings['epochs']} epochs -> {folder.path}",
                      highlight=False)
    provenance = {"data": str(settings["data"])}
    started = time.perf_counter()
    result = search(supernet, data, train_config, darts_config, folder, resume=resume,
                    progress=not args.quiet, provenance=provenance)
    seconds = time.perf_counter() - started
    if not distributed.is_main():  # rank 0 writes and reports what every rank found
        return result.genotype, folder, None, folder.file(RunFolder.GENOTYPE)
    title = f"{space.name}: softmax(alpha) per layer, kept directions in bold green"
    heatmap = plot_heatmap(result.weights, supernet.candidates, folder.file(RunFolder.HEATMAP),
                           title=f"{space.name} on {settings['data']}")
    folder.write_summary({"genotype": result.genotype.to_dict(), "val_top1": result.train.val["top1"],
                          "best_val_top1": result.train.best_val_top1, "seconds": round(seconds, 1),
                          "heatmap": heatmap.name if heatmap else None})
    folder.log(f"finished: val top-1 {result.train.val['top1']:.4f}, genotype written")
    console.print(weights_table(result.weights, supernet.candidates, result.genotype, title))
    selections, verify = result.extra["selections"], result.extra["verify"]
    if selections:
        console.print(selection_table(selections, f"{space.name}: selection by effect per layer"))
    n = settings["verify_epochs"]
    how = (f"each trained {n} epoch{'s' if n != 1 else ''} from scratch" if n
           else "same supernet weights")
    console.print(verify_table(verify, f"the found genotype against fixed ones ({how}, "
                                       "held-out batches the selection did not read)"))
    console.print(f"supernet val top-1 {result.train.val['top1']:.1%}; genotype: {folder.file(RunFolder.GENOTYPE)}"
                  + (f"; heat-map: {heatmap}" if heatmap else " (heat-map needs the plot extra)"), highlight=False)
    to_train = folder.file(RunFolder.GENOTYPE)
    best = min(verify, key=lambda name: verify[name]["loss"])
    if best != "found":
        to_train = _write_reference(folder, result.genotype, best)
        console.print(f"the found genotype does not beat {best} on held-out data here: {to_train} holds {best}; "
                      f"train it (or both) before trusting the search", highlight=False)
    scores = [{name: score.loss for name, score in sel.scores.items()} for sel in selections]
    return result.genotype, folder, scores, to_train


def _check_checkpoint(path: Path) -> None:
    """The checkpoint a resumed search starts from must be whole and ours (TrainError otherwise);
    without one (the search died in its first epoch) it starts again from the first epoch."""
    from ..errors import TrainError
    from ..train import CHECKPOINT_FORMAT
    from ..training_state import load_checkpoint

    if not path.exists():
        return
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a scansearch training checkpoint")


def _search_seeds(settings: dict[str, Any], run_dir: Path | None, resume: bool, args) -> Path:
    """One search per seed into RUN/seed-S (a finished one is reused on --resume), then the
    per-layer agreement table and the majority genotype in RUN/genotype.yaml."""
    from ..searchers.report import votes_table
    from ..searchers.run import RunFolder
    from ..searchers.seeds import majority

    seeds = settings["seeds"]
    if resume:
        folder = RunFolder.open(run_dir)
    else:
        if settings["searcher"].startswith("nni-"):
            from .search_nni import precheck

            settings = precheck(settings, args)
        elif settings["searcher"] != "darts":
            from .search_optuna import precheck

            settings = precheck(settings, args)
        _, data, _, _, _ = prepare({**settings, "seed": seeds[0], "seeds": None}, args.device)  # every check first
        if settings["evaluator"] == "zero-cost":
            from .search_optuna import proxy_batches

            proxy_batches(data)
        folder = RunFolder.create(run_dir or RunFolder.default_path())
        folder.write_config({"scansearch_run": RUN_FORMAT, "searcher": settings["searcher"], "settings": settings})
    set_crash_log(folder.file(RunFolder.LOG))
    genotypes, scores = [], []
    for seed in seeds:
        sub = folder.path / f"seed-{seed}"
        one = {**settings, "seed": seed, "seeds": None}
        if settings["searcher"] != "darts" and settings["storage"] is not None:
            one["study"] = f"{settings['study']}-seed-{seed}"  # one study per seed in a shared storage
        if (sub / RunFolder.SUMMARY).exists():
            opened = RunFolder.open(sub)
            genotypes.append(opened.read_genotype())
            selection = opened.read_json(RunFolder.SELECTION) if opened.file(RunFolder.SELECTION).exists() else {}
            scores.append([{name: s["loss"] for name, s in layer["scores"].items()}
                           for layer in selection.get("layers", [])] or None)
            folder.log(f"seed {seed}: finished before, reused")
            continue
        genotype, _, seed_scores, _ = _search_one(one, sub, resume and (sub / RunFolder.CONFIG).exists(), args)
        set_crash_log(folder.file(RunFolder.LOG))
        genotypes.append(genotype)
        scores.append(seed_scores)
        folder.log(f"seed {seed}: finished")
    k = genotypes[0].provenance.get("k") or genotypes[0].load_space().k
    combined, votes = majority(genotypes, seeds, k, scores if all(scores) else None)
    folder.write_genotype(combined)
    folder.write_json("seeds.json", {"seeds": seeds, "layers": [v.to_dict() for v in votes]})
    folder.write_summary({"genotype": combined.to_dict(), "seeds": seeds, "agree": [v.agree for v in votes]})
    folder.log("finished: majority genotype written")
    console.print(votes_table(votes, f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): per layer, the majority's "
                                     f"directions and how many seeds kept exactly them"))
    return folder.file(RunFolder.GENOTYPE), folder


def _distributed() -> bool:
    from .. import distributed

    return distributed.is_distributed()


def _start_distributed(settings: dict[str, Any], args) -> None:
    """Under torchrun: refuse what cannot run across processes (exit 2 on every rank, before
    any process waits for another), then join the process group; only rank 0 prints."""
    from .. import distributed

    world = distributed.env_world_size()
    searcher = settings["searcher"]
    if searcher.startswith("nni-") or searcher != "darts" and settings["evaluator"] != "train":
        what = searcher if searcher.startswith("nni-") or searcher == "zero-cost" \
            else f"{searcher} with --evaluator {settings['evaluator']}"
        raise CLIError(f"--searcher {what} does not run across processes; under torchrun use the DARTS search or "
                       f"--evaluator train, or launch without torchrun")
    if settings["seeds"]:
        raise CLIError("--seeds does not run under torchrun; launch one torchrun search per --seed")
    if searcher != "darts" and settings["workers"] > 1:
        raise CLIError("--workers: under torchrun the processes train each trial together; drop --workers")
    distributed.check_global_batch(settings["batch_size"], world)
    args.device = distributed.device_spec(args.device)
    distributed.init(args.device)
    if not distributed.is_main():
        console.quiet = True


def _search_optuna_distributed(settings: dict[str, Any], run_dir: Path | None, resume: bool, args):
    """An Optuna search with the train evaluator under torchrun: rank 0 runs the study and
    writes the run folder; the other ranks build the same evaluator and train each trial's
    model with it (see ``searchers.evaluators.lead_trials``)."""
    from ..searchers.evaluators import follow_trials, lead_trials
    from .. import distributed
    from .search_optuna import build, resolve, search_one

    if distributed.is_main():
        return lead_trials(lambda: search_one(settings, run_dir, resume, args))
    _, evaluator, _, _ = build(resolve(settings), Path("."), args.device, train_supernet=False, resume=False,
                               progress=False)
    follow_trials(evaluator)
    return None, None, None, None


def run(args) -> int:
    run_dir = Path(args.out) if args.out else None
    settings = _settings(args, run_dir)
    from .. import distributed

    if distributed.requested():
        _start_distributed(settings, args)
    try:
        if settings["seeds"]:
            to_train, folder = _search_seeds(settings, run_dir, args.resume, args)
        else:
            _, folder, _, to_train = _search_one(settings, run_dir, args.resume, args)
    except BaseException:
        distributed.cleanup(wait=False)  # the others do not wait for this rank at a barrier
        raise
    distributed.cleanup()
    if distributed.env_rank() == 0:
        console.print(f"next: scansearch train {to_train} --data {settings['data']} "
                      f"--out {folder.path / 'model'}", highlight=False, soft_wrap=True)  # a command to copy: one line
    return 0
