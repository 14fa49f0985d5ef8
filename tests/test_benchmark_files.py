"""The benchmark files kept in the repository: well-formed, and their figures reproducible."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scansearch.spaces import load_space

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
ZERO_COST = sorted((BENCH / "data").glob("zero_cost_*.json"))


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_matches_the_textbook_formula_and_handles_ties():
    bench = _bench_module("bench_zero_cost")
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.0]
    d2 = sum((x - y) ** 2 for x, y in zip([1, 2, 3, 4, 5], [1, 2, 3.5, 5, 3.5]))
    # with ties the Pearson correlation of mean ranks is the definition; the textbook formula is close
    assert bench.spearman(a, b) == pytest.approx(0.8207826816681233)
    assert abs(bench.spearman(a, b) - (1 - 6 * d2 / (5 * 24))) < 0.03
    assert bench.spearman(a, a) == pytest.approx(1.0)
    assert bench.spearman(a, a[::-1]) == pytest.approx(-1.0)
    assert bench.ranks([3.0, 1.0, 3.0]).tolist() == [2.5, 1.0, 2.5]


@pytest.mark.parametrize("path", ZERO_COST, ids=[p.stem for p in ZERO_COST])
def test_each_zero_cost_benchmark_file_holds_50_distinct_trained_genotypes(path):
    stored = json.loads(path.read_text())
    space = load_space(stored["settings"]["space"])
    records = stored["genotypes"]
    assert len(records) >= 50
    layers = [tuple(tuple(layer) for layer in r["layers"]) for r in records]
    assert len(set(layers)) == len(layers)
    for genotype in layers:
        for layer in genotype:
            assert len(layer) == space.k and set(layer) <= set(space.patterns)
    assert all(0.0 <= r["top1"] <= 1.0 for r in records)
    assert set(stored["spearman"]) >= {"params", "flops", "zico", "synflow", "grad_norm", "locality"}


@pytest.mark.slow  # the proxies of 50 genotypes: the full suite runs it
@pytest.mark.parametrize("path", ZERO_COST[:1], ids=[p.stem for p in ZERO_COST[:1]])
def test_rescoring_a_benchmark_file_reproduces_its_correlations(path, tmp_path):
    stored = json.loads(path.read_text())
    result = subprocess.run([sys.executable, str(BENCH / "bench_zero_cost.py"), "--scores", str(path)],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in stored["spearman"]:
            printed[cells[0]] = float(cells[1])
    assert set(printed) == set(stored["spearman"])
    for proxy, rho in stored["spearman"].items():
        if rho == rho:  # not NaN; a rank correlation moves only if rounding swaps two proxies' ranks
            assert printed[proxy] == pytest.approx(rho, abs=0.02), proxy
