"""The DARTS searcher: a supernet trained with DARTS, selection by effect, a closing check.

The alphas propose, the supernet's held-out loss scores (:mod:`.darts`, :mod:`.selection`),
and the run folder keeps the checkpoint every epoch, so ``--resume`` continues where the
search stopped. Runs across processes under torchrun: rank 0 creates and writes the run
folder, every rank trains.
"""
from __future__ import annotations

import time
from pathlib import Path

from scansearch import distributed
from scansearch.errors import TrainError
from scansearch.searchers.darts import search
from scansearch.searchers.report import plot_heatmap, selection_table, verify_table, weights_table
from scansearch.searchers.run import RunFolder
from scansearch.searchers.searcher import Prepared, Searcher, SearchOutcome
from scansearch.searchers.verify import FOUND, REFERENCES, as_genotype, recommend
from scansearch.train import CHECKPOINT_FORMAT
from scansearch.training_state import load_checkpoint


class DartsSearcher(Searcher):
    def on_resume(self, folder: RunFolder) -> bool:
        """Continue from the checkpoint (which must be whole and ours); without one the search
        died in its first epoch and starts again from the first epoch."""
        path = folder.file(RunFolder.CHECKPOINT)
        if not path.exists():
            return False
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"{path}: not a scansearch training checkpoint")
        return True

    def prepare(self) -> Prepared:
        prepared = super().prepare()
        if distributed.is_distributed():  # every batch must split over the ranks (checked before the folder)
            distributed.check_shardable(prepared.data.train, "training")
            if prepared.darts_config.mode == "bilevel" and prepared.darts_config.alphas == "learned":
                distributed.check_shardable(prepared.data.val, "validation")
        return prepared

    def record(self, prepared: Prepared) -> dict:
        return {**super().record(prepared), "data": prepared.data.describe(),
                "train": prepared.train_config.to_dict(), "darts": prepared.darts_config.to_dict()}

    def describe(self, resume: bool) -> str:
        s = self.settings
        return ("resumed" if resume else "started") + f": {s.searcher} on {s.space}, {s.model}, data {s.data}"

    def run(self, prepared: Prepared, folder: RunFolder, resume: bool) -> SearchOutcome:
        s, ctx, supernet = self.settings, self.ctx, prepared.supernet
        space = prepared.space.name
        if not ctx.quiet:
            ctx.print(f"searching [bold]{space}[/] ({len(prepared.space.candidates)} candidates, keep "
                      f"{prepared.space.k}) on {s.model} with {s.data}, seed {s.seed}: {supernet.num_layers} layers, "
                      f"{s.epochs} epochs -> {folder.path}", highlight=False)
        started = time.perf_counter()
        result = search(supernet, prepared.data, prepared.train_config, prepared.darts_config, folder, resume=resume,
                        progress=not ctx.quiet, provenance={"data": str(s.data)})
        seconds = time.perf_counter() - started
        if not distributed.is_main():  # rank 0 writes and reports what every rank found
            return SearchOutcome(result.genotype, folder, None, folder.file(RunFolder.GENOTYPE))
        heatmap = plot_heatmap(result.weights, supernet.candidates, folder.file(RunFolder.HEATMAP),
                               title=f"{space} on {s.data}")
        folder.write_summary({"genotype": result.genotype.to_dict(), "val_top1": result.train.val["top1"],
                              "best_val_top1": result.train.best_val_top1, "seconds": round(seconds, 1),
                              "heatmap": heatmap.name if heatmap else None})
        folder.log(f"finished: val top-1 {result.train.val['top1']:.4f}, genotype written")
        ctx.print(weights_table(result.weights, supernet.candidates, result.genotype,
                                f"{space}: softmax(alpha) per layer, kept directions in bold green"))
        selections, verify = result.extra["selections"], result.extra["verify"]
        if selections:
            ctx.print(selection_table(selections, f"{space}: selection by effect per layer"))
        n, seeds = s.darts.verify_epochs, s.darts.verify_seeds
        how = (f"each trained {n} epoch{'s' if n != 1 else ''} from scratch" if n else
               f"each fine-tuned {s.darts.verify_steps} steps from the supernet before selection") + f", {seeds} seeds"
        ctx.print(verify_table(verify, f"the found genotype against fixed ones ({how}; held-out batches that neither "
                                       "the selection nor a fine-tune read)"))
        ctx.print(f"supernet val top-1 {result.train.val['top1']:.1%}; genotype: {folder.file(RunFolder.GENOTYPE)}"
                  + (f"; heat-map: {heatmap}" if heatmap else " (heat-map needs the plot extra)"), highlight=False)
        to_train = folder.file(RunFolder.GENOTYPE)
        choice, why = recommend(verify)
        if choice != FOUND:
            to_train = _write_reference(folder, result.genotype, choice)
            ctx.print(f"{why}: {to_train} holds {choice}; train it (or both) before trusting the search",
                      highlight=False)
        else:
            ctx.print(why, highlight=False)
        scores = [{name: score.loss for name, score in sel.scores.items()} for sel in selections]
        return SearchOutcome(result.genotype, folder, scores, to_train)


def _write_reference(folder: RunFolder, found, name: str) -> Path:
    """A fixed genotype (cross, LocalMamba's baseline) for the model searched: same preset,
    grid and recorded model settings, so that training it compares like with like."""
    path = folder.file(f"{name}.yaml")
    as_genotype(found, (REFERENCES[name],) * len(found.layers), name).save(path)
    return path


__all__ = ["DartsSearcher"]
