"""What every searcher behind :func:`~scansearch.searchers.pipeline.run_search` provides.

A search has three parts: the searcher proposes genotypes (DARTS through its alphas, an
Optuna sampler through trials, NNI through its strategy), an evaluator scores them (the
supernet's shared weights, a short training, a zero-cost proxy) and the run folder
remembers (config, log, checkpoint, genotype, summary). The pipeline owns the run folder,
its lock, resume, ``--join``, seeds and torchrun; a :class:`Searcher` does the rest in four
steps, each before anything is written unless it says otherwise:

1. :meth:`~Searcher.check`: what needs files or extras (a database, NNI, another run);
2. :meth:`~Searcher.on_resume`: on ``--resume``, whether the folder can continue;
3. :meth:`~Searcher.prepare`: space, data, supernet and configs (:func:`prepare`);
4. :meth:`~Searcher.run`: the search into the folder, its tables printed; a :class:`SearchOutcome`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from scansearch.data import DataBundle, default_img_size, load_data
from scansearch.genotype import Genotype
from scansearch.models import get_preset
from scansearch.models.options import check_model_options, parse_overrides
from scansearch.searchers.darts import DartsConfig, model_record
from scansearch.searchers.run import RunFolder
from scansearch.searchers.settings import RUN_FORMAT, SearchSettings
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import SearchSpace, load_space
from scansearch.train import TrainConfig


@dataclass
class RunContext:
    """How a search runs, beside what it searches: the device, the console its tables go to,
    whether progress is shown."""

    device: str = "auto"
    quiet: bool = False
    console: Console = field(default_factory=Console)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)


@dataclass
class Prepared:
    """What a search runs on, built and checked before its run folder exists."""

    space: SearchSpace            # with the settings' k kept
    data: DataBundle
    supernet: Supernet
    train_config: TrainConfig
    darts_config: DartsConfig

    def template(self) -> Genotype:
        """The genotype found layers go into: the model searched, its grid and settings, the space."""
        layers = (self.space.patterns[:self.space.k],) * self.supernet.num_layers
        return Genotype(layers=layers, model=self.supernet.preset, space=self.space.ref,
                        grid=tuple(self.supernet.token_grid), provenance=model_record(self.supernet))


@dataclass
class SearchOutcome:
    """What a search found: its genotype, its run folder, the per-layer selection scores
    (DARTS with selection by effect; None otherwise) and the genotype worth training (the
    found one, or a fixed one that beat it in the closing check)."""

    genotype: Genotype | None
    folder: RunFolder | None
    scores: list[dict[str, float]] | None = None
    to_train: Path | None = None


def prepare(settings: SearchSettings, device: str, **darts_changes: Any) -> Prepared:
    """Space, data, supernet and configs from the settings (a user error for anything that
    cannot be used). ``darts_changes`` replace fields of the DARTS config (the one-shot
    searchers train their supernet with uniform alphas)."""
    space = load_space(settings.space)
    preset = get_preset(settings.model)
    overrides = parse_overrides(settings.set)
    check_model_options(preset.name, settings.img_size, overrides)
    kept = space.keep(settings.k)
    img_size = settings.img_size
    if img_size is None:
        img_size = default_img_size(settings.data, preset.config.get("img_size", 224))
    data = load_data(settings.data, img_size=img_size, batch_size=settings.batch_size, seed=settings.seed)
    torch.manual_seed(settings.seed)
    supernet = Supernet(preset.name, space, num_classes=data.num_classes, img_size=data.img_size,
                        in_chans=data.in_chans, gumbel_k=settings.darts.gumbel_k, **overrides)
    train_config = settings.train_config(device)
    train_config.validate()
    return Prepared(kept, data, supernet, train_config, settings.darts_config(**darts_changes))


class Searcher(ABC):
    """One kind of search; see the module docstring for the steps the pipeline calls."""

    # under torchrun: True when every rank runs the search (rank 0 writes); False when rank 0
    # alone runs it and the other ranks only train the trials it sends (the Optuna searchers)
    all_ranks = True

    def __init__(self, settings: SearchSettings, ctx: RunContext):
        self.settings, self.ctx = settings, ctx

    def check(self, resume: bool) -> None:
        """Checks that need files, a database or an extra; may settle ``self.settings``."""

    def on_resume(self, folder: RunFolder) -> bool | SearchOutcome:
        """On ``--resume``: True to continue the folder, False to start it again from the
        first epoch, or the outcome of a search that had finished."""
        return True

    def prepare(self) -> Prepared:
        return prepare(self.settings, self.ctx.device)

    def record(self, prepared: Prepared) -> dict[str, Any]:
        """What the new run folder's ``config.yaml`` holds."""
        return {"scansearch_run": RUN_FORMAT, "searcher": self.settings.searcher, "settings": self.settings.to_flat()}

    @abstractmethod
    def describe(self, resume: bool) -> str:
        """The log's first line for this search."""

    @abstractmethod
    def run(self, prepared: Prepared, folder: RunFolder, resume: bool) -> SearchOutcome:
        """The search into ``folder``; its tables go to the context's console."""


__all__ = ["Prepared", "RunContext", "SearchOutcome", "Searcher", "prepare"]
