"""Locality of scan patterns on the grid graph: how far apart a scan puts grid neighbours.

For one pattern: the mean and maximum sequence distance between grid neighbours,
and the share of consecutive steps that move to a grid neighbour. For a set of
patterns (one layer's choice): the mean over neighbour pairs of the smallest
distance any member gives. Cheap, training-free, and a first look at a pattern.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import networkx as nx
import torch

from scansearch.spaces.patterns import get_pattern


@functools.lru_cache(maxsize=64)
def grid_edges(H: int, W: int) -> torch.Tensor:
    """(E, 2) row-major token indices of the 4-neighbour pairs of an H x W grid."""
    graph = nx.grid_2d_graph(H, W)
    edges = [(i * W + j, k * W + l) for (i, j), (k, l) in graph.edges()]
    return torch.tensor(edges, dtype=torch.long).view(-1, 2)


def _neighbour_distances(name: str, H: int, W: int) -> torch.Tensor:
    edges = grid_edges(H, W)
    step = get_pattern(name).inverse(H, W)
    return (step[edges[:, 0]] - step[edges[:, 1]]).abs().double()


@dataclass(frozen=True)
class Locality:
    name: str
    mean_distance: float      # mean sequence distance between grid neighbours
    max_distance: int         # the largest such distance
    neighbour_steps: float    # share of consecutive steps that move to a grid neighbour


def pattern_locality(name: str, H: int, W: int) -> Locality:
    """Locality metrics of one pattern on an H x W grid (a 1x1 grid has none: zeros, and 1.0 steps)."""
    d = _neighbour_distances(name, H, W)
    order = get_pattern(name).order(H, W)
    rows, cols = order // W, order % W
    moves = (rows.diff().abs() + cols.diff().abs()) == 1
    return Locality(
        name=name,
        mean_distance=float(d.mean()) if d.numel() else 0.0,
        max_distance=int(d.max()) if d.numel() else 0,
        neighbour_steps=float(moves.double().mean()) if moves.numel() else 1.0,
    )


def set_locality(names, H: int, W: int) -> float:
    """Mean over neighbour pairs of the smallest sequence distance any of ``names`` gives."""
    names = list(names)
    if not names:
        raise ValueError("set_locality needs at least one pattern")
    d = torch.stack([_neighbour_distances(n, H, W) for n in names]).amin(0)
    return float(d.mean()) if d.numel() else 0.0


def best_subset(names, k: int, H: int, W: int) -> tuple[tuple[str, ...], float]:
    """The k-subset of ``names`` with the smallest set locality (a training-free proxy)."""
    dist = {n: _neighbour_distances(n, H, W) for n in names}
    best, score = None, float("inf")
    for subset in itertools.combinations(names, k):
        s = float(torch.stack([dist[n] for n in subset]).amin(0).mean()) if dist[subset[0]].numel() else 0.0
        if s < score:
            best, score = subset, s
    return best, score
