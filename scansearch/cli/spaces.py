"""`scansearch spaces` and `scansearch inspect`: the shipped spaces and how local each pattern is."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from scansearch.cli.common import InputError, console, parse_grid
from scansearch.plotting import pyplot, save_figure
from scansearch.spaces import (NONE, PatternError, SpaceError, best_subset, get_pattern, is_pattern_name, load_space,
                               pattern_locality, set_locality, shipped_spaces)


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list the shipped search spaces")
    p.set_defaults(func=run_spaces)
    p = sub.add_parser("inspect", help="locality metrics of a space's patterns or of one pattern")
    p.add_argument("name", help="a search space (name or YAML path) or a scan pattern (e.g. w7_flip)")
    p.add_argument("--grid", default="14x14", help="token grid HxW (default 14x14)")
    p.add_argument("--plot", metavar="FILE.png", help="draw each pattern's path on the grid (needs the plot extra)")
    p.set_defaults(func=run_inspect)


def run_spaces(args) -> int:
    table = Table(title="Shipped search spaces")
    for col in ("space", "k", "candidates", "none", "description"):
        table.add_column(col, overflow="fold")
    for name in shipped_spaces():
        s = load_space(name)
        table.add_row(s.name, str(s.k), " ".join(s.candidates), "yes" if s.allows_none else "no", s.description)
    console.print(table)
    return 0


def _resolve(name: str):
    """(title, pattern names, space or None) for a space or a single pattern."""
    if is_pattern_name(name):
        return f"pattern {name}", [name], None
    if name == NONE:
        raise InputError("'none' is not a scan pattern: it means a layer without an SSM")
    try:
        space = load_space(name)
    except SpaceError as err:
        if Path(name).suffix or "/" in name:
            raise
        raise InputError(f"{name!r} is neither a scan pattern nor a search space "
                       f"(spaces: {', '.join(shipped_spaces())})") from err
    return f"space {space.name} (k={space.k})", list(space.patterns), space


def run_inspect(args) -> int:
    H, W = parse_grid(args.grid)
    title, names, space = _resolve(args.name)
    table = Table(title=f"Locality of {title} on a {H}x{W} grid")
    table.add_column("pattern")
    table.add_column("mean neighbour distance", justify="right")
    table.add_column("max neighbour distance", justify="right")
    table.add_column("neighbour steps", justify="right")
    for name in names:
        m = pattern_locality(name, H, W)
        table.add_row(name, f"{m.mean_distance:.2f}", str(m.max_distance), f"{100 * m.neighbour_steps:.1f}%")
    console.print(table)
    if space is not None and len(names) > 1:
        console.print(f"all {len(names)} patterns together: mean smallest neighbour distance "
                      f"{set_locality(names, H, W):.2f}")
        subset, score = best_subset(names, space.k, H, W)
        console.print(f"most local set of k={space.k}: {' '.join(subset)} ({score:.2f})")
    if args.plot:
        path = plot_paths(names, H, W, args.plot)
        console.print(f"paths drawn to {path}")
    return 0


def plot_paths(names, H: int, W: int, out: str) -> Path:
    """One panel per pattern: the scan's path through the token centres, start marked."""
    plt = pyplot()
    if plt is None:
        raise InputError("--plot needs matplotlib: pip install 'scansearch[plot]'")
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"--plot: folder {str(out.parent)!r} does not exist")
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows * H / max(W, 1) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        order = get_pattern(name).order(H, W)
        ys, xs = (order // W).numpy(), (order % W).numpy()
        ax.plot(xs, ys, "-", lw=1, color="tab:blue")
        ax.plot(xs[0], ys[0], "o", color="tab:green", ms=5)
        ax.plot(xs[-1], ys[-1], "s", color="tab:red", ms=5)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
    return save_figure(plt, fig, out)


__all__ = ["plot_paths", "register", "PatternError"]
