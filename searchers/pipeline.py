"""``run_search``: one search, from settings to a genotype in a run folder.

What the command line's ``scansearch search`` runs, callable from Python::

    from scansearch.searchers import SearchSettings, run_search

    outcome = run_search(SearchSettings(space="local8", epochs=1), out="runs/demo")
    print(outcome.genotype.layers, outcome.folder.path)

The pipeline owns the run folder: it checks everything it can before the folder exists (so
a mistake leaves nothing behind), creates it and takes its lock (one process drives a run;
a second is refused), continues it on ``resume`` with the settings it stored, runs one
search per seed with ``seeds`` and a majority genotype, and runs across processes under
torchrun. The searchers behind it (:mod:`.darts_searcher`, :mod:`.optuna_searcher`,
:mod:`.nni_searcher`) follow :class:`~.searcher.Searcher`.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from scansearch import distributed
from scansearch.errors import InputError
from scansearch.searchers.darts_searcher import DartsSearcher
from scansearch.searchers.evaluators import follow_trials, lead_trials
from scansearch.searchers.nni_searcher import NNISearcher
from scansearch.searchers.optuna_searcher import OptunaSearcher
from scansearch.searchers.report import votes_table
from scansearch.searchers.run import RunFolder
from scansearch.searchers.searcher import RunContext, Searcher, SearchOutcome
from scansearch.searchers.seeds import majority
from scansearch.searchers.settings import RUN_FORMAT, SearchSettings, resumed_settings


def searcher_for(settings: SearchSettings, ctx: RunContext) -> Searcher:
    """The searcher that runs ``settings.searcher``."""
    kind = OptunaSearcher if settings.is_optuna else NNISearcher if settings.is_nni else DartsSearcher
    return kind(settings, ctx)


def run_search(settings: SearchSettings | None = None, out: str | Path | None = None, *, resume: bool = False,
               ctx: RunContext | None = None, log_to=None) -> SearchOutcome:
    """Run a search into the run folder ``out`` (default ``runs/search-<time>``) and return
    what it found. ``resume=True`` continues the run in ``out``; leave ``settings`` None to
    run with the settings it stored, or pass what :func:`~.settings.resumed_settings` read
    (it allows the few changes a resumed run may make).
    ``ctx`` says on which device, with which console and whether quietly; ``log_to(path)``,
    if given, is told each run folder's log as the search enters it (where the command line
    keeps an internal error's traceback). Raises an ``InputError`` for anything the user gave
    that cannot be used, before anything is written."""
    ctx = ctx or RunContext()
    run_dir = Path(out) if out is not None else None
    if resume and run_dir is None:
        raise InputError("--resume needs --out RUN_DIR, the run to continue")
    if settings is None:
        settings = resumed_settings(run_dir, {}) if resume else SearchSettings()
    started = distributed.requested()
    if started:
        _start_distributed(settings, ctx)
    try:
        if settings.seeds:
            outcome = _search_seeds(settings, run_dir, resume, ctx, log_to)
        else:
            outcome = _search_one(settings, run_dir, resume, ctx, log_to)
    except BaseException:
        distributed.cleanup(wait=False)  # the others do not wait for this rank at a barrier
        raise
    distributed.cleanup()
    return outcome


def _search_one(settings: SearchSettings, run_dir: Path | None, resume: bool, ctx: RunContext,
                log_to=None) -> SearchOutcome:
    """One search into one run folder, checked before the folder is made."""
    searcher = searcher_for(settings, ctx)
    if settings.is_optuna and distributed.is_distributed():
        if not distributed.is_main():  # the other ranks train each trial rank 0's study asks for
            follow_trials(searcher.follower())
            return SearchOutcome(None, None)
        return lead_trials(lambda: _run(searcher, run_dir, resume, log_to))
    return _run(searcher, run_dir, resume, log_to)


def _run(searcher: Searcher, run_dir: Path | None, resume: bool, log_to) -> SearchOutcome:
    with ExitStack() as stack:
        searcher.check(resume)
        folder = None
        if resume:
            folder = RunFolder.open(run_dir)
            if distributed.is_main():
                stack.enter_context(_locked(folder))
            answer = searcher.on_resume(folder)
            if isinstance(answer, SearchOutcome):
                return answer
            resume = answer
        prepared = searcher.prepare()
        if folder is None:
            def create() -> RunFolder:
                made = RunFolder.create(run_dir or RunFolder.default_path())
                stack.enter_context(_locked(made))
                made.write_config(searcher.record(prepared))
                return made

            # rank 0 creates it; where every rank runs the search, its folder (or its error) reaches them all
            folder = distributed.on_main(create) if searcher.all_ranks else create()
        if distributed.is_main():
            if log_to is not None:
                log_to(folder.file(RunFolder.LOG))
            folder.log(searcher.describe(resume))
        return searcher.run(prepared, folder, resume)


def _locked(folder: RunFolder):
    lock = folder.lock()
    if lock.stale:
        folder.log(f"took over the lock a stopped process left ({lock.stale})")
    return lock


def _search_seeds(settings: SearchSettings, run_dir: Path | None, resume: bool, ctx: RunContext,
                  log_to=None) -> SearchOutcome:
    """One search per seed into RUN/seed-S (a finished one is reused on resume), then the
    per-layer agreement table and the majority genotype in RUN/genotype.yaml."""
    seeds = settings.seeds
    with ExitStack() as stack:
        if resume:
            folder = RunFolder.open(run_dir)
            stack.enter_context(_locked(folder))
        else:
            first = searcher_for(settings.for_seed(seeds[0]), ctx)
            first.check(False)  # every check before the folder, on the first seed's settings
            first.prepare()
            folder = RunFolder.create(run_dir or RunFolder.default_path())
            stack.enter_context(_locked(folder))
            folder.write_config({"scansearch_run": RUN_FORMAT, "searcher": settings.searcher,
                                 "settings": settings.to_flat()})
        if log_to is not None:
            log_to(folder.file(RunFolder.LOG))
        genotypes, scores = [], []
        for seed in seeds:
            sub = folder.path / f"seed-{seed}"
            if (sub / RunFolder.SUMMARY).exists():
                opened = RunFolder.open(sub)
                genotypes.append(opened.read_genotype())
                selection = opened.read_json(RunFolder.SELECTION) if opened.file(RunFolder.SELECTION).exists() else {}
                scores.append([{name: s["loss"] for name, s in layer["scores"].items()}
                               for layer in selection.get("layers", [])] or None)
                folder.log(f"seed {seed}: finished before, reused")
                continue
            outcome = _search_one(settings.for_seed(seed), sub, resume and (sub / RunFolder.CONFIG).exists(), ctx,
                                  log_to)
            if log_to is not None:
                log_to(folder.file(RunFolder.LOG))
            genotypes.append(outcome.genotype)
            scores.append(outcome.scores)
            folder.log(f"seed {seed}: finished")
        k = genotypes[0].provenance.get("k") or genotypes[0].load_space().k
        combined, votes = majority(genotypes, seeds, k, scores if all(scores) else None)
        folder.write_genotype(combined)
        folder.write_json("seeds.json", {"seeds": list(seeds), "layers": [v.to_dict() for v in votes]})
        folder.write_summary({"genotype": combined.to_dict(), "seeds": list(seeds), "agree": [v.agree for v in votes]})
        folder.log("finished: majority genotype written")
        ctx.print(votes_table(votes, f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): per layer, the majority's "
                                     f"directions and how many seeds kept exactly them"))
        return SearchOutcome(combined, folder, None, folder.file(RunFolder.GENOTYPE))


def _start_distributed(settings: SearchSettings, ctx: RunContext) -> None:
    """Under torchrun: refuse what cannot run across processes (exit 2 on every rank, before
    any process waits for another), then join the process group; only rank 0 prints."""
    world = distributed.env_world_size()
    searcher, evaluator = settings.searcher, settings.optuna.evaluator
    if settings.is_nni or settings.is_optuna and evaluator != "train":
        what = searcher if settings.is_nni or searcher == "zero-cost" else f"{searcher} with --evaluator {evaluator}"
        raise InputError(f"--searcher {what} does not run across processes; under torchrun use the DARTS search or "
                         f"--evaluator train, or launch without torchrun")
    if settings.seeds:
        raise InputError("--seeds does not run under torchrun; launch one torchrun search per --seed")
    if settings.is_optuna and settings.optuna.workers > 1:
        raise InputError("--workers: under torchrun the processes train each trial together; drop --workers")
    distributed.check_global_batch(settings.batch_size, world)
    ctx.device = distributed.device_spec(ctx.device)
    distributed.init(ctx.device)
    if not distributed.is_main():
        ctx.console.quiet = True


__all__ = ["run_search", "searcher_for"]
