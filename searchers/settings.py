"""The settings of a search: typed, checked once on construction, saved in the run folder.

A :class:`SearchSettings` holds what every searcher reads (space, model, data, training,
seeds) and two parts: :class:`DartsSettings` (how the DARTS supernet and its selection run;
the one-shot searchers train their supernet with it too) and :class:`OptunaSettings` (the
study of the Optuna searchers). NNI's strategies read the common settings only.

Build it in Python (``SearchSettings(space="local8", epochs=1)``) or from the options a user
gave by their flat names (:meth:`SearchSettings.from_options`, what the command line does),
which also refuses options that the chosen searcher would ignore. Every value is checked
here, once, with an :class:`~scansearch.errors.InputError` that names the option. The run
folder stores the flat form (:meth:`SearchSettings.to_flat`); ``--resume`` and ``--join``
read it back through :func:`resumed_settings` and :func:`joined_settings`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from scansearch.errors import InputError
from scansearch.searchers.darts import DartsConfig
from scansearch.searchers.run import RunFolder
from scansearch.searchers.study import (SAMPLERS, StudyError, check_objectives, make_pruner, make_sampler, open_storage,
                                        stored_settings)
from scansearch.searchers.zero_cost import PROXIES
from scansearch.train import TrainConfig

RUN_FORMAT = 1  # config.yaml's scansearch_run
DARTS = "darts"
OPTUNA_SEARCHERS = (*SAMPLERS, "zero-cost")
NNI_SEARCHERS = ("nni-darts", "nni-gumbel", "nni-proxyless", "nni-random")
SEARCHERS = (DARTS, *OPTUNA_SEARCHERS, *NNI_SEARCHERS)
EVALUATORS = ("oneshot", "train", "zero-cost")
PRUNERS = ("none", "median", "hyperband")
# what an NNI search reads; any other option given with it is refused, not ignored
NNI_READS = ("space", "model", "data", "searcher", "epochs", "batch_size", "lr", "weight_decay", "seed", "img_size",
             "arch_lr", "k", "set", "seeds")
RESUMABLE = ("trials", "workers", "heartbeat")  # a resumed study may run to another total, with other workers
JOINABLE = ("storage", "study", "workers", "supernet")  # what --join takes; the study's settings give the rest
SQLITE_ONE_PROCESS = ("--storage sqlite: SQLite has no row locks, so two processes could take the same trial; for "
                      "--workers above 1 or --join use PostgreSQL, or a .journal file on one machine")


def option(name: str) -> str:
    """A setting's command-line option: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class DartsSettings:
    """How the DARTS supernet trains its alphas and selects (see :class:`~.darts.DartsConfig`)."""

    mode: str = "bilevel"
    order: int = 1
    beta_decay: float = 0.0
    warmup_epochs: int | None = None  # None: one epoch, or none in a one-epoch run
    gumbel_k: int | None = None
    select: str = "perturb"
    alphas: str = "learned"
    finetune_steps: int = 10
    verify_epochs: int = 0
    verify_steps: int = 20
    verify_seeds: int = 2


@dataclass(frozen=True)
class OptunaSettings:
    """The study of the Optuna searchers (tpe, random, nsga2, bruteforce, gp, zero-cost)."""

    trials: int = 60
    evaluator: str = "oneshot"
    supernet: str | None = None       # a DARTS or one-shot run whose supernet scores the trials
    objectives: str = "loss"          # comma-separated: loss or top1, then cost objectives
    storage: str | None = None        # None: RUN/study.journal
    study: str = "scansearch"
    workers: int = 1
    pruner: str | None = None
    train_epochs: int = 2
    proxy: str = "zico"
    heartbeat: float = 30.0
    join: bool = False                # this run takes trials of a study another machine created

    @property
    def objective_list(self) -> tuple[str, ...]:
        try:
            return check_objectives(str(self.objectives).split(","))
        except StudyError as err:
            raise InputError(f"--objectives: {err}") from None


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search reads; checked on construction (InputError naming the option)."""

    space: str = "local8"
    model: str = "local_vim_micro"
    data: str = "digits"
    searcher: str = DARTS
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.01
    seed: int = 0
    img_size: int | None = None       # None: the data's own size (built-in sets), else the preset's
    k: int | None = None              # directions kept per layer; None: the space's k
    set: tuple[str, ...] = ()         # model config overrides, FIELD=VALUE
    seeds: tuple[int, ...] | None = None  # one search per seed, then a majority genotype
    arch_lr: float = 3e-2             # the alphas' learning rate (DARTS and NNI's strategies)
    darts: DartsSettings = field(default_factory=DartsSettings)
    optuna: OptunaSettings = field(default_factory=OptunaSettings)

    def __post_init__(self) -> None:
        fix = partial_setattr(self)
        fix("set", tuple(self.set))
        if self.seeds is not None:
            fix("seeds", tuple(self.seeds))
        if self.searcher not in SEARCHERS:
            raise InputError(f"--searcher must be one of {', '.join(SEARCHERS)}, got {self.searcher!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{option(name)} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise InputError(f"--lr must be positive and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise InputError(f"--weight-decay must be zero or more and finite, got {self.weight_decay}")
        if self.img_size is not None and self.img_size < 1:
            raise InputError(f"--img-size must be at least 1, got {self.img_size}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"--seeds: a seed is repeated in {','.join(map(str, self.seeds))}")
        if self.darts.warmup_epochs is None:  # the default warm-up never takes a whole short run
            fix("darts", dataclasses.replace(self.darts, warmup_epochs=min(1, max(0, self.epochs - 1))))
        self.darts_config()  # DARTS' own checks, the one place its values are checked
        if self.is_optuna:
            self._check_optuna()

    # -- what kind of search -------------------------------------------------------------------
    @property
    def is_optuna(self) -> bool:
        return self.searcher in OPTUNA_SEARCHERS

    @property
    def is_nni(self) -> bool:
        return self.searcher in NNI_SEARCHERS

    @property
    def sampler(self) -> str:
        """The Optuna sampler: ``zero-cost`` samples at random and ranks by its proxy."""
        return "random" if self.searcher == "zero-cost" else self.searcher

    def _check_optuna(self) -> None:
        o = self.optuna
        if self.searcher == "zero-cost":
            if o.evaluator not in ("oneshot", "zero-cost"):  # oneshot: the default, not a choice
                raise InputError("--searcher zero-cost ranks by a zero-cost proxy; drop --evaluator")
            o = dataclasses.replace(o, evaluator="zero-cost")
            partial_setattr(self)("optuna", o)
        for name in ("trials", "workers"):
            if getattr(o, name) < 1:
                raise InputError(f"{option(name)} must be at least 1, got {getattr(o, name)}")
        if o.evaluator not in EVALUATORS:
            raise InputError(f"--evaluator must be one of {', '.join(EVALUATORS)}, got {o.evaluator!r}")
        if o.train_epochs < 1:
            raise InputError(f"--train-epochs must be at least 1, got {o.train_epochs}")
        if not 1 <= o.heartbeat <= 3600:
            raise InputError(f"--heartbeat must be between 1 and 3600 seconds, got {o.heartbeat}")
        if o.proxy not in PROXIES:
            raise InputError(f"--proxy must be one of {', '.join(PROXIES)}, got {o.proxy!r}")
        if o.supernet is not None and o.evaluator != "oneshot":
            raise InputError("--supernet is what the oneshot evaluator scores with; drop it or use --evaluator oneshot")
        objectives = o.objective_list
        make_sampler(self.sampler, self.seed, objectives, o.trials)  # StudyError: an extra it needs is missing
        make_pruner(o.pruner)
        if o.pruner not in (None, "none"):
            if o.evaluator != "train":
                raise InputError("--pruner stops trials between training epochs: it needs --evaluator train")
            if len(objectives) > 1:
                raise InputError("--pruner: Optuna prunes single-objective studies only; drop it or the cost "
                                 "objectives")
        if o.evaluator == "zero-cost" and objectives[0] != "loss":
            raise InputError(f"--objectives: the zero-cost evaluator ranks by its proxy (loss = minus the proxy); "
                             f"{objectives[0]!r} is not measured without training")
        if o.storage is not None:
            if not o.storage.endswith((".journal", ".log")) and "://" not in o.storage:
                raise InputError(f"--storage {o.storage}: expected a database URL (postgresql://..., sqlite:///...) "
                                 f"or a .journal file")
            if o.storage.startswith("sqlite") and (o.workers > 1 or o.join):
                raise InputError(SQLITE_ONE_PROCESS)
        if self.seeds and o.supernet is not None:
            raise InputError("--seeds and --supernet do not mix: one supernet scores the same for every seed")

    # -- the configs the library runs with ------------------------------------------------------
    def darts_config(self, **changes) -> DartsConfig:
        """The DARTS config of these settings (``changes`` replace fields: the one-shot
        searchers train with uniform alphas); checked by :meth:`DartsConfig.validate`."""
        d = self.darts
        config = DartsConfig(mode=d.mode, order=d.order, arch_lr=self.arch_lr, beta_decay=d.beta_decay,
                             warmup_epochs=d.warmup_epochs, gumbel_k=d.gumbel_k, k=self.k, select=d.select,
                             alphas=d.alphas, finetune_steps=d.finetune_steps, verify_epochs=d.verify_epochs,
                             verify_steps=d.verify_steps, verify_seeds=d.verify_seeds)
        config = dataclasses.replace(config, **changes)
        config.validate(self.epochs)
        return config

    def train_config(self, device: str) -> TrainConfig:
        """The weights' training: a half-epoch warm-up of the learning rate, then cosine."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=0.5,
                           seed=self.seed, device=device)

    def for_seed(self, seed: int) -> "SearchSettings":
        """One search of a ``seeds`` run (each seed's study is its own in a shared storage)."""
        optuna = self.optuna
        if self.is_optuna and optuna.storage is not None:
            optuna = dataclasses.replace(optuna, study=f"{optuna.study}-seed-{seed}")
        return dataclasses.replace(self, seed=seed, seeds=None, optuna=optuna)

    # -- the flat form: options, config.yaml, a study's attributes ------------------------------
    def to_flat(self) -> dict[str, Any]:
        """One mapping by option names, as the run folder's config stores it."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("darts", "optuna")}
        flat.update(dataclasses.asdict(self.darts))
        flat.update(dataclasses.asdict(self.optuna))
        flat["set"] = list(self.set)
        flat["seeds"] = None if self.seeds is None else list(self.seeds)
        if not flat.pop("join"):
            return {k: flat[k] for k in FLAT_ORDER}
        return {**{k: flat[k] for k in FLAT_ORDER}, "join": True}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], where: str | None = None) -> "SearchSettings":
        """Settings from a flat mapping (missing names take their defaults). ``where`` names a
        stored config or study: then a value of the wrong kind is an error that says so."""
        parts: dict[str, dict[str, Any]] = {"": {}, "darts": {}, "optuna": {}}
        for key, value in values.items():
            part = PART.get(key)
            if part is None:
                raise InputError(f"{where}: unknown setting {key!r}" if where else f"unknown setting {key!r}")
            if where is not None and value is not None and not _same_kind(value, KINDS[key]):
                raise InputError(f"{where}: setting {key!r} has a bad value {value!r}")
            parts[part][key] = value
        return cls(**parts[""], darts=DartsSettings(**parts["darts"]), optuna=OptunaSettings(**parts["optuna"]))

    @classmethod
    def from_options(cls, given: Mapping[str, Any]) -> "SearchSettings":
        """Settings from the options a user gave (flat names; the rest default). Options the
        chosen searcher would not read are refused, not ignored."""
        searcher = given.get("searcher", DARTS)
        if "seed" in given and "seeds" in given:
            raise InputError("--seed and --seeds do not mix: give every seed to run to --seeds")
        ignored = [k for k in given if PART.get(k) == "optuna"]
        if searcher == DARTS and ignored:
            raise InputError(f"{option(ignored[0])} applies to the Optuna searchers (--searcher tpe, random, nsga2, "
                             f"...), not to the DARTS search")
        if "heartbeat" in given and "://" not in str(given.get("storage", "")):
            raise InputError("--heartbeat applies to a database --storage (postgresql://..., sqlite:///...), whose "
                             "workers send heartbeats; a journal file has none")
        if searcher in NNI_SEARCHERS:
            unused = [k for k in given if k not in NNI_READS]
            if unused:
                raise InputError(f"{option(unused[0])} does not apply to --searcher {searcher} (NNI's strategies "
                                 f"read {', '.join(option(k) for k in NNI_READS if k != 'searcher')})")
        return cls.from_flat(given)


def partial_setattr(obj):
    """A setter for a frozen dataclass's own ``__post_init__`` (normalising what it was given)."""
    return lambda name, value: object.__setattr__(obj, name, value)


PART = {**{f.name: "" for f in dataclasses.fields(SearchSettings) if f.name not in ("darts", "optuna")},
        **{f.name: "darts" for f in dataclasses.fields(DartsSettings)},
        **{f.name: "optuna" for f in dataclasses.fields(OptunaSettings)}}
# the stored order of the flat names (config.yaml is read by people too)
FLAT_ORDER = ("space", "model", "data", "searcher", "epochs", "batch_size", "lr", "weight_decay", "seed", "img_size",
              "mode", "order", "arch_lr", "beta_decay", "warmup_epochs", "gumbel_k", "k", "set", "select", "alphas",
              "finetune_steps", "verify_epochs", "verify_steps", "verify_seeds", "seeds", "trials", "evaluator", "supernet", "objectives", "storage",
              "study", "workers", "pruner", "train_epochs", "proxy", "heartbeat")
# an example value of each setting's kind, for checking a stored config
KINDS: dict[str, Any] = {**{f.name: f.default for f in dataclasses.fields(DartsSettings)},
                         **{f.name: f.default for f in dataclasses.fields(OptunaSettings)},
                         **{f.name: f.default for f in dataclasses.fields(SearchSettings)
                            if f.name not in ("darts", "optuna")},
                         "img_size": 1, "k": 1, "set": [], "seeds": [], "warmup_epochs": 1, "gumbel_k": 1,
                         "supernet": "", "storage": "", "pruner": ""}
DEFAULTS = SearchSettings().to_flat()


def _same_kind(value, example) -> bool:
    """A stored setting of the kind its example has (an int where a float is expected is fine)."""
    if isinstance(example, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(example, bool)
    if isinstance(example, float):
        return isinstance(value, (int, float))
    if isinstance(example, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(example))


# -- read back: --resume and --join ----------------------------------------------------------------
def resumed_settings(run_dir: Path, given: Mapping[str, Any]) -> SearchSettings:
    """The settings a run folder was started with; ``given`` options may change only what a
    resumed study may change (trials, workers, heartbeat)."""
    config = RunFolder.open(run_dir).read_config()
    stored = config.get("settings")
    where = str(run_dir / RunFolder.CONFIG)
    if config.get("scansearch_run") != RUN_FORMAT or not isinstance(stored, dict):
        raise InputError(f"{where}: not a scansearch search run")
    changed = [k for k, v in given.items() if stored.get(k) != v and k not in RESUMABLE]
    if changed:
        k = changed[0]
        raise InputError(f"{option(k)}: {run_dir} was started with {stored.get(k)!r}; --resume keeps the stored "
                         f"settings (drop the option)")
    _check_stored_storage(stored.get("storage"), given.get("storage"), run_dir)
    return SearchSettings.from_flat({**stored, **{k: v for k, v in given.items() if k in RESUMABLE}}, where)


def _check_stored_storage(stored, given, run_dir: Path) -> None:
    """A resumed run writes its study where its config says; a journal file outside the run
    folder is used only when the command line names it again (a config is a file anyone
    may have edited: it must not steer writes out of the folder on its own)."""
    if not isinstance(stored, str) or "://" in stored or given == stored:
        return
    if not Path(stored).resolve().is_relative_to(run_dir.resolve()):
        raise InputError(f"{run_dir / 'config.yaml'}: the study journal {stored} lies outside the run folder; "
                         f"pass --storage {stored} to resume with it")


def settings_from_options(given: Mapping[str, Any], *, resume: bool = False, join: bool = False,
                          run_dir: Path | None = None) -> SearchSettings:
    """The settings a command line asks for: the options ``given`` (flat names), or the
    stored settings of the run in ``run_dir`` on ``resume``, or of the study on ``join``."""
    if join:
        if resume:
            raise InputError("--join starts a run folder of its own for a study's trials; --resume continues a run "
                             "folder")
        return joined_settings(given)
    if resume:
        if run_dir is None:
            raise InputError("--resume needs --out RUN_DIR, the run to continue")
        return resumed_settings(run_dir, given)
    return SearchSettings.from_options(given)


def joined_settings(given: Mapping[str, Any]) -> SearchSettings:
    """``--join``: the settings of the study being joined (stored in it by the search that
    created it), with this machine's --workers and --supernet."""
    storage = given.get("storage")
    if storage is None or "://" not in storage and not storage.endswith((".journal", ".log")):
        raise InputError("--join needs --storage: the database (postgresql://...) or shared .journal file of the study")
    if storage.startswith("sqlite"):
        raise InputError(SQLITE_ONE_PROCESS)
    extra = [k for k in given if k not in JOINABLE]
    if extra:
        raise InputError(f"{option(extra[0])}: a joined study runs with the settings it was created with; drop the "
                         f"option (--join takes only --workers, --supernet, --out and --device)")
    study = given.get("study", DEFAULTS["study"])
    if "://" not in storage and not Path(storage).is_file():  # opening it would create an empty one
        raise InputError(f"--join: --storage {storage} does not exist")
    try:
        stored = stored_settings(open_storage(storage, Path("."), heartbeat=None), study)
    except StudyError as err:
        raise InputError(f"--join: {err}") from None
    for key, value in stored.items():
        if key not in KINDS or key == "join" or value is not None and not _same_kind(value, KINDS[key]):
            raise InputError(f"--join: study {study!r} holds a bad setting {key!r}: {value!r}")
    if stored.get("searcher") not in OPTUNA_SEARCHERS or stored.get("seeds"):
        raise InputError(f"--join: study {study!r} holds settings no Optuna search runs with")
    return SearchSettings.from_flat({**stored, "storage": storage, "study": study, "workers": given.get("workers", 1),
                                     **({"supernet": given["supernet"]} if "supernet" in given else {}),
                                     "join": True})


__all__ = ["DEFAULTS", "DartsSettings", "EVALUATORS", "NNI_SEARCHERS", "OPTUNA_SEARCHERS", "OptunaSettings",
           "RUN_FORMAT", "SEARCHERS", "SearchSettings", "joined_settings", "option", "resumed_settings",
           "settings_from_options"]
