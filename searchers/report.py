"""How a search ended, for people: the per-layer weights as a rich table and as a heat-map."""
from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

from ..fileio import atomic_path
from ..genotype import Genotype
from ..spaces import NONE


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
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    data = weights.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(candidates), 1.0 + 0.35 * data.shape[0]))
    image = ax.imshow(data, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(candidates)), candidates, rotation=45, ha="right")
    ax.set_yticks(range(data.shape[0]))
    ax.set_ylabel("layer")
    ax.set_title(title or "architecture weights softmax(alpha)")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
