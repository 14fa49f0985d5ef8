"""Scan patterns: the order in which a scan visits the tokens of an H x W grid.

``get_pattern(name).order(H, W)`` is a LongTensor of length ``H*W``: step ``t``
visits the token whose row-major index is ``order[t]``. Every order is a
permutation for every ``H, W >= 1``; no pattern pads the grid.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from scansearch.spaces.errors import PatternError

NONE = "none"  # the special choice "this layer has no SSM" (a MambaOut gated-CNN block)

BASE_PATTERNS = ("h", "v", "w{K}", "snake_h", "snake_v", "diag", "hilbert", "spiral")
_NAME = re.compile(r"^(?P<base>h|v|w(?P<k>[1-9]\d*)|snake_h|snake_v|diag|hilbert|spiral)(?P<flip>_flip)?$")


def _grid(H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(H).repeat_interleave(W)
    cols = torch.arange(W).repeat(H)
    return rows, cols


def _sort_by(key: torch.Tensor) -> torch.Tensor:
    return torch.argsort(key, stable=True)


def _row_major(H: int, W: int) -> torch.Tensor:
    return torch.arange(H * W)


def _column_major(H: int, W: int) -> torch.Tensor:
    return torch.arange(H * W).view(H, W).t().reshape(-1)


def _window(K: int) -> Callable[[int, int], torch.Tensor]:
    def order(H: int, W: int) -> torch.Tensor:
        rows, cols = _grid(H, W)
        windows_per_row = -(-W // K)
        window = (rows // K) * windows_per_row + cols // K
        # windows in row-major order; inside a window, row-major (the token index)
        return _sort_by(window * (H * W) + rows * W + cols)

    return order


def _snake_h(H: int, W: int) -> torch.Tensor:
    grid = torch.arange(H * W).view(H, W).clone()
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


def _snake_v(H: int, W: int) -> torch.Tensor:
    grid = torch.arange(H * W).view(H, W).t().clone()
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


def _diag(H: int, W: int) -> torch.Tensor:
    rows, cols = _grid(H, W)
    # anti-diagonal i + j ascending; along one, top-right to bottom-left (row ascending)
    return _sort_by((rows + cols) * H + rows)


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """Generalized Hilbert curve over the rectangle spanned by (ax, ay) and (bx, by).

    The recursive construction of Cervený's "gilbert" algorithm: it splits the
    rectangle into two or three sub-rectangles, preferring even side lengths, so
    that any width and height are covered exactly once.
    """
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = (ax > 0) - (ax < 0), (ay > 0) - (ay < 0)
    dbx, dby = (bx > 0) - (bx < 0), (by > 0) - (by < 0)
    if h == 1:
        for _ in range(w):
            yield x, y
            x, y = x + dax, y + day
        return
    if w == 1:
        for _ in range(h):
            yield x, y
            x, y = x + dbx, y + dby
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:
        if w2 % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
    else:
        if h2 % 2 and h > 2:
            bx2, by2 = bx2 + dbx, by2 + dby
        yield from _gilbert(x, y, bx2, by2, ax2, ay2)
        yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
        yield from _gilbert(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                            -bx2, -by2, -(ax - ax2), -(ay - ay2))


def _hilbert(H: int, W: int) -> torch.Tensor:
    if W >= H:
        points = _gilbert(0, 0, W, 0, 0, H)
    else:
        points = _gilbert(0, 0, 0, H, W, 0)
    return torch.tensor([y * W + x for x, y in points], dtype=torch.long)


def _spiral(H: int, W: int) -> torch.Tensor:
    grid = torch.arange(H * W).view(H, W)
    parts = []
    top, bottom, left, right = 0, H - 1, 0, W - 1
    while top <= bottom and left <= right:
        parts.append(grid[top, left:right + 1])                       # top row, left to right
        parts.append(grid[top + 1:bottom + 1, right])                 # right column, downwards
        if top < bottom:
            parts.append(grid[bottom, left:right].flip(0))            # bottom row, right to left
        if left < right:
            parts.append(grid[top + 1:bottom, left].flip(0))          # left column, upwards
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return torch.cat(parts)


_BUILDERS: dict[str, Callable[[int, int], torch.Tensor]] = {
    "h": _row_major, "v": _column_major, "snake_h": _snake_h, "snake_v": _snake_v,
    "diag": _diag, "hilbert": _hilbert, "spiral": _spiral,
}


@functools.lru_cache(maxsize=4096)
def _cached_order(name: str, H: int, W: int, device: str) -> torch.Tensor:
    m = _NAME.match(name)
    base = m.group("base")
    build = _window(int(m.group("k"))) if m.group("k") else _BUILDERS[base]
    order = build(H, W)
    if m.group("flip"):
        order = order.flip(0)
    return order.contiguous().to(device)


@functools.lru_cache(maxsize=4096)
def _cached_inverse(name: str, H: int, W: int, device: str) -> torch.Tensor:
    return torch.argsort(_cached_order(name, H, W, "cpu")).to(device)


def _check_grid(H: int, W: int) -> None:
    if not (isinstance(H, int) and isinstance(W, int)) or H < 1 or W < 1:
        raise PatternError(f"grid must be two positive integers, got {H!r} x {W!r}")


@dataclass(frozen=True)
class Pattern:
    """One scan pattern; orders and inverses are cached per (name, H, W, device)."""

    name: str

    @property
    def base(self) -> str:
        return self.name[:-5] if self.is_flip else self.name

    @property
    def is_flip(self) -> bool:
        return self.name.endswith("_flip")

    @property
    def window(self) -> int | None:
        """The window size K of a ``w{K}`` pattern, else None."""
        k = _NAME.match(self.name).group("k")
        return int(k) if k else None

    def order(self, H: int, W: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Step t visits row-major token ``order[t]``. Shared cached tensor: do not modify."""
        _check_grid(H, W)
        return _cached_order(self.name, H, W, str(torch.device(device)))

    def inverse(self, H: int, W: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Token ``i`` is visited at step ``inverse[i]``; ``order[inverse] == arange``."""
        _check_grid(H, W)
        return _cached_inverse(self.name, H, W, str(torch.device(device)))


def is_pattern_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.match(name) is not None


def get_pattern(name: str) -> Pattern:
    """The pattern called ``name`` (``h``, ``w7_flip``, ``hilbert``, ...)."""
    if name == NONE:
        raise PatternError("'none' is not a scan pattern: it is the choice of a layer without an SSM")
    if not is_pattern_name(name):
        raise PatternError(f"unknown scan pattern {name!r} (known: {', '.join(BASE_PATTERNS)}, "
                           "each also as <name>_flip; w{K} for any K >= 1)")
    return Pattern(name)


def orders(names, H: int, W: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """The (K, H*W) order table of several patterns, as the multi-direction scan takes it."""
    return torch.stack([get_pattern(n).order(H, W, device) for n in names])
