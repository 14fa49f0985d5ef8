"""matplotlib for the figures the toolkit writes (the ``plot`` extra): loaded on demand on
the file-only Agg backend, and saved atomically."""
from __future__ import annotations

from pathlib import Path

from scansearch.fileio import atomic_path


def pyplot():
    """matplotlib's pyplot on the Agg backend; None without the plot extra."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (its suffix the format, PNG without one) atomically, and close it."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
