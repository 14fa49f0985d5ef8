"""The Optuna searchers (tpe, random, nsga2, bruteforce, gp, zero-cost): a study of genotypes.

The sampler proposes a genotype per trial (:mod:`.encoding`), an evaluator scores it
(:mod:`.evaluators`: a supernet's shared weights, a short training or a zero-cost proxy) and
the study's storage remembers every trial. The run folder holds the study
(``study.journal``, unless ``storage`` names another), the supernet the one-shot evaluator
scores with (``supernet/``, unless ``supernet`` reuses a DARTS run's), the best genotype,
one genotype per Pareto member when there are several objectives (``pareto/``), every
trial (``trials.json``) and a summary. ``workers`` runs that many processes on the one
study; ``--resume`` continues it; ``--join`` runs trials of a study another machine created.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
from pathlib import Path

import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scansearch.errors import InputError
from scansearch.searchers.darts import held_out_halves
from scansearch.searchers.encoding import GenotypeEncoding
from scansearch.searchers.evaluators import Costs, OneShot, Trained
from scansearch.searchers.oneshot import load_supernet_weights, train_uniform
from scansearch.searchers.optuna_export import export
from scansearch.searchers.run import RunError, RunFolder
from scansearch.searchers.searcher import Prepared, RunContext, Searcher, SearchOutcome, prepare
from scansearch.searchers.settings import OPTUNA_SEARCHERS, RUN_FORMAT, SearchSettings, option
from scansearch.searchers.study import (FINISHED, Objective, create_study, fill_queue, make_pruner,
                                        make_sampler, open_storage, run_study, shown_url, stale_to_failed)
from scansearch.searchers.zero_cost import ZeroCost
from scansearch.train import resolve_device

SUPERNET_DIR = "supernet"
# what a reused supernet fixes: the search must read the data and model it was trained on
SUPERNET_SETTINGS = ("space", "model", "data", "img_size", "set", "k", "batch_size", "seed")


def supernet_dir(run: str | Path) -> Path:
    """Where a run keeps the supernet weights: a DARTS run in its own folder, a one-shot
    Optuna search in RUN/supernet."""
    run = Path(run)
    return run / SUPERNET_DIR if (run / SUPERNET_DIR).is_dir() else run


def proxy_batches(data) -> list:
    """The two training batches a zero-cost proxy reads (one batch's two halves when the
    training data fits one batch); a user error with fewer than two training images."""
    batches = [batch for _, batch in zip(range(2), data.train)]
    if len(batches) == 1 and len(batches[0][1]) >= 2:
        images, labels = batches[0]
        half = len(labels) // 2
        batches = [(images[:half], labels[:half]), (images[half:], labels[half:])]
    if len(batches) < 2:
        raise InputError("--evaluator zero-cost needs at least two training images")
    return batches


def with_supernet_settings(settings: SearchSettings, every: bool = False) -> SearchSettings:
    """With ``supernet``: the data and model settings of that run. A setting that differs
    from the run's and from its default (``every``: any that differs) is an error."""
    run = settings.optuna.supernet
    if run is None:
        return settings
    try:
        config = RunFolder.open(run).read_config()
    except RunError as err:
        raise InputError(f"--supernet: {err}") from None
    stored = config.get("settings")
    oneshot = config.get("searcher") in OPTUNA_SEARCHERS and isinstance(stored, dict) \
        and stored.get("evaluator") == "oneshot" and stored.get("supernet") is None
    if config.get("scansearch_run") != RUN_FORMAT or not isinstance(stored, dict) \
            or not (config.get("searcher") == "darts" or oneshot):
        raise InputError(f"--supernet {run}: neither a scansearch DARTS run folder nor a one-shot search that "
                         f"trained its own supernet")
    if not (supernet_dir(run) / "checkpoint.pt").is_file():
        raise InputError(f"--supernet {run}: holds no checkpoint.pt (the run has not trained an epoch)")
    flat, default = settings.to_flat(), SearchSettings().to_flat()
    for key in SUPERNET_SETTINGS:
        if stored.get(key) != flat[key] and (every or flat[key] != default[key]):
            raise InputError(f"{option(key)}: the supernet of {run} was trained with {stored.get(key)!r}; drop the "
                             f"option (the run's settings apply)")
    return SearchSettings.from_flat({**flat, **{k: stored.get(k) for k in SUPERNET_SETTINGS}})


class OptunaSearcher(Searcher):
    all_ranks = False  # under torchrun rank 0 runs the study; the others follow its trials
    def check(self, resume: bool) -> None:
        """The storage, the study's name in it and a reused supernet (not on --resume, which
        runs with what it stored)."""
        o = self.settings.optuna
        if resume:
            return
        if o.storage is not None and o.storage.endswith((".journal", ".log")) \
                and not Path(o.storage).resolve().parent.is_dir():
            raise InputError(f"--storage {o.storage}: its folder does not exist")
        if o.join:
            self.settings = with_supernet_settings(self.settings, every=True)
            return
        if o.storage is not None and not self.settings.seeds:
            if trial_count(self._storage(Path(".")), o.study) is not None:
                raise InputError(f"--storage {shown_url(o.storage)} already holds a study named {o.study!r}: resume "
                                 f"its run with --resume, join it from another machine with --join, or give another "
                                 f"--study")
        self.settings = with_supernet_settings(self.settings)

    def prepare(self) -> Prepared:
        prepared = prepare(self.settings, self.ctx.device, mode="bilevel", alphas="uniform", select="perturb")
        self._proxy_batches = proxy_batches(prepared.data) if self.settings.optuna.evaluator == "zero-cost" else None
        return prepared

    def describe(self, resume: bool) -> str:
        s, o = self.settings, self.settings.optuna
        return (("resumed" if resume else "joined" if o.join else "started")
                + f": {s.searcher} with the {o.evaluator} evaluator, {o.trials} trials, objectives "
                  f"{','.join(o.objective_list)}"
                + (f", study {o.study!r} in {shown_url(o.storage)}" if o.storage else ""))

    # -- the evaluator -------------------------------------------------------------------------
    def evaluator(self, prepared: Prepared, folder_path: Path, *, train_supernet: bool, resume: bool):
        """(encoding, evaluator, costs, template). The one-shot supernet is trained into
        RUN/supernet (``train_supernet``) or loaded from it, or from ``supernet``'s run."""
        s, o, supernet, data = self.settings, self.settings.optuna, prepared.supernet, prepared.data
        template = prepared.template()
        encoding = GenotypeEncoding(prepared.space, supernet.num_layers)
        if o.evaluator == "oneshot":
            source = supernet_dir(o.supernet) if o.supernet else folder_path / SUPERNET_DIR
            if train_supernet:
                train_uniform(supernet, data, prepared.train_config, prepared.darts_config, source, resume=resume,
                              progress=not self.ctx.quiet)
            else:
                load_supernet_weights(supernet, source / "checkpoint.pt")
            select_half, _ = held_out_halves(data.val, next(supernet.parameters()).device, None)
            evaluator = OneShot(supernet, select_half)
        elif o.evaluator == "zero-cost":
            batches = self._proxy_batches if self._proxy_batches is not None else proxy_batches(data)
            evaluator = ZeroCost(template, data, batches, proxy=o.proxy, seed=s.seed)
        else:
            evaluator = Trained(template, data, prepared.train_config, o.train_epochs)
        costs = Costs(template, num_classes=data.num_classes, img_size=data.img_size, in_chans=data.in_chans,
                      device=str(resolve_device(prepared.train_config.device)))
        return encoding, evaluator, costs, template

    def _storage(self, run_path: Path):
        """The study's storage (a StudyError, an input error, when the database cannot be opened)."""
        o = self.settings.optuna
        return open_storage(o.storage, run_path, o.heartbeat)

    def _sampler_seed(self, worker: int, existing: int) -> int | None:
        """A sampler seed of its own for each worker and each resumption (a seeded sampler that
        starts again from its first draw would propose the genotypes it proposed before). A
        machine that joined a study draws from fresh entropy: machines started alike would
        otherwise propose alike."""
        if self.settings.seed is None or self.settings.optuna.join:
            return None
        return self.settings.seed + 1000 * worker + existing

    def _study(self, storage, encoding, worker: int, existing: int | None, **extra):
        o = self.settings.optuna
        objectives = o.objective_list
        sampler = make_sampler(self.settings.sampler, self._sampler_seed(worker, existing or 0), objectives, o.trials)
        return create_study(storage, o.study, objectives, sampler, make_pruner(o.pruner),
                            resume=existing is not None, encoding=encoding, **extra)

    # -- the search ----------------------------------------------------------------------------
    def run(self, prepared: Prepared, folder: RunFolder, resume: bool) -> SearchOutcome:
        s, o, ctx = self.settings, self.settings.optuna, self.ctx
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objectives = o.objective_list
        started = time.perf_counter()
        encoding, evaluator, costs, template = self.evaluator(prepared, folder.path, train_supernet=o.supernet is None,
                                                              resume=resume)
        storage = self._storage(folder.path)
        existing = trial_count(storage, o.study) if resume or o.join else None
        if o.join and existing is None:
            raise InputError(f"--join: no study named {o.study!r} in {shown_url(o.storage)} any more")
        stored = {k: v for k, v in s.to_flat().items() if k != "join"}
        study = self._study(storage, encoding, 0, existing, trials=o.trials, settings=stored)
        if resume and o.storage is None:  # the run folder's own study: no other process runs it now
            retried = stale_to_failed(study)
            if retried:
                folder.log(f"trials {retried} were running when the search stopped: marked failed, asked again")
        if not o.join:  # every slot is in the queue before a worker starts: workers take only queued trials
            fill_queue(study, o.trials)
        if not ctx.quiet:
            ctx.print(f"searching [bold]{encoding.space.name}[/] with {s.searcher} and the {o.evaluator} evaluator: "
                      f"{encoding.describe()}; {o.trials} trials, objectives {', '.join(objectives)}, {o.workers} "
                      f"worker(s) -> {folder.path}", highlight=False)
        workers = [multiprocessing.get_context("spawn").Process(
            target=_worker, args=(s, str(folder.path), i, ctx.device, len(study.trials)), daemon=False)
            for i in range(1, o.workers)]
        for w in workers:
            w.start()
        try:
            result = self._run_with_bar(study, Objective(encoding, evaluator, objectives, costs), folder)
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
            raise InputError("no trial completed; nothing to export")
        genotype = export(study, result, encoding, template, s, folder, seconds, ctx)
        if failed:
            raise InputError(f"{len(failed)} worker process(es) failed (exit codes {failed}); the trials they "
                             f"finished are exported; see {folder.file('log.txt')}")
        return SearchOutcome(genotype, folder, None, folder.file(RunFolder.GENOTYPE))

    def _run_with_bar(self, study, objective: Objective, folder: RunFolder):
        trials = self.settings.optuna.trials
        bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[info]}"), console=self.ctx.console,
                       disable=self.ctx.quiet or not self.ctx.console.is_terminal)
        with bar:
            task = bar.add_task("trials", total=trials,
                                completed=len(study.get_trials(deepcopy=False, states=FINISHED)), info="")

            def on_trial(study_, trial):
                finished = len(study_.get_trials(deepcopy=False, states=FINISHED))
                bar.update(task, completed=min(finished, trials),
                           info=f"#{trial.number}: {trial.state.name.lower()} "
                                + ("" if trial.values is None else ", ".join(f"{v:.4g}" for v in trial.values)))
                folder.log(f"trial {trial.number}: {trial.state.name.lower()} {trial.values} {trial.params}")

            return run_study(study, objective, trials, fill=not self.settings.optuna.join, on_trial=on_trial)

    def work(self, folder_path: Path, worker: int, existing: int) -> None:
        """One extra worker's trials of the study (no supernet training: the lead trained it)."""
        o = self.settings.optuna
        prepared = self.prepare()
        encoding, evaluator, costs, _ = self.evaluator(prepared, folder_path, train_supernet=False, resume=False)
        study = self._study(open_storage(o.storage, folder_path, o.heartbeat), encoding, worker, existing)
        run_study(study, Objective(encoding, evaluator, o.objective_list, costs), o.trials, fill=False)

    def follower(self):
        """The evaluator the other ranks of a torchrun launch train each trial with."""
        _, evaluator, _, _ = self.evaluator(self.prepare(), Path("."), train_supernet=False, resume=False)
        return evaluator


def _worker(settings: SearchSettings, folder_path: str, index: int, device: str, existing: int) -> None:
    """One extra worker process: the same study, its own sampler seed; a failure goes to the log."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(folder_path)
    try:
        OptunaSearcher(settings, RunContext(device=device, quiet=True)).work(path, index, existing)
    except BaseException as err:  # noqa: BLE001 - a worker reports to the run's log and exits non-zero
        RunFolder(path).log(f"worker {index} failed: {type(err).__name__}: {err}\n{traceback.format_exc()}")
        sys.exit(1)


def trial_count(storage, name: str) -> int | None:
    """How many trials the study ``name`` holds; None when the storage has no such study."""
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name == name:
            return summary.n_trials
    return None


__all__ = ["OptunaSearcher", "SUPERNET_DIR", "proxy_batches", "supernet_dir", "trial_count"]
