"""The benchmark files kept in the repository: well-formed, and their figures reproducible."""
from __future__ import annotations

import argparse
import importlib.util
import json
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


def test_the_zero_cost_benchmark_files_are_kept():
    assert {p.stem for p in ZERO_COST} >= {"zero_cost_digits", "zero_cost_planted"}


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


@pytest.mark.parametrize("path", ZERO_COST, ids=[p.stem for p in ZERO_COST])
def test_the_stored_correlations_follow_from_the_stored_proxies(path):
    bench = _bench_module("bench_zero_cost")
    stored = json.loads(path.read_text())
    records = stored["genotypes"]
    assert all(set(r["proxies"]) == set(stored["spearman"]) for r in records)
    for proxy, rho in bench.score_table(records):
        assert rho == pytest.approx(stored["spearman"][proxy], nan_ok=True), proxy


@pytest.mark.parametrize("path", ZERO_COST[:1], ids=[p.stem for p in ZERO_COST[:1]])
def test_the_proxies_of_a_benchmark_file_are_reproduced(path):
    """The first genotypes' proxies computed again, as `--scores` does, match the stored ones."""
    bench = _bench_module("bench_zero_cost")
    from scansearch.data import load_data
    from scansearch.searchers.zero_cost import ZeroCost

    stored = json.loads(path.read_text())
    settings = argparse.Namespace(**stored["settings"])
    data = load_data(settings.data, img_size=settings.img_size, batch_size=settings.batch_size, seed=settings.seed)
    template = bench.template_for(settings, data)
    zero_cost = ZeroCost(template, data, [b for _, b in zip(range(2), data.train)], seed=settings.seed)
    for record in stored["genotypes"][:3]:
        layers = tuple(layer if layer == "none" else tuple(layer) for layer in record["layers"])
        again = zero_cost.scores(layers)
        for proxy, value in record["proxies"].items():
            assert again[proxy] == pytest.approx(value, rel=1e-3, abs=1e-6, nan_ok=True), proxy


RAUM = sorted((BENCH / "data").glob("raum_*.json"))


def test_the_raum_benchmark_files_are_kept():
    assert {p.stem for p in RAUM} >= {"raum_semi_digits", "raum_semi_fashion", "raum_backbone_digits"}


@pytest.mark.parametrize("path", RAUM, ids=[p.stem for p in RAUM])
def test_raum_summaries_follow_from_the_runs(path):
    bench = _bench_module("bench_raum")
    result = json.loads(path.read_text())
    key = "method" if "semi" in path.stem else "backbone"
    names = {"semi": {"supervised", "fixmatch", "raum"}, "backbone": {"searched", "cross"}}["semi" if key == "method"
                                                                                            else "backbone"]
    assert {r[key] for r in result["runs"]} == names
    assert len(result["runs"]) == 3 * len(names)  # three seeds each
    recomputed = bench.summarise(result["runs"], key)
    assert len(recomputed) == len(result["summary"])
    for mine, kept in zip(recomputed, result["summary"]):
        assert mine[key] == kept[key]
        for level in ("0%", "20%", "40%"):
            assert mine[level] == pytest.approx(kept[level])
    for run in result["runs"]:
        assert [lv["occlusion"] for lv in run["levels"]] == [0.0, 0.2, 0.4]
        pseudo = run.get("pseudo_labels")
        if pseudo is not None:  # the equal-share comparison is over the same kept count
            assert 0 <= pseudo["filter_kept_share"] <= 1
            assert [c["share"] for c in pseudo["curve"]] == bench.SHARES
