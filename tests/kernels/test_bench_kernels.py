"""The kernel and whole-model CPU benchmarks run, and report what they claim to."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from helpers import REPO
from scansearch.kernels.bench import cpu_floor_ms, ratio_lines, run_kernel_bench, table_rows

BENCH = REPO / "benchmarks"


def test_kernel_bench_puts_compiled_torch_and_floor_side_by_side_at_each_thread_count():
    before = torch.get_num_threads()
    rows = run_kernel_bench("cpu", repeats=1, shapes=["vim_ti_k2"], batch=1, include_reference=False,
                            threads=[1, 2])
    assert torch.get_num_threads() == before
    paths = [(r["threads"], r["path"]) for r in rows]
    for n in (1, 2):
        assert [p for t, p in paths if t == n] == ["reference", "materialized", "fused", "torch", "floor"]
    assert all(r["fwd_ms"] > 0 for r in rows if r["path"] != "reference")
    one, two = (next(r for r in rows if r["threads"] == n and r["path"] == "floor") for n in (1, 2))
    assert two["fwd_ms"] == pytest.approx(one["fwd_ms"] / 2, rel=0.5)
    lines = ratio_lines(rows)
    assert len(lines) == 2 and all("vs torch fwd" in line and "of the floor's speed" in line for line in lines)
    columns, cells = table_rows(rows)
    assert "threads" in columns and len(cells) == len(rows)


def test_the_floor_counts_the_scan_work():
    fwd, fwd_bwd = cpu_floor_ms(4, 384, 196, 16, 4)
    assert 0 < fwd < fwd_bwd < 4 * fwd
    fwd2, _ = cpu_floor_ms(8, 384, 196, 16, 4)  # twice the work: about twice the floor
    assert fwd2 == pytest.approx(2 * fwd, rel=0.5)


@pytest.mark.slow
def test_whole_model_bench_times_both_backends(capsys):
    spec = importlib.util.spec_from_file_location("bench_cpu_scan", BENCH / "bench_cpu_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--steps", "1", "--threads", "1"])
    assert [r["backend"] for r in rows] == ["torch", "cpu"] * 4
    assert {r["kind"] for r in rows} == {"train", "supernet"}
    assert all(r["ms"] > 0 for r in rows)
    assert "| train | local_vim_micro 14x14 tokens |" in capsys.readouterr().out
