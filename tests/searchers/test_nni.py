"""NNI's one-shot strategies on a scansearch space (`--searcher nni-*`).

NNI lives in a virtual environment of its own (`tests/nni_env.sh`, run by `.ci/run`);
in the main environment these tests check that the searchers refuse cleanly and say how
to install NNI, and the rest are skipped.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from helpers import assert_one_line_error
from scansearch import Genotype

HAS_NNI = importlib.util.find_spec("nni") is not None
needs_nni = pytest.mark.skipif(not HAS_NNI, reason="NNI is tested in its own virtual environment "
                                                   "(tests/nni_env.sh)")
DATA = "planted:grid=8,motifs_per_image=2,n_train=96,n_val=48,n_test=48"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4", "--set", "expand=1.0"]
QUICK = ["--data", DATA, "--epochs", "2", "--batch-size", "32", "--quiet", *TINY]
STRATEGIES = ("nni-darts", "nni-gumbel", "nni-proxyless", "nni-random")


@pytest.mark.skipif(HAS_NNI, reason="NNI is installed here")
def test_without_nni_the_searchers_say_how_to_install_it_and_write_nothing(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("search", "--searcher", "nni-darts", "--out", run, *QUICK)
    assert_one_line_error(result, "nni-darts", "pip install 'scansearch[nni]'", "virtual environment")
    assert not run.exists()


def test_an_option_nni_would_ignore_is_refused(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("search", "--searcher", "nni-gumbel", "--trials", "5", "--out", run, *QUICK)
    assert_one_line_error(result, "--trials", "does not apply", "nni-gumbel")
    assert not run.exists()


def _planted_setup(k=4):
    from scansearch.searchers import SearchSettings, prepare

    settings = SearchSettings.from_flat({"data": DATA, "epochs": 1, "batch_size": 32, "warmup_epochs": 0,
                                         "alphas": "uniform", "set": ["dim=8", "depth=2", "d_state=4", "expand=1.0"],
                                         "k": k})
    prepared = prepare(settings, "cpu")
    return prepared.space, prepared.data, prepared.supernet


@needs_nni
def test_a_frozen_choice_is_the_supernet_with_those_directions_weighted_equally():
    """The adapter's one-hot trick: a layer's k chosen inputs, averaged, are the candidate
    weights the fused scan takes; so a frozen NNI model is the masked supernet."""
    from scansearch.searchers.nni_adapter import model_space

    space, data, supernet = _planted_setup(k=3)
    nni_space = model_space(supernet, space.k)
    chosen = {"layer0": [0, 4, 5], "layer1": [1, 2, 7]}
    frozen = nni_space.freeze(chosen)
    images, _ = next(iter(data.val))
    weights = []
    for layer in ("layer0", "layer1"):
        w = torch.zeros(len(supernet.candidates))
        w[chosen[layer]] = 1 / 3
        weights.append(w)
    with torch.no_grad():
        expected = supernet.model(images, weights=weights)
        got = frozen(images)
        other = supernet.model(images, weights=[torch.full((8,), 1 / 8)] * 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, other, atol=1e-4)  # the choice matters


@needs_nni
def test_a_space_with_none_is_refused_before_the_run_folder_exists(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("search", "--searcher", "nni-darts", "--space", "local8_none", "--out", run, *QUICK)
    assert_one_line_error(result, "none", "Optuna searchers")
    assert not run.exists()


@needs_nni
def test_to_genotype_maps_indices_to_directions_and_refuses_a_broken_export():
    from scansearch.searchers.nni_adapter import to_genotype
    from scansearch.spaces import SpaceError

    space, _, supernet = _planted_setup()
    template = Genotype(layers=(space.patterns[:4],) * 2, model="local_vim_micro", space="local8", grid=(8, 8))
    g = to_genotype({"layer0": [7, 0, 2, 3], "layer1": [4, 5, 6, 1]}, supernet, template, {"searcher": "x"})
    assert g.layers == (("h", "v", "v_flip", "w7_flip"), ("h_flip", "w2", "w2_flip", "w7"))
    for broken in ({"layer0": [0, 1, 2, 3]}, {"layer0": [0, 1, 2, 9], "layer1": [0, 1, 2, 3]},
                   {"layer0": "h", "layer1": [0, 1, 2, 3]}):
        with pytest.raises(SpaceError, match="NNI export"):
            to_genotype(broken, supernet, template, {})


@needs_nni
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_runs_from_the_cli_and_exports_a_genotype(tmp_path, cli, strategy):
    run = tmp_path / strategy
    result = cli("search", "--searcher", strategy, "--out", run, "--arch-lr", "0.3", *QUICK)
    assert result.returncode == 0, result.stderr
    genotype = Genotype.load(run / "genotype.yaml")
    assert genotype.provenance["searcher"] == strategy
    assert all(len(layer) == 4 for layer in genotype.layers)
    summary = json.loads((run / "summary.json").read_text())
    exported = summary["exported"]
    assert [list(layer) for layer in genotype.layers] == [
        [("h", "h_flip", "v", "v_flip", "w2", "w2_flip", "w7", "w7_flip")[i] for i in sorted(exported[f"layer{n}"])]
        for n in range(len(genotype.layers))]
    probs = summary["probabilities"]
    if strategy == "nni-random":
        assert probs is None  # a uniformly trained supernet; its export is a random draw
    else:
        # the architecture parameters trained (arch lr 0.3, 2 epochs), and the export is their top 4
        assert any(abs(p - 1 / 8) > 1e-3 for row in probs for p in row)
        for n, row in enumerate(probs):
            assert sorted(exported[f"layer{n}"]) == sorted(torch.tensor(row).topk(4).indices.tolist())


@needs_nni
def test_an_nni_genotype_trains_and_a_finished_run_resumes_as_it_is(tmp_path, cli):
    run = tmp_path / "darts"
    result = cli("search", "--searcher", "nni-darts", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "model"
    trained = cli("train", run / "genotype.yaml", "--data", DATA, "--epochs", "1", "--out", model, "--quiet")
    assert trained.returncode == 0, trained.stderr
    assert (model / "weights.safetensors").is_file() and (model / "metrics.json").is_file()
    before = (run / "genotype.yaml").read_bytes()
    again = cli("search", "--resume", "--out", run, "--quiet")
    assert again.returncode == 0, again.stderr
    assert (run / "genotype.yaml").read_bytes() == before


@needs_nni
def test_an_interrupted_nni_run_resumes_from_its_first_epoch(tmp_path, cli):
    """NNI keeps no checkpoint to continue from: --resume runs the search again, with the
    stored settings, to the same genotype (same seed)."""
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    result = cli("search", "--searcher", "nni-darts", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    (run / "summary.json").unlink()  # as a run killed before it finished leaves it
    (run / "genotype.yaml").unlink()
    again = cli("search", "--resume", "--out", run, "--quiet")
    assert again.returncode == 0, again.stderr
    assert "resumed (from the first epoch)" in (run / "log.txt").read_text()
    result = cli("search", "--searcher", "nni-darts", "--out", fresh, *QUICK)
    assert result.returncode == 0, result.stderr
    assert Genotype.load(run / "genotype.yaml").layers == Genotype.load(fresh / "genotype.yaml").layers


@needs_nni
def test_the_nni_example_runs(tmp_path):
    from test_examples import run_example

    result = run_example("search_nni.py", "--fast", "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NNI darts exported" in result.stdout
    assert Genotype.load(tmp_path / "run" / "genotype.yaml").provenance["searcher"] == "nni-darts"
