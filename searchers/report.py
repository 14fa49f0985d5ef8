"""How a search ended, for people: the per-layer weights as a rich table and as a heat-map,
the trials of a study as a table, its Pareto front as a plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from optuna.trial import TrialState
from rich.table import Table

from scansearch.genotype import Genotype
from scansearch.plotting import pyplot, save_figure
from scansearch.spaces import NONE


def weights_table(weights: torch.Tensor, candidates, genotype: Genotype, title: str) -> Table:
    """Layers as rows, candidates as columns; the kept directions in bold green with a star
    (the star survives where colour does not: logs, files)."""
    table = Table(title=title, caption="* kept")
    table.add_column("layer", justify="right", no_wrap=True, min_width=5)
    for name in candidates:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for i, (row, layer) in enumerate(zip(weights.tolist(), genotype.layers)):
        kept = {NONE} if layer == NONE else set(layer)
        cells = [f"[bold green]{w:.2f}*[/]" if name in kept else f"{w:.2f} " for name, w in zip(candidates, row)]
        table.add_row(str(i), *cells)
    return table


def plot_heatmap(weights: torch.Tensor, candidates, path: str | Path, title: str = "") -> Path | None:
    """Write a heat-map of the per-layer weights; None when matplotlib (the plot extra) is missing."""
    plt = pyplot()
    if plt is None:
        return None
    data = weights.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(candidates), 1.0 + 0.35 * data.shape[0]))
    image = ax.imshow(data, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(candidates)), candidates, rotation=45, ha="right")
    ax.set_yticks(range(data.shape[0]))
    ax.set_ylabel("layer")
    ax.set_title(title or "architecture weights softmax(alpha)")
    fig.colorbar(image, ax=ax, fraction=0.05)
    return save_figure(plt, fig, path)


def plot_pareto(points: list[tuple[float, float]], front: list[tuple[float, float]], names: tuple[str, str],
                path: str | Path, title: str = "") -> Path | None:
    """Every finished trial on the first two objectives, the Pareto front marked and joined;
    None when matplotlib (the plot extra) is missing."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if points:
        ax.scatter(*zip(*points), s=14, color="0.6", label="trials")
    line = sorted(front)
    ax.plot(*zip(*line), "o-", color="tab:red", markersize=6, label="Pareto front")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title or f"{names[0]} against {names[1]}")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, path)


def selection_table(selections, title: str) -> Table:
    """Candidates (then pattern-and-flip families, then the margin) as rows, layers as
    columns: the rise of the held-out loss when masked, mean and standard error over
    batches, kept ones starred; a margin within the noise is marked."""
    candidates = selections[0].candidates
    fams = list(selections[0].family_scores)
    table = Table(title=title, caption="* kept; loss rise when masked, mean±se over held-out batches; "
                                       "~ margin (last kept - first dropped) within 2 se")
    table.add_column("candidate", no_wrap=True)
    for sel in selections:
        table.add_column(f"layer {sel.layer}", justify="right", no_wrap=True)

    def cell(score) -> str:
        return "-" if score is None else f"{score.loss:+.3f}±{score.loss_se:.3f}"

    for name in candidates:
        row = []
        for sel in selections:
            kept = name in ({NONE} if sel.kept == NONE else set(sel.kept))
            text = cell(sel.scores.get(name))
            row.append(f"[bold green]{text}*[/]" if kept else f"{text} ")
        table.add_row(name, *row)
    for family in fams:
        table.add_row(f"{family}+flip", *(cell(sel.family_scores.get(family)) + " " for sel in selections),
                      style="dim")
    table.add_row("margin", *("-" if sel.margin is None else f"{sel.margin:+.3f}±{sel.margin_se:.3f}"
                              + ("[yellow]~[/]" if sel.within_noise else " ") for sel in selections))
    return table


def verify_table(verify: dict[str, dict[str, Any]], title: str) -> Table:
    """The closing check (see :mod:`.verify`): each genotype's held-out loss and accuracy, and
    its loss minus the found genotype's, paired per batch and seed, with the verdict."""
    table = Table(title=title, caption="mean±se over held-out batches and seeds; verdict at 2 se of the paired "
                                       "difference")
    table.add_column("genotype")
    table.add_column("loss", justify="right")
    table.add_column("top-1", justify="right")
    table.add_column("loss - found", justify="right")
    table.add_column("verdict")
    for name, s in verify.items():
        diff = f"{s['diff']:+.4f}±{s['diff_se']:.4f}" if "diff" in s else ""
        style = {"better than found": "bold yellow", "worse than found": "green"}.get(s.get("verdict", ""), "")
        verdict = f"[{style}]{s['verdict']}[/]" if style else s.get("verdict", "")
        table.add_row(name, f"{s['loss']:.4f}±{s['loss_se']:.4f}", f"{s['top1']:.1%}", diff, verdict)
    return table


def votes_table(votes, title: str) -> Table:
    """Several seeds' choices per layer: the majority's directions, how many seeds kept exactly
    them, and every direction's votes (a LayerVote per layer, see :mod:`.seeds`)."""
    table = Table(title=title)
    table.add_column("layer", justify="right")
    table.add_column("majority")
    table.add_column("agree", justify="right")
    table.add_column("votes (seeds that kept each)")
    for v in votes:
        kept = v.kept if isinstance(v.kept, str) else " ".join(v.kept)
        style = "bold green" if v.agree == v.seeds else ("yellow" if 2 * v.agree <= v.seeds else "")
        table.add_row(str(v.layer), kept, f"[{style}]{v.agree}/{v.seeds}[/]" if style else f"{v.agree}/{v.seeds}",
                      ", ".join(f"{name} {count}" for name, count in v.votes.items()))
    return table


def trials_table(study, objectives, best, title: str, top: int = 8) -> Table:
    """The best trials (or the Pareto front) and the known genotypes' trials, with every
    objective and the layers; ``*`` marks the best (or a Pareto member)."""

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_numbers = {t.number for t in best}
    sign = 1 if study.directions[0].name == "MINIMIZE" else -1
    ranked = sorted(complete, key=lambda t: sign * t.values[0])
    shown = [t for t in ranked if t.number in best_numbers][:top]
    shown += [t for t in ranked[:top] if t not in shown][:max(0, top - len(shown))]
    shown += [t for t in complete if t.user_attrs.get("known") and t not in shown]
    table = Table(title=title, caption="* best" + (" (Pareto front)" if len(objectives) > 1 else ""))
    table.add_column("trial", justify="right")
    table.add_column("known")
    for name in objectives:
        table.add_column(name, justify="right")
    table.add_column("layers")
    for t in sorted(shown, key=lambda t: sign * t.values[0]):
        mark = "*" if t.number in best_numbers else " "
        layers = " | ".join(v.replace("+", " ") for _, v in sorted(t.params.items(), key=lambda kv: int(kv[0][6:])))
        table.add_row(f"{t.number}{mark}", t.user_attrs.get("known", ""), *(f"{v:.4g}" for v in t.values), layers)
    return table
