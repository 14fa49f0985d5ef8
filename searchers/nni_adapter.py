"""A scansearch space as an NNI model space, so that NNI's one-shot strategies search it.

NNI (optional extra ``nni``; archived at 3.0) brings DARTS, GumbelDARTS, Proxyless and
RandomOneShot. :func:`model_space` wraps a :class:`~scansearch.searchers.supernet.Supernet`:
each scan layer gets one ``InputChoice(n_candidates=N, n_chosen=k, reduction="mean")``
whose inputs are the N one-hot rows of the identity. Whatever NNI puts in the choice's
place therefore returns the layer's candidate weights, which the supernet's fused scan
takes as it takes DARTS' ``softmax(alpha)``:

* DARTS and GumbelDARTS: the (Gumbel-)softmax of NNI's own alphas; the export keeps
  each layer's top k;
* Proxyless: one sampled one-hot a layer and step (NNI's input choice runs one path),
  with its binary-gate gradient; NNI's export samples k by probability, so the top k of
  its probabilities are kept instead;
* RandomOneShot: the mean of k sampled one-hots (1/k on each, as a fixed genotype): a
  uniformly trained supernet (single-path one-shot) whose export is one random genotype.

NNI's export (``{"layer0": [indices], ...}``) becomes a :class:`~scansearch.genotype.Genotype`
with :func:`to_genotype`. The supernet's own
``alphas`` are frozen and unused here. Spaces with ``none`` are refused: an ``InputChoice``
could keep ``none`` beside scan directions, which no genotype means.

NNI pins ``filelock<3.12`` and ``typeguard<4.1.3``, so it belongs in a virtual environment
of its own (see the README).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

from scansearch.errors import InputError
from scansearch.genotype import Genotype
from scansearch.spaces import SpaceError

#: ``--searcher`` name -> NNI strategy class in ``nni.nas.strategy``
NNI_STRATEGIES = {"nni-darts": "DARTS", "nni-gumbel": "GumbelDARTS", "nni-proxyless": "Proxyless",
                  "nni-random": "RandomOneShot"}
INSTALL = ("NNI is not installed: `pip install 'scansearch[nni]'` in a virtual environment of its own "
           "(NNI 3.0 pins filelock<3.12 and typeguard<4.1.3; see the README's NNI section)")


class NNIMissing(InputError, RuntimeError):
    """The ``nni`` extra is not installed."""


def require_nni():
    """``nni.nas`` or :class:`NNIMissing` saying how to install it."""
    try:
        with warnings.catch_warnings():  # NNI 3.0 warns about torch classes it does not know
            warnings.simplefilter("ignore", RuntimeWarning)
            import nni.nas.evaluator.pytorch  # noqa: F401
            import nni.nas.experiment  # noqa: F401
            import nni.nas.nn.pytorch  # noqa: F401
            import nni.nas.strategy  # noqa: F401
    except ImportError as err:
        raise NNIMissing(f"{INSTALL} ({err})") from None
    import nni.nas

    return nni.nas


def layer_label(index: int) -> str:
    return f"layer{index}"


def model_space(supernet, k: int):
    """An NNI ``ModelSpace`` over ``supernet``: per scan layer, choose ``k`` of its candidates."""
    nas = require_nni()
    if any(c == "none" for c in supernet.candidates):
        raise SpaceError(f"space {supernet.space.name}: NNI searchers do not take a space with `none` "
                         f"(an InputChoice could keep none beside scan directions); use the Optuna searchers")
    n = len(supernet.candidates)
    if not 1 <= k <= n:
        raise SpaceError(f"k must be in [1, {n}] for space {supernet.space.name}, got {k}")

    class ScanSpace(nas.nn.pytorch.ModelSpace):
        def __init__(self):
            super().__init__()
            self.supernet = supernet
            supernet.alphas.requires_grad_(False)
            self.choices = nn.ModuleList(nas.nn.pytorch.InputChoice(n, n_chosen=k, reduction="mean",
                                                                    label=layer_label(i))
                                         for i in range(supernet.num_layers))
            self.register_buffer("basis", torch.eye(n), persistent=False)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            rows = list(self.basis.to(images.dtype))
            return self.supernet.model(images, weights=[choice(rows) for choice in self.choices])

    return ScanSpace()


def to_genotype(exported: dict[str, Any], supernet, template: Genotype, provenance: dict[str, Any]) -> Genotype:
    """NNI's exported dict (``{"layer0": [i, ...], ...}``) as a genotype of ``template``'s model."""
    layers = []
    for i in range(supernet.num_layers):
        chosen = exported.get(layer_label(i))
        chosen = [chosen] if isinstance(chosen, int) else chosen
        if not isinstance(chosen, (list, tuple)) or not chosen \
                or not all(isinstance(j, int) and 0 <= j < len(supernet.candidates) for j in chosen):
            raise SpaceError(f"NNI export: {layer_label(i)} = {chosen!r} is not a list of candidate indices")
        layers.append(tuple(supernet.candidates[j] for j in sorted(set(chosen))))
    return Genotype(layers=tuple(layers), model=template.model, space=template.space, grid=template.grid,
                    provenance={**template.provenance, **provenance})


class _Epochs(torch.utils.data.IterableDataset):
    """A scansearch loader as a torch dataset of batches: each pass is the next epoch."""

    def __init__(self, loader):
        super().__init__()
        self.loader, self.epoch = loader, itertools.count()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(next(self.epoch))
        return iter(self.loader)


def dataloader(loader):
    """A torch ``DataLoader`` (traced for NNI) that yields ``loader``'s batches as they are."""
    nas = require_nni()
    return nas.evaluator.pytorch.DataLoader(_Epochs(loader), batch_size=None)


@dataclass
class NNIResult:
    genotype: Genotype
    exported: dict[str, Any]
    probs: list[list[float]] | None  # layers x candidates: NNI's probabilities, where the strategy has them


def _probabilities(nni_supernet, layers: int) -> list[list[float]] | None:
    """softmax(alpha) of each layer's choice, from NNI's architecture parameters (the plain
    softmax: GumbelDARTS' own ``export_probs`` adds Gumbel noise); None without any
    (RandomOneShot)."""
    alphas = {module.label: module._arch_alpha for module in nni_supernet.modules()
              if isinstance(getattr(module, "_arch_alpha", None), torch.Tensor) and hasattr(module, "label")}
    if not alphas:
        return None
    return [[round(p, 6) for p in torch.softmax(alphas[layer_label(i)].detach().float(), -1).tolist()]
            for i in range(layers)]


@contextlib.contextmanager
def _quiet():
    """NNI's and Lightning's INFO logging and warnings off (the progress bar is Lightning's own)."""
    names = ("nni", "lightning", "lightning.pytorch", "pytorch_lightning", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def search(supernet, data, *, strategy: str, k: int, epochs: int, lr: float, weight_decay: float, arch_lr: float,
           seed: int, template: Genotype, root: str, progress: bool = False,
           provenance: dict[str, Any] | None = None) -> NNIResult:
    """Run NNI's one-shot ``strategy`` (a key of :data:`NNI_STRATEGIES`) on the supernet's space:
    weights with AdamW (``lr``, ``weight_decay``), NNI's architecture parameters with its own
    Adam at ``arch_lr`` (not RandomOneShot, which has none), for ``epochs`` epochs."""
    nas = require_nni()
    import pytorch_lightning

    if strategy not in NNI_STRATEGIES:
        raise SpaceError(f"unknown NNI strategy {strategy!r}; choose from {', '.join(NNI_STRATEGIES)}")
    pytorch_lightning.seed_everything(seed, verbose=False)
    with _quiet():
        space = model_space(supernet, k)
        evaluator = nas.evaluator.pytorch.Classification(
            learning_rate=lr, weight_decay=weight_decay, optimizer=torch.optim.AdamW,
            train_dataloaders=dataloader(data.train), val_dataloaders=dataloader(data.val),
            max_epochs=epochs, num_classes=data.num_classes, export_onnx=False, accelerator="cpu", devices=1,
            enable_progress_bar=progress, logger=False, enable_checkpointing=False, enable_model_summary=False,
            default_root_dir=root)
        kwargs = {} if strategy == "nni-random" else {"arc_learning_rate": arch_lr}
        chosen = getattr(nas.strategy, NNI_STRATEGIES[strategy])(**kwargs)
        experiment = nas.experiment.NasExperiment(space, evaluator, chosen)
        experiment.config.experiment_working_directory = root  # NNI's checkpoints: in the run folder
        try:
            experiment.run()
            exported = experiment.export_top_models(formatter="dict")[0]
        finally:
            experiment.stop()
    probs = _probabilities(chosen.supernet, supernet.num_layers)
    if strategy == "nni-proxyless":  # NNI's Proxyless export samples k by probability; keep the top k, as DARTS does
        exported = {layer_label(i): sorted(torch.tensor(row).topk(k).indices.tolist()) for i, row in enumerate(probs)}
    genotype = to_genotype(exported, supernet, template, {"searcher": strategy, "seed": seed, "epochs": epochs,
                                                          "k": k, **(provenance or {})})
    return NNIResult(genotype, exported, probs)


__all__ = ["INSTALL", "NNIMissing", "NNIResult", "NNI_STRATEGIES", "dataloader", "model_space", "require_nni",
           "search", "to_genotype"]
