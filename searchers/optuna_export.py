"""What an Optuna search leaves in its run folder: the best genotype, the Pareto front (one
genotype per member, and a plot), every trial and the summary; and the table it prints."""
from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from scansearch.fileio import atomic_write_text
from scansearch.searchers.report import plot_pareto, trials_table
from scansearch.searchers.run import RunFolder
from scansearch.searchers.study import FINISHED
from scansearch.searchers.verify import as_genotype


def export(study, result, encoding, template, settings, folder: RunFolder, seconds: float, ctx):
    """The best genotype, the Pareto front, every trial and the summary into the run folder;
    returns the best genotype."""
    objectives = settings.optuna.objective_list
    genotype = trial_genotype(result.best[0], encoding, template, settings)
    folder.write_genotype(genotype)
    pareto = _write_pareto(folder, result, encoding, template, settings) if len(objectives) > 1 else []
    plot = _plot_pareto(study, result, objectives, folder, settings) if pareto else None
    trials = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    folder.write_json("trials.json", {"objectives": list(objectives), "trials": trials})
    folder.write_summary({"genotype": genotype.to_dict(), "seconds": round(seconds, 1),
                          "trials": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
                          "best": trial_record(result.best[0]), "pareto": pareto,
                          "pareto_plot": plot.name if plot else None})
    folder.log(f"finished: best trial {result.best[0].number}, genotype written")
    ctx.print(trials_table(study, objectives, result.best, f"{settings.searcher} ({settings.optuna.evaluator}): "
                           f"the best trials and the known genotypes"))
    ctx.print(f"{len(trials)} trials in {seconds:.0f} s; genotype: {folder.file(RunFolder.GENOTYPE)}"
              + (f"; Pareto front: {len(pareto)} genotypes in {folder.file('pareto')}" if pareto else "")
              + (f", plotted in {plot}" if plot else " (its plot needs the plot extra)" if pareto else ""),
              highlight=False)
    known = result.best[0].user_attrs.get("known")
    if known:
        ctx.print(f"the best trial is the fixed genotype {known}: the search found nothing better here",
                  highlight=False)
    return genotype


def trial_genotype(trial, encoding, template, settings):
    """A trial's genotype, its provenance naming the search, the trial and its objective values."""
    layers = encoding.decode(trial.params)
    base = as_genotype(template, layers, "trial")
    o = settings.optuna
    prov = {"searcher": settings.searcher, "evaluator": o.evaluator, "trial": trial.number,
            "trials": o.trials, "seed": settings.seed, "data": str(settings.data),
            "k": encoding.k, **{name: round(float(v), 6) for name, v in zip(o.objective_list, trial.values)},
            **{k: v for k, v in template.provenance.items() if k in ("img_size", "model_overrides")}}
    if trial.user_attrs.get("known"):
        prov["known"] = trial.user_attrs["known"]
    return dataclasses.replace(base, space=template.space, provenance=prov)


def trial_record(trial) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "values": trial.values, "params": trial.params,
            "metrics": {k: v for k, v in trial.user_attrs.items()}}


def _write_pareto(folder: RunFolder, result, encoding, template, settings) -> list[dict]:
    """RUN/pareto/: one genotype per member of the front, replacing an earlier export whole."""
    out, fresh = folder.path / "pareto", folder.path / "pareto.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    members = []
    for rank, trial in enumerate(result.best):
        name = f"{rank:02d}-trial-{trial.number}.yaml"
        atomic_write_text(fresh / name, trial_genotype(trial, encoding, template, settings).to_yaml())
        members.append({"file": f"pareto/{name}", **trial_record(trial)})
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)
    return members


def _plot_pareto(study, result, objectives, folder: RunFolder, settings):
    """RUN/pareto.png: the first two objectives of every finished trial, the front joined."""
    points = [tuple(t.values[:2]) for t in study.get_trials(deepcopy=False, states=FINISHED) if t.values]
    front = [tuple(t.values[:2]) for t in result.best]
    return plot_pareto(points, front, (objectives[0], objectives[1]), folder.file("pareto.png"),
                       f"{settings.searcher}: {len(points)} trials, {len(front)} on the Pareto front")


__all__ = ["export", "trial_genotype", "trial_record"]
