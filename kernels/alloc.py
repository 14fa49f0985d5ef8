"""Allocation of kernel outputs: ``torch.empty``, or NaN-filled inside :func:`poisoned`.

Tests allocate under ``poisoned()`` so that any element a backend forgets to write
shows up as NaN instead of passing by luck with stale memory.
"""
from __future__ import annotations

import contextlib

import torch

_POISON = [False]


def empty(shape, *, dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialised tensor (NaN-filled while poisoned)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if _POISON[0] and t.is_floating_point():
        t.fill_(float("nan"))
    return t


def empty_like(x: torch.Tensor) -> torch.Tensor:
    return empty(x.shape, dtype=x.dtype, device=x.device)


@contextlib.contextmanager
def poisoned():
    """Fill every buffer allocated through this module with NaN until the block ends."""
    previous = _POISON[0]
    _POISON[0] = True
    try:
        yield
    finally:
        _POISON[0] = previous
