"""Argument checks shared by every backend: one clear ValueError per mistake.

Each message names the function, the argument, the expected shape with its
symbols filled in, and what was given.
"""
from __future__ import annotations

import weakref

import torch
from torch._subclasses.fake_tensor import is_fake

from scansearch.errors import ScanSearchError

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class OrderError(ScanSearchError, ValueError):
    """An orders table with a row that is not a permutation of range(L): the calling code's mistake, not
    the user's input (internal, like ``ShapeError``)."""


# Verdicts on order tables, so that a model passing the same table every forward pays
# for the check (and its GPU sync) once. Key: the table's storage (whose Python object
# torch keeps while any tensor uses it, so views of one cached table share it) and
# geometry; value: (weakref to that storage, version checked). The weakref guards against
# a new table reusing a dead one's id and address; the version catches in-place changes.
_verified: dict[tuple, tuple[weakref.ref, int]] = {}


def _fmt(names: str, values: tuple) -> str:
    return f"({names}) = {tuple(values)}"


def _check(fn: str, name: str, t, names: str, expected: tuple, device: torch.device, optional=False):
    if t is None:
        if optional:
            return
        raise ValueError(f"{fn}: {name} is required, expected shape {_fmt(names, expected)}")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT:
        raise ValueError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{fn}: {name} must have shape {_fmt(names, expected)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{fn}: {name} is on {t.device} but u is on {device}; put every input on one device")


def _check_u(fn: str, u, ndim: int, names: str):
    if not isinstance(u, torch.Tensor):
        raise ValueError(f"{fn}: u must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() != ndim:
        raise ValueError(f"{fn}: u must have shape ({names}), got {tuple(u.shape)}")
    if u.dtype not in _FLOAT:
        raise ValueError(f"{fn}: u must be float16, bfloat16, float32 or float64, got {u.dtype}")
    if u.shape[-1 if fn == "multi_scan" else 1] == 0 or u.shape[0] == 0:
        raise ValueError(f"{fn}: u must not be empty, got shape {tuple(u.shape)}")


def check_multi_scan(u, delta, A, B, C, D, orders, weights, delta_bias, z, scan_order: bool, merge: bool = True):
    """Validate ``multi_scan`` inputs; returns (batch, L, K, dim, N)."""
    fn = "multi_scan"
    if not isinstance(A, torch.Tensor) or A.dim() != 3:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"{fn}: A must have shape (K, dim, N), got {got}")
    K, dim, N = A.shape
    if scan_order:
        _check_u(fn, u, 4, "batch, L, K, dim")
        batch, L = u.shape[:2]
        _check(fn, "u", u, "batch, L, K, dim", (batch, L, K, dim), u.device)
    else:
        _check_u(fn, u, 3, "batch, L, dim")
        batch, L = u.shape[:2]
        _check(fn, "u", u, "batch, L, dim", (batch, L, dim), u.device)
    if L == 0:
        raise ValueError(f"{fn}: the sequence length L must be at least 1, got u of shape {tuple(u.shape)}")
    dev = u.device
    _check(fn, "A", A, "K, dim, N", (K, dim, N), dev)
    _check(fn, "delta", delta, "batch, L, K, dim", (batch, L, K, dim), dev)
    _check(fn, "B", B, "batch, L, K, N", (batch, L, K, N), dev)
    _check(fn, "C", C, "batch, L, K, N", (batch, L, K, N), dev)
    _check(fn, "D", D, "K, dim", (K, dim), dev, optional=True)
    _check(fn, "delta_bias", delta_bias, "K, dim", (K, dim), dev, optional=True)
    if not merge and weights is not None:
        raise ValueError(f"{fn}: weights must be None with merge=False (each direction's output comes back "
                         f"unweighted: weight them after the call)")
    _check(fn, "weights", weights, "K", (K,), dev, optional=True)
    _check(fn, "z", z, "batch, L, dim", (batch, L, dim), dev, optional=True)
    if not isinstance(orders, torch.Tensor) or orders.dtype not in (torch.int32, torch.int64):
        got = orders.dtype if isinstance(orders, torch.Tensor) else type(orders).__name__
        raise ValueError(f"{fn}: orders must be an int64 (or int32) tensor of shape (K, L) = ({K}, {L}), got {got}")
    if tuple(orders.shape) != (K, L):
        raise ValueError(f"{fn}: orders must have shape (K, L) = ({K}, {L}), got {tuple(orders.shape)}")
    if orders.device != dev:
        raise ValueError(f"{fn}: orders is on {orders.device} but u is on {dev}; put every input on one device")
    check_orders(fn, orders)
    return batch, L, K, dim, N


def _traced(t: torch.Tensor) -> bool:
    """True while tracing (torch.compile, fake or meta tensors): there are no values to check;
    the custom op checks the real table when the compiled code runs."""
    return torch.compiler.is_compiling() or t.device.type == "meta" or is_fake(t)


def check_orders(fn: str, orders: torch.Tensor) -> None:
    """Raise :class:`OrderError` unless every row of the (K, L) integer table ``orders`` is a
    permutation of range(L). Cached per table and version: repeat calls cost no GPU sync."""
    if _traced(orders):
        return
    storage = orders.untyped_storage()
    key = (id(storage), orders.data_ptr(), tuple(orders.shape), orders.stride(), orders.dtype, orders.device)
    # inference tensors have no version counter: their in-place edits (in inference mode) go unseen
    version = -1 if orders.is_inference() else orders._version
    seen = _verified.get(key)
    if seen is not None and seen[0]() is storage and seen[1] == version:
        return
    _check_permutations(fn, orders)
    _verified[key] = (weakref.ref(storage, lambda _, key=key: _verified.pop(key, None)), version)


def _check_permutations(fn: str, orders: torch.Tensor) -> None:
    """The check itself: one device-to-host sync, and a row-by-row search only on failure."""
    K, L = orders.shape
    steps = torch.arange(L, device=orders.device, dtype=orders.dtype)
    if bool((orders.sort(dim=1).values == steps).all()):
        return
    table = orders.detach().cpu().long()
    for row, entries in enumerate(table):
        outside = (entries < 0) | (entries >= L)
        if outside.any():
            problem = f"entry {int(entries[outside][0])} out of range"
        else:
            counts = torch.bincount(entries, minlength=L)
            if bool((counts == 1).all()):
                continue
            value = int((counts > 1).nonzero()[0])
            times = int(counts[value])
            problem = f"{value} appears {'twice' if times == 2 else f'{times} times'}"
        raise OrderError(f"{fn}: orders row {row} is not a permutation of range({L}): {problem}")


def refuse_complex(fn: str, A, B, C) -> None:
    """One clear ValueError for a complex A, B or C: mamba's complex (S4D-complex) variant
    is not implemented here."""
    if isinstance(A, torch.Tensor) and A.is_complex():
        raise ValueError(f"{fn}: complex A (as in S4D-complex) is not supported; pass a real A")
    for name, t in (("B", B), ("C", C)):
        if isinstance(t, torch.Tensor) and t.is_complex():
            raise ValueError(f"{fn}: complex {name} is not supported (complex B and C go with a complex A, "
                             f"which is not supported either); pass a real {name}")


def _check_bc(fn: str, name: str, t, batch: int, dim: int, N: int, L: int, device: torch.device) -> int:
    """B or C of ``selective_scan``: (batch, N, L), (batch, groups, N, L) with groups dividing
    dim, or time-invariant (dim, N). Returns its number of groups (dim for (dim, N))."""
    shapes = (f"(batch, N, L) = {(batch, N, L)}, (batch, groups, N, L) = ({batch}, groups, {N}, {L}) "
              f"with groups dividing dim = {dim}, or (dim, N) = {(dim, N)}")
    if t is None:
        raise ValueError(f"{fn}: {name} is required, expected shape {shapes}")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT:
        raise ValueError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    shape = tuple(t.shape)
    groups = shape[1] if t.dim() == 4 else dim if t.dim() == 2 else 1
    if t.dim() == 4 and (groups == 0 or dim % groups):
        raise ValueError(f"{fn}: {name} has {groups} groups, which must divide dim = {dim}")
    if shape not in ((batch, N, L), (batch, groups, N, L), (dim, N)):
        raise ValueError(f"{fn}: {name} must have shape {shapes}; got {shape}")
    if t.device != device:
        raise ValueError(f"{fn}: {name} is on {t.device} but u is on {device}; put every input on one device")
    return groups


def check_selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """Validate ``selective_scan`` inputs; returns (batch, dim, L, N, groups_B, groups_C), where
    a time-invariant (dim, N) B or C counts as dim groups."""
    fn = "selective_scan"
    _check_u(fn, u, 3, "batch, dim, L")
    batch, dim, L = u.shape
    if L == 0:
        raise ValueError(f"{fn}: the sequence length L must be at least 1, got u of shape {tuple(u.shape)}")
    dev = u.device
    refuse_complex(fn, A, B, C)
    if not isinstance(A, torch.Tensor) or A.dim() != 2:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"{fn}: A must have shape (dim, N) with dim = {dim}, got {got}")
    N = A.shape[1]
    _check(fn, "A", A, "dim, N", (dim, N), dev)
    _check(fn, "delta", delta, "batch, dim, L", (batch, dim, L), dev)
    groups_B = _check_bc(fn, "B", B, batch, dim, N, L, dev)
    groups_C = _check_bc(fn, "C", C, batch, dim, N, L, dev)
    _check(fn, "D", D, "dim", (dim,), dev, optional=True)
    _check(fn, "z", z, "batch, dim, L", (batch, dim, L), dev, optional=True)
    _check(fn, "delta_bias", delta_bias, "dim", (dim,), dev, optional=True)
    return batch, dim, L, N, groups_B, groups_C
