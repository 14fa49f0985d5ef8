"""`scansearch search --searcher tpe|random|nsga2|bruteforce|gp`: discrete search on an Optuna study.

The run folder holds the study (``study.journal``, unless ``--storage`` names another),
the supernet the one-shot evaluator scores with (``supernet/``, unless ``--supernet RUN``
reuses a DARTS run's), the best genotype (``genotype.yaml``), one genotype per Pareto
member when there are several objectives (``pareto/``), every trial (``trials.json``) and
a summary. ``--workers N`` runs N processes on the one study; ``--resume`` continues it.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
from pathlib import Path
from typing import Any

from .common import CLIError, console, set_crash_log

OPTUNA_SEARCHERS = ("tpe", "random", "nsga2", "bruteforce", "gp", "zero-cost")
EVALUATORS = ("oneshot", "train", "zero-cost")
SUPERNET_DIR = "supernet"
SQLITE_ONE_PROCESS = ("--storage sqlite: SQLite has no row locks, so two processes could take the same trial; for "
                      "--workers above 1 or --join use PostgreSQL, or a .journal file on one machine")
# what a reused supernet fixes: the search must read the data and model it was trained on
SUPERNET_SETTINGS = ("space", "model", "data", "img_size", "set", "k", "batch_size", "seed")


def _objectives(settings: dict[str, Any]) -> tuple[str, ...]:
    from ..searchers.study import StudyError, check_objectives

    try:
        return check_objectives(str(settings["objectives"]).split(","))
    except StudyError as err:
        raise CLIError(f"--objectives: {err}") from None


def resolve(settings: dict[str, Any]) -> dict[str, Any]:
    """``--searcher zero-cost`` is random sampling ranked by a zero-cost proxy."""
    if settings["searcher"] != "zero-cost":
        return settings
    if settings["evaluator"] not in ("oneshot", "zero-cost"):  # oneshot: the default, not a choice
        raise CLIError("--searcher zero-cost ranks by a zero-cost proxy; drop --evaluator")
    return {**settings, "evaluator": "zero-cost"}


def check(settings: dict[str, Any]) -> None:
    """The Optuna settings, checked before anything is written."""
    if settings["trials"] < 1:
        raise CLIError(f"--trials must be at least 1, got {settings['trials']}")
    if settings["workers"] < 1:
        raise CLIError(f"--workers must be at least 1, got {settings['workers']}")
    if settings["evaluator"] not in EVALUATORS:
        raise CLIError(f"--evaluator must be one of {', '.join(EVALUATORS)}, got {settings['evaluator']!r}")
    if settings["train_epochs"] < 1:
        raise CLIError(f"--train-epochs must be at least 1, got {settings['train_epochs']}")
    if not 1 <= settings["heartbeat"] <= 3600:
        raise CLIError(f"--heartbeat must be between 1 and 3600 seconds, got {settings['heartbeat']}")
    from ..searchers.zero_cost import PROXIES

    if settings["proxy"] not in PROXIES:
        raise CLIError(f"--proxy must be one of {', '.join(PROXIES)}, got {settings['proxy']!r}")
    if settings["supernet"] is not None and settings["evaluator"] != "oneshot":
        raise CLIError("--supernet is what the oneshot evaluator scores with; drop it or use --evaluator oneshot")
    objectives = _objectives(settings)
    from ..searchers.study import StudyError, make_pruner, make_sampler

    try:
        make_sampler(_sampler(settings), settings["seed"], objectives, settings["trials"])
        make_pruner(settings["pruner"])
    except StudyError as err:
        raise CLIError(str(err)) from None
    if settings["pruner"] not in (None, "none"):
        if settings["evaluator"] != "train":
            raise CLIError("--pruner stops trials between training epochs: it needs --evaluator train")
        if len(objectives) > 1:
            raise CLIError("--pruner: Optuna prunes single-objective studies only; drop it or the cost objectives")
    if settings["evaluator"] == "zero-cost" and objectives[0] != "loss":
        raise CLIError(f"--objectives: the zero-cost evaluator ranks by its proxy (loss = minus the proxy); "
                       f"{objectives[0]!r} is not measured without training")
    storage = settings["storage"]
    if storage is not None:
        if storage.endswith((".journal", ".log")):
            if not Path(storage).resolve().parent.is_dir():
                raise CLIError(f"--storage {storage}: its folder does not exist")
        elif "://" not in storage:
            raise CLIError(f"--storage {storage}: expected a database URL (postgresql://..., sqlite:///...) or a "
                           f".journal file")
        if storage.startswith("sqlite") and (settings["workers"] > 1 or settings.get("join")):
            raise CLIError(SQLITE_ONE_PROCESS)


def supernet_settings(settings: dict[str, Any], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """With ``--supernet RUN``: the data and model settings of that DARTS run (an option in
    ``given`` that differs is an error); else the settings as they are."""
    from ..searchers.run import RunError, RunFolder
    from .search import RUN_FORMAT

    if settings["supernet"] is None:
        return settings
    try:
        config = RunFolder.open(settings["supernet"]).read_config()
    except RunError as err:
        raise CLIError(f"--supernet: {err}") from None
    stored = config.get("settings")
    oneshot = config.get("searcher") in OPTUNA_SEARCHERS and isinstance(stored, dict) \
        and stored.get("evaluator") == "oneshot" and stored.get("supernet") is None
    if config.get("scansearch_run") != RUN_FORMAT or not isinstance(stored, dict) \
            or not (config.get("searcher") == "darts" or oneshot):
        raise CLIError(f"--supernet {settings['supernet']}: neither a scansearch DARTS run folder nor a one-shot "
                       f"search that trained its own supernet")
    if not (supernet_dir(settings["supernet"]) / "checkpoint.pt").is_file():
        raise CLIError(f"--supernet {settings['supernet']}: holds no checkpoint.pt (the run has not trained an epoch)")
    for key, value in (given or {}).items():
        if key in SUPERNET_SETTINGS and stored.get(key) != value:
            raise CLIError(f"--{key.replace('_', '-')}: the supernet of {settings['supernet']} was trained with "
                           f"{stored.get(key)!r}; drop the option (the run's settings apply)")
    return {**settings, **{k: stored.get(k) for k in SUPERNET_SETTINGS}}


def supernet_dir(run: str | Path) -> Path:
    """Where a run keeps the supernet weights: a DARTS run in its own folder, a one-shot
    Optuna search in RUN/supernet."""
    run = Path(run)
    return run / SUPERNET_DIR if (run / SUPERNET_DIR).is_dir() else run


def _template(supernet, space):
    """The genotype every trial's layers go into: the model searched, its grid and settings,
    the space with the k kept."""
    from ..genotype import Genotype
    from ..searchers.darts import model_record

    layers = (space.patterns[:space.k],) * supernet.num_layers
    return Genotype(layers=layers, model=supernet.preset, space=space.ref, grid=tuple(supernet.token_grid),
                    provenance=model_record(supernet))


def proxy_batches(data) -> list:
    """The two training batches a zero-cost proxy reads (one batch's two halves when the
    training data fits one batch); a user error with fewer than two training images."""
    batches = [batch for _, batch in zip(range(2), data.train)]
    if len(batches) == 1 and len(batches[0][1]) >= 2:
        images, labels = batches[0]
        half = len(labels) // 2
        batches = [(images[:half], labels[:half]), (images[half:], labels[half:])]
    if len(batches) < 2:
        raise CLIError("--evaluator zero-cost needs at least two training images")
    return batches


def build(settings: dict[str, Any], folder_path: Path, device: str, *, train_supernet: bool, resume: bool,
          progress: bool):
    """(encoding, evaluator, costs, template) for the settings.
    The one-shot supernet is trained into RUN/supernet (``train_supernet``) or loaded from it,
    or from ``--supernet RUN``."""
    from ..searchers.darts import held_out_halves, kept_space
    from ..searchers.encoding import GenotypeEncoding
    from ..searchers.evaluators import Costs, OneShot, Trained
    from ..searchers.oneshot import load_supernet_weights, train_uniform
    from ..searchers.zero_cost import ZeroCost
    from ..train import resolve_device
    from .search import prepare

    space, data, supernet, train_config, darts_config = prepare({**settings, "mode": "bilevel", "alphas": "uniform",
                                                                 "select": "perturb"}, device)
    space = kept_space(space, settings["k"])
    template = _template(supernet, space)
    encoding = GenotypeEncoding(space, supernet.num_layers)
    if settings["evaluator"] == "oneshot":
        source = supernet_dir(settings["supernet"]) if settings["supernet"] else folder_path / SUPERNET_DIR
        if train_supernet:
            train_uniform(supernet, data, train_config, darts_config, source, resume=resume, progress=progress)
        else:
            load_supernet_weights(supernet, source / "checkpoint.pt")
        select_half, _ = held_out_halves(data.val, next(supernet.parameters()).device, None)
        evaluator = OneShot(supernet, select_half)
    elif settings["evaluator"] == "zero-cost":
        evaluator = ZeroCost(template, data, proxy_batches(data), proxy=settings["proxy"], seed=settings["seed"])
    else:
        evaluator = Trained(template, data, train_config, settings["train_epochs"])
    costs = Costs(template, num_classes=data.num_classes, img_size=data.img_size, in_chans=data.in_chans,
                  device=str(resolve_device(train_config.device)))
    return encoding, evaluator, costs, template


def _sampler(settings: dict[str, Any]) -> str:
    return "random" if settings["searcher"] == "zero-cost" else settings["searcher"]


def _seed(settings: dict[str, Any], worker: int, existing: int) -> int | None:
    """A sampler seed of its own for each worker and each resumption (a seeded sampler that
    starts again from its first draw would propose the genotypes it proposed before). A machine
    that joined a study draws from fresh entropy: machines started alike would otherwise
    propose alike."""
    if settings["seed"] is None or settings.get("join"):
        return None
    return settings["seed"] + 1000 * worker + existing


def _worker(settings: dict[str, Any], folder_path: str, index: int, device: str, existing: int) -> None:
    """One extra worker process: the same study, its own sampler seed; a failure goes to the log."""
    import sys
    import traceback

    import optuna

    from ..searchers.run import RunFolder
    from ..searchers.study import Objective, create_study, make_pruner, make_sampler, open_storage, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(folder_path)
    try:
        objectives = _objectives(settings)
        encoding, evaluator, costs, _ = build(settings, path, device, train_supernet=False, resume=False,
                                               progress=False)
        study = create_study(open_storage(settings["storage"], path, settings["heartbeat"]), settings["study"],
                             objectives, make_sampler(_sampler(settings), _seed(settings, index, existing), objectives,
                                                      settings["trials"]),
                             make_pruner(settings["pruner"]), resume=True, encoding=encoding)
        run_study(study, Objective(encoding, evaluator, objectives, costs), settings["trials"], fill=False)
    except BaseException as err:  # noqa: BLE001 - a worker reports to the run's log and exits non-zero
        RunFolder(path).log(f"worker {index} failed: {type(err).__name__}: {err}\n{traceback.format_exc()}")
        sys.exit(1)


def precheck(settings: dict[str, Any], args) -> dict[str, Any]:
    """Every check of an Optuna search that needs no run folder; returns the settings to run."""
    from .search import _given

    settings = resolve(settings)
    check(settings)
    if settings.get("seeds") and settings["supernet"] is not None:
        raise CLIError("--seeds and --supernet do not mix: one supernet scores the same for every seed")
    if settings.get("join"):
        return supernet_settings(settings, {k: settings[k] for k in SUPERNET_SETTINGS})
    if settings["storage"] is not None and not settings.get("seeds"):
        if _trial_count(_storage(settings, Path(".")), settings["study"]) is not None:
            raise CLIError(f"--storage {_shown(settings['storage'])} already holds a study named "
                           f"{settings['study']!r}: resume its run with --resume, join it from another machine with "
                           f"--join, or give another --study")
    return supernet_settings(settings, _given(args))


def _storage(settings: dict[str, Any], run_path: Path):
    """The study's storage (a user error when the database cannot be opened)."""
    from ..searchers.study import StudyError, open_storage

    try:
        return open_storage(settings["storage"], run_path, settings["heartbeat"])
    except StudyError as err:
        raise CLIError(str(err)) from None


def _shown(storage: str) -> str:
    from ..searchers.study import shown_url

    return shown_url(storage)


def search_one(settings: dict[str, Any], run_dir: Path | None, resume: bool, args):
    """An Optuna search into one run folder; returns (genotype, folder, None, genotype to train)."""
    import optuna

    from ..searchers.run import RunFolder
    from ..searchers.study import create_study, fill_queue, make_pruner, make_sampler, stale_to_failed
    from .search import RUN_FORMAT

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    joined = bool(settings.get("join"))
    settings = precheck(settings, args) if not resume else resolve(settings)
    objectives = _objectives(settings)
    if resume:
        folder = RunFolder.open(run_dir)
    else:
        from .search import prepare
        _, data, _, _, _ = prepare({**settings, "alphas": "uniform"}, args.device)  # every check before the folder
        if settings["evaluator"] == "zero-cost":
            proxy_batches(data)
        folder = RunFolder.create(run_dir or RunFolder.default_path())
        folder.write_config({"scansearch_run": RUN_FORMAT, "searcher": settings["searcher"], "settings": settings})
    set_crash_log(folder.file(RunFolder.LOG))
    folder.log(("resumed" if resume else "joined" if joined else "started")
               + f": {settings['searcher']} with the {settings['evaluator']} evaluator, {settings['trials']} trials, "
                 f"objectives {','.join(objectives)}"
               + (f", study {settings['study']!r} in {_shown(settings['storage'])}" if settings["storage"] else ""))
    started = time.perf_counter()
    encoding, evaluator, costs, template = build(
        settings, folder.path, args.device, train_supernet=settings["supernet"] is None, resume=resume,
        progress=not args.quiet)
    storage = _storage(settings, folder.path)
    existing = _trial_count(storage, settings["study"]) if resume or joined else None
    if joined and existing is None:
        raise CLIError(f"--join: no study named {settings['study']!r} in {_shown(settings['storage'])} any more")
    stored = {k: v for k, v in settings.items() if k != "join"}
    study = create_study(storage, settings["study"], objectives,
                         make_sampler(_sampler(settings), _seed(settings, 0, existing or 0), objectives,
                                      settings["trials"]),
                         make_pruner(settings["pruner"]), resume=existing is not None, encoding=encoding,
                         trials=settings["trials"], settings=stored)
    if resume and settings["storage"] is None:  # the run folder's own study: no other process runs it now
        retried = stale_to_failed(study)
        if retried:
            folder.log(f"trials {retried} were running when the search stopped: marked failed, asked again")
    if not joined:  # every slot is in the queue before a worker starts: workers take only queued trials
        fill_queue(study, settings["trials"])
    if not args.quiet:
        console.print(f"searching [bold]{encoding.space.name}[/] with {settings['searcher']} and the "
                      f"{settings['evaluator']} evaluator: {encoding.describe()}; {settings['trials']} trials, "
                      f"objectives {', '.join(objectives)}, {settings['workers']} worker(s) -> {folder.path}",
                      highlight=False)
    workers = [multiprocessing.get_context("spawn").Process(
        target=_worker, args=(settings, str(folder.path), i, args.device, len(study.trials)), daemon=False)
        for i in range(1, settings["workers"])]
    for w in workers:
        w.start()
    try:
        result = _run_with_bar(study, encoding, evaluator, costs, objectives, settings, folder, args)
        for w in workers:
            w.join()
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join()
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    seconds = time.perf_counter() - started
    if not result.best:
        raise CLIError("no trial completed; nothing to export")
    genotype = _export(study, result, encoding, template, settings, objectives, folder, seconds)
    if failed:
        raise CLIError(f"{len(failed)} worker process(es) failed (exit codes {failed}); the trials they finished "
                       f"are exported; see {folder.file('log.txt')}")
    return genotype, folder, None, folder.file(RunFolder.GENOTYPE)


def _run_with_bar(study, encoding, evaluator, costs, objectives, settings, folder, args):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..searchers.study import FINISHED, Objective, run_study

    bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"), console=console, disable=args.quiet or not console.is_terminal)
    with bar:
        task = bar.add_task("trials", total=settings["trials"],
                            completed=len(study.get_trials(deepcopy=False, states=FINISHED)), info="")

        def on_trial(study_, trial):
            finished = len(study_.get_trials(deepcopy=False, states=FINISHED))
            bar.update(task, completed=min(finished, settings["trials"]),
                       info=f"#{trial.number}: {trial.state.name.lower()} "
                            + ("" if trial.values is None else ", ".join(f"{v:.4g}" for v in trial.values)))
            folder.log(f"trial {trial.number}: {trial.state.name.lower()} {trial.values} {trial.params}")

        return run_study(study, Objective(encoding, evaluator, objectives, costs), settings["trials"],
                         fill=not settings.get("join"), on_trial=on_trial)


def _export(study, result, encoding, template, settings, objectives, folder, seconds: float):
    """The best genotype, the Pareto front, every trial and the summary into the run folder."""
    from ..searchers.report import trials_table
    from ..searchers.run import RunFolder

    genotype = _genotype(result.best[0], encoding, template, settings, objectives)
    folder.write_genotype(genotype)
    pareto = _write_pareto(folder, result, encoding, template, settings, objectives) if len(objectives) > 1 else []
    plot = _plot_pareto(study, result, objectives, folder, settings) if pareto else None
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False)]
    folder.write_json("trials.json", {"objectives": list(objectives), "trials": trials})
    folder.write_summary({"genotype": genotype.to_dict(), "seconds": round(seconds, 1),
                          "trials": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
                          "best": _trial_record(result.best[0]), "pareto": pareto,
                          "pareto_plot": plot.name if plot else None})
    folder.log(f"finished: best trial {result.best[0].number}, genotype written")
    console.print(trials_table(study, objectives, result.best, f"{settings['searcher']} ({settings['evaluator']}): "
                               f"the best trials and the known genotypes"))
    console.print(f"{len(trials)} trials in {seconds:.0f} s; genotype: {folder.file(RunFolder.GENOTYPE)}"
                  + (f"; Pareto front: {len(pareto)} genotypes in {folder.file('pareto')}" if pareto else "")
                  + (f", plotted in {plot}" if plot else " (its plot needs the plot extra)" if pareto else ""),
                  highlight=False)
    known = result.best[0].user_attrs.get("known")
    if known:
        console.print(f"the best trial is the fixed genotype {known}: the search found nothing better here",
                      highlight=False)
    return genotype


def _plot_pareto(study, result, objectives, folder, settings):
    """RUN/pareto.png: the first two objectives of every finished trial, the front joined."""
    from ..searchers.report import plot_pareto
    from ..searchers.study import FINISHED

    points = [tuple(t.values[:2]) for t in study.get_trials(deepcopy=False, states=FINISHED) if t.values]
    front = [tuple(t.values[:2]) for t in result.best]
    return plot_pareto(points, front, (objectives[0], objectives[1]), folder.file("pareto.png"),
                       f"{settings['searcher']}: {len(points)} trials, {len(front)} on the Pareto front")


def _trial_count(storage, name: str) -> int | None:
    """How many trials the study ``name`` holds; None when the storage has no such study."""
    import optuna

    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name == name:
            return summary.n_trials
    return None


def _genotype(trial, encoding, template, settings, objectives):
    from ..searchers.verify import as_genotype

    layers = encoding.decode(trial.params)
    base = as_genotype(template, layers, "trial")
    prov = {"searcher": settings["searcher"], "evaluator": settings["evaluator"], "trial": trial.number,
            "trials": settings["trials"], "seed": settings["seed"], "data": str(settings["data"]),
            "k": encoding.k, **{o: round(float(v), 6) for o, v in zip(objectives, trial.values)},
            **{k: v for k, v in template.provenance.items() if k in ("img_size", "model_overrides")}}
    if trial.user_attrs.get("known"):
        prov["known"] = trial.user_attrs["known"]
    return dataclasses.replace(base, space=template.space, provenance=prov)


def _write_pareto(folder, result, encoding, template, settings, objectives) -> list[dict]:
    from ..fileio import atomic_write_text

    import shutil

    out, fresh = folder.path / "pareto", folder.path / "pareto.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    members = []
    for rank, trial in enumerate(result.best):
        name = f"{rank:02d}-trial-{trial.number}.yaml"
        atomic_write_text(fresh / name, _genotype(trial, encoding, template, settings, objectives).to_yaml())
        members.append({"file": f"pareto/{name}", **_trial_record(trial)})
    shutil.rmtree(out, ignore_errors=True)  # the front of an earlier export, replaced whole
    fresh.rename(out)
    return members


def _trial_record(trial) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "values": trial.values, "params": trial.params,
            "metrics": {k: v for k, v in trial.user_attrs.items()}}


__all__ = ["EVALUATORS", "OPTUNA_SEARCHERS", "check", "search_one"]
