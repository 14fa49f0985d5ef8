"""Scan patterns: permutations on every grid, LocalMamba's local scan, caching, names."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scansearch import get_pattern
from scansearch.spaces import PatternError, get_pattern as get_pattern_from_spaces, orders

BASES = ["h", "v", "w1", "w2", "w3", "w7", "w16", "snake_h", "snake_v", "diag", "hilbert", "spiral"]
ALL = BASES + [f"{b}_flip" for b in BASES]


def test_exported_from_both_places():
    assert get_pattern is get_pattern_from_spaces


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 23), st.integers(1, 23))
def test_every_order_is_a_permutation(H, W):
    for name in ALL:
        pattern = get_pattern(name)
        order, inverse = pattern.order(H, W), pattern.inverse(H, W)
        assert order.dtype == torch.long and order.shape == (H * W,)
        assert torch.equal(order.sort().values, torch.arange(H * W)), (name, H, W)
        assert torch.equal(order[inverse], torch.arange(H * W))
        assert torch.equal(inverse[order], torch.arange(H * W))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 9))
def test_window_of_any_size_on_any_grid(H, W, K):
    order = get_pattern(f"w{K}").order(H, W)
    assert torch.equal(order.sort().values, torch.arange(H * W))
    rows, cols = order // W, order % W
    # windows are contiguous runs visited in row-major window order
    window = (rows // K) * (-(-W // K)) + cols // K
    assert torch.all(window.diff() >= 0)


def _localmamba_local_scan(H, W, K):
    """LocalMamba's local scan, derived independently by reshaping: windows row-major, inside row-major."""
    grid = torch.arange(H * W).view(H // K, K, W // K, K)
    return grid.permute(0, 2, 1, 3).reshape(-1)


@pytest.mark.parametrize("side", [14, 56])
@pytest.mark.parametrize("K", [2, 7])
def test_windows_equal_localmamba(side, K):
    expected = _localmamba_local_scan(side, side, K)
    assert torch.equal(get_pattern(f"w{K}").order(side, side), expected)
    assert torch.equal(get_pattern(f"w{K}_flip").order(side, side), expected.flip(0))


@pytest.mark.parametrize("side", [14, 56])
def test_rows_and_columns_equal_localmamba(side):
    grid = torch.arange(side * side).view(side, side)
    assert torch.equal(get_pattern("h").order(side, side), grid.reshape(-1))
    assert torch.equal(get_pattern("v").order(side, side), grid.t().reshape(-1))
    assert torch.equal(get_pattern("h_flip").order(side, side), grid.reshape(-1).flip(0))
    assert torch.equal(get_pattern("v_flip").order(side, side), grid.t().reshape(-1).flip(0))


def test_small_orders_by_hand():
    # 3 x 4 grid, row-major indices:  0  1  2  3 /  4  5  6  7 /  8  9 10 11
    assert get_pattern("spiral").order(3, 4).tolist() == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]
    assert get_pattern("snake_h").order(3, 4).tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert get_pattern("snake_v").order(3, 4).tolist() == [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3]
    assert get_pattern("diag").order(3, 4).tolist() == [0, 1, 4, 2, 5, 8, 3, 6, 9, 7, 10, 11]
    assert get_pattern("w2").order(3, 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11]
    assert get_pattern("w3").order(3, 4).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 3, 7, 11]
    assert get_pattern("hilbert").order(4, 4).tolist() == [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20))
def test_snake_steps_are_grid_neighbours(H, W):
    for name in ("snake_h", "snake_v", "spiral"):
        order = get_pattern(name).order(H, W)
        rows, cols = order // W, order % W
        assert torch.all(rows.diff().abs() + cols.diff().abs() == 1), name


@pytest.mark.parametrize("H,W", [(8, 8), (16, 16), (4, 8), (8, 4), (32, 32)])
def test_hilbert_is_continuous_on_power_of_two_grids(H, W):
    order = get_pattern("hilbert").order(H, W)
    rows, cols = order // W, order % W
    assert torch.all(rows.diff().abs() + cols.diff().abs() == 1)


def test_orders_are_cached_per_name_grid_and_device():
    p = get_pattern("w7")
    assert p.order(14, 14) is p.order(14, 14)
    assert p.order(14, 14) is not p.order(14, 15)
    assert p.order(14, 14, "meta").device.type == "meta"
    assert p.inverse(14, 14) is p.inverse(14, 14)


def test_order_table():
    table = orders(["h", "v_flip", "w2"], 4, 6)
    assert table.shape == (3, 24)
    assert torch.equal(table[1], get_pattern("v_flip").order(4, 6))


@pytest.mark.parametrize("name", ["", "w0", "w", "h_flip_flip", "x", "H", "w-1", "none", "wx"])
def test_unknown_names(name):
    with pytest.raises(PatternError):
        get_pattern(name)


@pytest.mark.parametrize("grid", [(0, 3), (3, 0), (-1, 2), (2.0, 2)])
def test_bad_grids(grid):
    with pytest.raises(PatternError, match="grid"):
        get_pattern("h").order(*grid)


def test_pattern_properties():
    assert get_pattern("w7_flip").window == 7 and get_pattern("w7_flip").is_flip
    assert get_pattern("w7_flip").base == "w7" and get_pattern("h").window is None
