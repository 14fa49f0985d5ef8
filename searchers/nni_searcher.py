"""NNI's one-shot strategies (nni-darts, nni-gumbel, nni-proxyless, nni-random) as a searcher.

The space becomes an NNI model space (:mod:`.nni_adapter`) over the same supernet DARTS
trains; NNI's strategy proposes and trains it for ``epochs`` epochs and exports each
layer's top ``k`` candidates, which become the run's ``genotype.yaml``. NNI is an optional
extra that lives in a virtual environment of its own; without it these searchers say how to
install it, before anything is written.

NNI keeps no checkpoint this toolkit can continue from, so ``--resume`` of an interrupted
NNI search starts it again from its first epoch (a finished one is left as it is).
"""
from __future__ import annotations

import time

import torch

from scansearch.errors import InputError
from scansearch.searchers.nni_adapter import NNIMissing, model_space, require_nni, search
from scansearch.searchers.report import plot_heatmap, weights_table
from scansearch.searchers.run import RunFolder
from scansearch.searchers.searcher import Prepared, Searcher, SearchOutcome, prepare

NNI_DIR = "nni"


class NNISearcher(Searcher):
    def check(self, resume: bool) -> None:
        """NNI installed (the options it would not read were refused with the settings)."""
        if resume:
            return
        try:
            require_nni()
        except NNIMissing as err:
            raise InputError(f"--searcher {self.settings.searcher}: {err}") from None

    def on_resume(self, folder: RunFolder) -> bool | SearchOutcome:
        if folder.file(RunFolder.SUMMARY).exists():
            folder.log("resumed: finished before, nothing to do")
            return SearchOutcome(folder.read_genotype(), folder, None, folder.file(RunFolder.GENOTYPE))
        return True  # NNI keeps no checkpoint: the search runs again from its first epoch

    def prepare(self) -> Prepared:
        prepared = prepare(self.settings, self.ctx.device, alphas="uniform", warmup_epochs=0)
        model_space(prepared.supernet, prepared.space.k)  # a space NNI cannot search is refused before the folder
        return prepared

    def record(self, prepared: Prepared) -> dict:
        return {**super().record(prepared), "data": prepared.data.describe()}

    def describe(self, resume: bool) -> str:
        s = self.settings
        return ("resumed (from the first epoch)" if resume else "started") \
            + f": {s.searcher} on {s.space}, {s.model}, data {s.data}"

    def run(self, prepared: Prepared, folder: RunFolder, resume: bool) -> SearchOutcome:
        s, ctx, space, supernet = self.settings, self.ctx, prepared.space, prepared.supernet
        strategy = s.searcher[4:]
        if not ctx.quiet:
            ctx.print(f"searching [bold]{space.name}[/] with NNI's {strategy} strategy ({len(space.candidates)} "
                      f"candidates, keep {space.k}) on {s.model} with {s.data}, seed {s.seed}: "
                      f"{supernet.num_layers} layers, {s.epochs} epochs -> {folder.path}", highlight=False)
        started = time.perf_counter()
        result = search(supernet, prepared.data, strategy=s.searcher, k=space.k, epochs=s.epochs, lr=s.lr,
                        weight_decay=s.weight_decay, arch_lr=s.arch_lr, seed=s.seed, template=prepared.template(),
                        root=str(folder.file(NNI_DIR)), progress=not ctx.quiet, provenance={"data": str(s.data)})
        seconds = time.perf_counter() - started
        folder.write_genotype(result.genotype)
        heatmap = None
        if result.probs is not None:
            weights = torch.tensor(result.probs)
            heatmap = plot_heatmap(weights, supernet.candidates, folder.file(RunFolder.HEATMAP),
                                   title=f"{space.name} on {s.data} (NNI {strategy})")
            ctx.print(weights_table(weights, supernet.candidates, result.genotype,
                                    f"{space.name}: NNI's probabilities per layer, kept directions in bold green"))
        folder.write_summary({"genotype": result.genotype.to_dict(), "seconds": round(seconds, 1),
                              "exported": result.exported, "probabilities": result.probs,
                              "heatmap": heatmap.name if heatmap else None})
        folder.log(f"finished in {seconds:.0f} s: genotype written")
        ctx.print(f"NNI {strategy}: {seconds:.0f} s; genotype: {folder.file(RunFolder.GENOTYPE)}", highlight=False)
        return SearchOutcome(result.genotype, folder, None, folder.file(RunFolder.GENOTYPE))


__all__ = ["NNI_DIR", "NNISearcher"]
