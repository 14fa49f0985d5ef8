"""Top-k discretisation of architecture weights, the weights table and the run folder."""
import json

import pytest
import torch

from scansearch import Genotype, load_space
from scansearch.searchers.discretize import discretize, layer_choice
from scansearch.searchers.report import plot_heatmap, weights_table
from scansearch.searchers.run import RunError, RunFolder


def test_top_k_in_candidate_order():
    space = load_space("local8")  # h h_flip v v_flip w2 w2_flip w7 w7_flip
    w = torch.tensor([0.1, 0.3, 0.0, 0.5, 0.9, 0.2, 0.4, 0.05])
    assert layer_choice(w, space) == ("h_flip", "v_flip", "w2", "w7")


def test_ties_break_towards_earlier_candidates():
    assert layer_choice(torch.zeros(8), load_space("local8")) == ("h", "h_flip", "v", "v_flip")


def test_none_wins_only_above_every_pattern():
    space = load_space("local8_none")
    w = torch.tensor([0.1] * 8 + [0.2])
    assert layer_choice(w, space) == "none"
    w[4] = 0.3
    assert layer_choice(w, space) == ("h", "h_flip", "v", "w2")


def test_discretize_builds_a_valid_genotype(tmp_path):
    space = load_space("local8")
    alphas = torch.randn(3, 8)
    g = discretize(alphas, space, model="local_vim_micro", grid=(8, 8), provenance={"searcher": "darts"})
    assert g.space == "local8" and len(g) == 3 and all(len(layer) == 4 for layer in g.layers)
    softmax = torch.softmax(alphas, -1)
    assert torch.allclose(torch.tensor(g.alphas), softmax, atol=1e-6)
    for row, layer in zip(softmax, g.layers):
        kept = [space.candidates.index(n) for n in layer]
        dropped = [i for i in range(8) if i not in kept]
        assert row[kept].min() >= row[dropped].max()
    assert Genotype.load(g.save(tmp_path / "g.yaml")) == g


def test_discretize_with_a_user_space(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncandidates: [h, w3, hilbert]\nk: 2\n")
    g = discretize(torch.tensor([[0.0, 2.0, 1.0]]), load_space(path), model="m", grid=(6, 6), provenance={})
    assert g.layers == (("w3", "hilbert"),)
    # a user's space travels inline, so the genotype outlives the file
    assert g.to_dict()["space"] == {"name": "s", "candidates": ["h", "w3", "hilbert"], "k": 2}
    path.unlink()
    assert Genotype.from_yaml(g.to_yaml()) == g and g.load_space().candidates == ("h", "w3", "hilbert")
    assert Genotype.from_dict(g.to_dict()) == g


def test_weights_table_and_heatmap(tmp_path):
    space = load_space("local8")
    alphas = torch.randn(2, 8)
    g = discretize(alphas, space, model="m", grid=(8, 8), provenance={})
    table = weights_table(torch.softmax(alphas, -1), space.candidates, g, "t")
    assert table.row_count == 2 and len(table.columns) == 9
    from rich.console import Console

    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    for i, layer in enumerate(g.layers):  # the kept directions carry the star, the others do not
        row = next(line for line in text.splitlines() if line.strip("│┃ ").startswith(str(i) + " "))
        assert row.count("*") == len(layer)
    pytest.importorskip("matplotlib")
    out = plot_heatmap(torch.softmax(alphas, -1), space.candidates, tmp_path / "a.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_run_folder(tmp_path):
    run = RunFolder.create(tmp_path / "run")
    run.write_config({"space": "local8"})
    with pytest.raises(RunError, match="already holds a run"):
        RunFolder.create(tmp_path / "run")
    assert RunFolder.open(tmp_path / "run").read_config() == {"space": "local8"}
    with pytest.raises(RunError, match="not a run folder"):
        RunFolder.open(tmp_path / "other")
    run.write_history(["h", "v"], [{"epoch": 0, "weights": [[0.5, 0.5]]}])
    assert run.read_history() == [{"epoch": 0, "weights": [[0.5, 0.5]]}]
    assert json.loads(run.file(RunFolder.HISTORY).read_text())["candidates"] == ["h", "v"]
    run.log("hello")
    assert run.file(RunFolder.LOG).read_text().strip().endswith("hello")
    a = RunFolder.default_path(tmp_path)
    assert a.parent == tmp_path and a.name.startswith("search-")
    a.mkdir()
    b = RunFolder.default_path(tmp_path)
    assert b != a and not b.exists() and b.name.startswith("search-")
