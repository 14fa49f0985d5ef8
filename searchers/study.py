"""Discrete search on Optuna: a study proposes genotypes, an evaluator scores them.

A trial is a genotype (:class:`~.encoding.GenotypeEncoding`: one categorical per layer);
its value is the evaluator's metrics for the objectives asked (``loss``, ``top1`` and the
costs ``flops``, ``params``, ``latency_ms``, ``ssm_layers``); every metric is kept as a
user attribute of the trial. Known genotypes (VMamba's cross scan, LocalMamba's baseline,
all rows) are enqueued first, so the study always holds the fixed baselines to beat.

The study lives in an Optuna storage: a journal file in the run folder by default
(``JournalStorage(JournalFileBackend(RUN/study.journal))``; many processes can share it),
or any storage URL. ``trials`` is the total the study reaches: a resumed or shared study
runs only what is missing (``MaxTrialsCallback``), and a trial left ``RUNNING`` by a killed
process is marked failed and its genotype asked again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState

from ..errors import DivergenceError
from ..spaces import NONE
from .encoding import GenotypeEncoding
from .verify import REFERENCES

SAMPLERS = ("tpe", "random", "nsga2", "bruteforce", "gp")
# objective -> direction
OBJECTIVES = {"loss": "minimize", "top1": "maximize", "flops": "minimize", "params": "minimize",
              "latency_ms": "minimize", "ssm_layers": "minimize"}
COSTS = ("flops", "params", "latency_ms", "ssm_layers")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BOOKKEEPING = ("known", "retry_of")  # user attributes that say where a trial came from, not what it measured
JOURNAL = "study.journal"


class StudyError(ValueError):
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
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def open_storage(url: str | None, run_path: Path) -> optuna.storages.BaseStorage | str:
    """The journal file in the run folder (default), or the storage at ``url``."""
    if url is None:
        return journal_storage(run_path / JOURNAL)
    if url.endswith(".journal") or url.endswith(".log"):
        return journal_storage(url)
    return url


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


def run_study(study: optuna.Study, objective: Objective, trials: int, *,
              on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> StudyResult:
    """Run ``study`` until it holds ``trials`` finished (complete or pruned) trials."""
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(trials, states=FINISHED)]
    if on_trial is not None:
        callbacks.append(on_trial)
    if done < trials:
        study.optimize(objective, n_trials=None, callbacks=callbacks, catch=(DivergenceError,), gc_after_trial=False)
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
                 encoding: GenotypeEncoding, enqueue_known: bool = True) -> optuna.Study:
    """Create the study (``resume=False``; refuses a name the storage holds already; enqueues the
    known genotypes unless told not to) or load it (workers, ``--resume``)."""
    directions = [OBJECTIVES[o] for o in objectives]
    if resume:
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise StudyError(f"no study named {name!r} in the storage to resume") from None
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise StudyError(f"study {name!r} was created with other objectives")
        return study
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(f"the storage already holds a study named {name!r}: resume it, or pick another "
                         f"name") from None
    if not enqueue_known:
        return study
    for label, layers in known_genotypes(encoding).items():
        study.enqueue_trial(encoding.params(layers), user_attrs={"known": label})
    return study


__all__ = ["COSTS", "FINISHED", "JOURNAL", "OBJECTIVES", "Objective", "SAMPLERS", "StudyError", "StudyResult",
           "best_trials", "check_objectives", "create_study", "journal_storage", "known_genotypes", "make_pruner",
           "make_sampler", "open_storage", "run_study", "stale_to_failed"]
