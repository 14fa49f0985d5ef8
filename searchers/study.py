"""Discrete search on Optuna: a study proposes genotypes, an evaluator scores them.

A trial is a genotype (:class:`~.encoding.GenotypeEncoding`: one categorical per layer);
its value is the evaluator's metrics for the objectives asked (``loss``, ``top1`` and the
costs ``flops``, ``params``, ``latency_ms``, ``ssm_layers``); every metric is kept as a
user attribute of the trial. Known genotypes (VMamba's cross scan, LocalMamba's baseline,
all rows) are enqueued first, so the study always holds the fixed baselines to beat.

The study lives in an Optuna storage: a journal file in the run folder by default
(``JournalStorage(JournalFileBackend(RUN/study.journal))``; many processes can share it),
or any storage URL. ``trials`` is the total the study reaches: a resumed or shared study
runs only what is missing, and a trial left ``RUNNING`` by a killed process is marked failed
and its genotype asked again.

Many processes, many machines. The study's trials are slots in its queue: the process that
creates (or resumes) the study enqueues the known genotypes and then empty trials until the
study holds ``trials`` finished, running or waiting ones; the sampler fills an empty trial's
genotype when a worker takes it. Workers take trials only from the queue
(:class:`QueueStudy`), so any number of them, started anywhere, finish exactly ``trials``:
none more, none counted twice. On a database storage (PostgreSQL, SQLite) workers send
heartbeats; a trial whose worker died (its heartbeat older than the grace period) is marked
failed and its genotype enqueued again (``RetryHeartbeatStaleTrialCallback``), and a worker
with nothing left to take waits while other trials still run, so the last retries are run too.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from scansearch.errors import DivergenceError, InputError, ScanSearchError
from scansearch.searchers.encoding import GenotypeEncoding
from scansearch.searchers.verify import REFERENCES
from scansearch.spaces import NONE

SAMPLERS = ("tpe", "random", "nsga2", "bruteforce", "gp")
# objective -> direction
OBJECTIVES = {"loss": "minimize", "top1": "maximize", "flops": "minimize", "params": "minimize",
              "latency_ms": "minimize", "ssm_layers": "minimize"}
COSTS = ("flops", "params", "latency_ms", "ssm_layers")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BOOKKEEPING = ("known", "retry_of")  # user attributes that say where a trial came from, not what it measured
JOURNAL = "study.journal"
SETTINGS_ATTR = "scansearch_settings"  # the study's user attribute holding the search settings (for --join)
MAX_RETRY = 3  # a genotype whose worker died this many times is given up (its slot gets a fresh genotype)
GRACE = 3.0  # grace period = GRACE heartbeat intervals: a trial is stale when its last beat is older


class StudyError(InputError):
    """Settings a study cannot run with (an unknown sampler or objective, a missing extra)."""


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    objectives = tuple(objectives)
    if not objectives:
        raise StudyError("at least one objective is needed")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise StudyError(f"unknown objective {unknown[0]!r} (known: {', '.join(OBJECTIVES)})")
    if len(set(objectives)) != len(objectives):
        raise StudyError(f"an objective is repeated in {','.join(objectives)}")
    if objectives[0] in COSTS:
        raise StudyError(f"the first objective must measure quality (loss or top1), got {objectives[0]!r}")
    return objectives


def make_sampler(name: str, seed: int | None, objectives: Sequence[str], trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name``; ``gp`` needs scipy (the ``gp`` extra)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 4)))
    if name == "bruteforce":
        return optuna.samplers.BruteForceSampler(seed=seed)
    if name == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler's optimiser)
        except ImportError:
            raise StudyError("the gp sampler needs scipy: pip install 'scansearch[gp]'") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    raise StudyError(f"unknown pruner {name!r} (known: none, median, hyperband)")


def journal_storage(path: str | Path) -> optuna.storages.BaseStorage:

    return JournalStorage(JournalFileBackend(str(path)))


def database_url(url: str) -> str:
    """SQLAlchemy's URL for ``url``: a plain ``postgresql://`` (or ``postgres://``) goes
    through psycopg 3, the driver of the ``postgres`` extra."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def rdb_storage(url: str, heartbeat: float | None = 30.0) -> optuna.storages.RDBStorage:
    """The database storage at ``url`` with heartbeats every ``heartbeat`` seconds (None: off):
    a trial silent for ``GRACE`` intervals is failed and its genotype enqueued again."""

    try:
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - optuna depends on it
        raise StudyError("a database storage needs sqlalchemy: pip install sqlalchemy") from None
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        interval = max(1, round(heartbeat))
        kwargs = {"heartbeat_interval": interval, "grace_period": max(2, round(GRACE * interval)),
                  "heartbeat_stale_trial_callback": retry_stale}
    shown = shown_url(url)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(database_url(url), engine_kwargs={"pool_pre_ping": True}, **kwargs)
    except ImportError as err:  # SQLAlchemy's own, or Optuna's word for it
        driver = f" {err.name!r}" if getattr(err, "name", None) else ""
        raise StudyError(f"--storage {shown}: the database driver{driver} is not installed "
                         f"(PostgreSQL: pip install 'scansearch[postgres]')") from None
    except sqlalchemy.exc.ArgumentError as err:
        raise StudyError(f"--storage {shown}: not a database URL SQLAlchemy knows ({err})") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise StudyError(f"--storage {shown}: cannot open the database: {reason[0] if reason else type(err).__name__}") \
            from None


def shown_url(url: str) -> str:
    """A storage URL without its user and password, for messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def open_storage(url: str | None, run_path: Path, heartbeat: float | None = 30.0) -> optuna.storages.BaseStorage:
    """The journal file in the run folder (default), a journal file named by ``url``, or the
    database at ``url`` with heartbeats (:func:`rdb_storage`)."""
    if url is None:
        return journal_storage(run_path / JOURNAL)
    if url.endswith(".journal") or url.endswith(".log"):
        return journal_storage(url)
    return rdb_storage(url, heartbeat)


def retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """What happens to a trial whose worker died: its genotype is enqueued again
    (``RetryHeartbeatStaleTrialCallback``) up to ``MAX_RETRY`` times; after that its slot is
    given a fresh genotype, so the study still reaches its total."""

    if len(trial.system_attrs.get("retry_history", [])) < MAX_RETRY:
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)
    else:
        study.enqueue_trial({}, user_attrs={"replaces": trial.number}, skip_if_exists=False)


class QueueEmpty(ScanSearchError):
    """No trial waits in the queue and none that runs can come back to it: a worker is done."""


class QueueStudy(optuna.Study):
    """A study whose workers take trials only from its queue (never a fresh one), so that any
    number of workers finish exactly the trials enqueued. ``heartbeat`` (seconds) is set on a
    storage with heartbeats: a worker that finds the queue empty then waits while trials still
    run elsewhere, failing stale ones (which enqueues their genotypes again), and ends only when
    nothing runs; without heartbeats it ends at once (a dead worker's trial is retried on
    ``--resume``)."""

    def __init__(self, *args: Any, heartbeat: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.heartbeat = heartbeat

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        if fixed_distributions:
            raise StudyError("a queued study takes its trials from the queue; fixed distributions do not apply")
        while True:
            trial_id = self._take_waiting()
            if trial_id is not None:
                if hasattr(self, "_thread_local"):
                    self._thread_local.cached_all_trials = None  # as Study.ask: read the storage afresh
                return optuna.Trial(self, trial_id)
            running = self.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if self.heartbeat is None or not running:
                raise QueueEmpty
            time.sleep(min(0.25, self.heartbeat))  # the trials still running end within a beat or so
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self)

    def _take_waiting(self) -> int | None:
        """Move the oldest waiting trial to RUNNING for this worker; None when none waits.
        The storage changes a trial's state only from WAITING, so two workers never take one."""
        storage, study_id = self._storage, self._study_id
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None


def fill_queue(study: optuna.Study, trials: int) -> int:
    """Enqueue empty trials until the study holds ``trials`` finished, running or waiting ones;
    returns how many were added. Called by the one process that creates or resumes the study."""
    held = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
    missing = max(0, trials - len(held))
    for _ in range(missing):
        study.enqueue_trial({}, skip_if_exists=False)
    return missing


def known_genotypes(encoding: GenotypeEncoding) -> dict[str, tuple]:
    """The fixed genotypes the study starts from, those the encoding can hold: cross,
    LocalMamba's baseline, and all rows (``h``, its flip, then the space's order)."""
    out = {}
    patterns = encoding.space.patterns
    for name, directions in REFERENCES.items():
        if len(directions) == encoding.k and set(directions) <= set(patterns):
            out[name] = (directions,) * encoding.layers
    rows = [p for p in ("h", "h_flip") if p in patterns]
    rows += [p for p in patterns if p not in rows]
    all_rows = (tuple(sorted(rows[:encoding.k], key=patterns.index)),) * encoding.layers
    if all_rows not in out.values():
        out["rows"] = all_rows
    return out


def stale_to_failed(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a process that died as FAIL and enqueue their genotypes
    again; returns their numbers. Only for a study no other process is running."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        attrs = {k: v for k, v in t.user_attrs.items() if k in BOOKKEEPING}
        study.enqueue_trial(dict(t.params), user_attrs={**attrs, "retry_of": t.number}, skip_if_exists=False)
    return [t.number for t in stale]


@dataclass
class StudyResult:
    study: optuna.Study
    best: list[optuna.trial.FrozenTrial]   # the best trial, or the Pareto front (several objectives)
    objectives: tuple[str, ...]


class Objective:
    """Optuna's objective: decode the trial, evaluate, add costs, record every metric.

    A genotype evaluated before in this study is not evaluated again: its metrics are read
    from the earlier trial (samplers repeat themselves in small spaces)."""

    def __init__(self, encoding: GenotypeEncoding, evaluator: Callable, objectives: Sequence[str], costs=None):
        self.encoding, self.evaluator, self.objectives, self.costs = encoding, evaluator, tuple(objectives), costs
        if costs is None and set(self.objectives) & set(COSTS) - {"ssm_layers"}:
            raise StudyError("cost objectives need a Costs measurer")

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        layers = self.encoding.suggest(trial)
        metrics = self._earlier(trial)
        if metrics is None:
            metrics = dict(self.evaluator(layers, trial))
            if self.costs is not None:
                metrics.update(self.costs(layers, self.objectives))
            else:
                metrics["ssm_layers"] = float(sum(layer != NONE for layer in layers))
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        values = tuple(float(metrics[o]) for o in self.objectives)
        return values[0] if len(values) == 1 else values

    def _earlier(self, trial: optuna.Trial) -> dict[str, float] | None:
        for done in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == trial.params and all(o in done.user_attrs for o in self.objectives):
                return {k: v for k, v in done.user_attrs.items()
                        if k not in BOOKKEEPING and isinstance(v, (int, float))}
        return None


def run_study(study: optuna.Study, objective: Objective, trials: int, *, fill: bool = True,
              on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> StudyResult:
    """Run ``study`` until it holds ``trials`` finished (complete or pruned) trials.

    ``fill``: this process tops the queue up to ``trials`` first (the one that creates or
    resumes the study; extra workers and joined machines pass False). A trial that failed
    (diverged) gives its slot to a fresh genotype."""
    if fill and isinstance(study, QueueStudy):
        fill_queue(study, trials)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))

    def replace_failed(study_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and isinstance(study_, QueueStudy):
            study_.enqueue_trial({}, user_attrs={"replaces": trial.number}, skip_if_exists=False)

    callbacks: list[Any] = [replace_failed, optuna.study.MaxTrialsCallback(trials, states=FINISHED)]
    if on_trial is not None:
        callbacks.append(on_trial)
    if done < trials:
        try:
            study.optimize(objective, n_trials=None, callbacks=callbacks, catch=(DivergenceError,),
                           gc_after_trial=False)
        except QueueEmpty:
            pass
    return StudyResult(study, best_trials(study, objective.objectives), objective.objectives)


def best_trials(study: optuna.Study, objectives: Sequence[str]) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(objectives) == 1:
        return [study.best_trial]
    front = study.best_trials
    return sorted(front, key=lambda t: t.values[0] * (1 if OBJECTIVES[objectives[0]] == "minimize" else -1))


def create_study(storage, name: str, objectives: Sequence[str], sampler, pruner, *, resume: bool,
                 encoding: GenotypeEncoding, enqueue_known: bool = True, trials: int | None = None,
                 settings: dict[str, Any] | None = None) -> QueueStudy:
    """Create the study (``resume=False``; refuses a name the storage holds already; enqueues the
    known genotypes, at most ``trials`` of them, unless told not to; keeps ``settings`` as a
    user attribute for machines that join) or load it (workers, ``--resume``, ``--join``)."""
    directions = [OBJECTIVES[o] for o in objectives]
    if storage is None:  # in memory: one object both for creating and for the queued study
        storage = optuna.storages.InMemoryStorage()
    heartbeat = _heartbeat(storage)
    if not resume:
        try:
            optuna.create_study(study_name=name, storage=storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            raise StudyError(f"the storage already holds a study named {name!r}: resume it, or pick another "
                             f"name") from None
    try:
        study = QueueStudy(study_name=name, storage=storage, sampler=sampler, pruner=pruner, heartbeat=heartbeat)
    except KeyError:
        raise StudyError(f"no study named {name!r} in the storage to resume") from None
    if resume:
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise StudyError(f"study {name!r} was created with other objectives")
        return study
    if settings is not None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    if enqueue_known:
        for label, layers in list(known_genotypes(encoding).items())[:trials]:
            study.enqueue_trial(encoding.params(layers), user_attrs={"known": label})
    return study


def stored_settings(storage, name: str) -> dict[str, Any]:
    """The search settings a study was created with (``--join``)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyError(f"no study named {name!r} in the storage to join") from None
    settings = study.user_attrs.get(SETTINGS_ATTR)
    if not isinstance(settings, dict):
        raise StudyError(f"study {name!r} was not created by scansearch search (it holds no settings to join with)")
    return settings


def _heartbeat(storage) -> float | None:
    """The storage's heartbeat interval in seconds, or None when it has none."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if callable(get) else None


__all__ = ["COSTS", "FINISHED", "JOURNAL", "MAX_RETRY", "OBJECTIVES", "Objective", "QueueEmpty", "QueueStudy",
           "SAMPLERS", "SETTINGS_ATTR", "StudyError", "StudyResult", "best_trials", "check_objectives",
           "create_study", "database_url", "fill_queue", "journal_storage", "known_genotypes", "make_pruner",
           "make_sampler", "open_storage", "rdb_storage", "retry_stale", "run_study", "shown_url", "stale_to_failed",
           "stored_settings"]
