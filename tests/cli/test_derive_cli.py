"""`scansearch derive` driven as a subprocess: table, JSON, saving, bad input."""
import json

import pytest
import torch
from helpers import assert_one_line_error

from scansearch import Genotype
from scansearch.flops import count_flops, count_params
from scansearch.models import build_model, load_model


def test_table_for_a_hierarchical_genotype(cli):
    result = cli("derive", "local_vmamba_tiny")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "56x56" in out and "7x7" in out and "h_flip v w7 w7_flip" in out
    assert "25.53M" in out and "5.703G" in out and "published: 26M" in out


def test_table_groups_equal_layers(cli):
    result = cli("derive", "vim_tiny")
    assert result.returncode == 0, result.stderr
    assert "0-23" in result.stdout and "h h_flip" in result.stdout
    assert "localmamba convention; counted so here: 1.475G" in result.stdout


def test_json_is_one_object_with_params_flops_layers(cli):
    result = cli("derive", "local_vim_micro", "--json", "--classes", "10", "--in-chans", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"params", "flops", "flops_convention", "flops_published", "published", "layers"}
    assert data["flops_convention"] == "fvcore" and data["flops_published"] == data["flops"]
    assert data["published"] is None
    with torch.device("meta"):
        model = build_model("local_vim_micro", num_classes=10, in_chans=1)
    assert data["params"] == count_params(model)
    assert data["flops"] == count_flops(model, 8, in_chans=1)
    assert data["layers"] == [["h", "h_flip", "w2", "w2_flip"]] * 4


@pytest.mark.parametrize("name", ["local_vim_tiny", *(pytest.param(n, marks=pytest.mark.slow)
                                                     for n in ["vim_tiny", "vmamba_tiny", "mambaout_femto"])])
def test_json_gives_flops_in_both_conventions(cli, name):
    """A script compares a preset with its paper from the JSON alone: the fvcore count, the
    count by the rule the published figure used, and the published figures."""
    from scansearch.models import PRESETS

    result = cli("derive", name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    published = PRESETS[name].published
    with torch.device("meta"):
        model = build_model(name)
    assert data["flops"] == count_flops(model, 224)
    assert data["flops_convention"] == published.flops_convention
    assert data["flops_published"] == count_flops(model, 224, convention=published.flops_convention)
    assert data["published"] == {"params": published.params, "flops": published.flops, "top1": published.top1,
                                 "source": published.source}
    assert abs(data["flops_published"] / 1e9 - published.flops) <= 0.05 * published.flops
    if name.startswith(("vim", "local_vim")):  # LocalMamba counted these with its own, smaller formula
        assert data["flops_convention"] == "localmamba" and data["flops_published"] < data["flops"]


def test_derive_builds_the_model_a_genotype_records_and_says_what_an_option_changes(cli, tmp_path):
    genotype = tmp_path / "g.yaml"
    Genotype(layers=(("h", "v"),) * 2, model="vim_micro",
             provenance={"img_size": 16, "model_overrides": {"patch_size": 2, "depth": 2}}).save(genotype)
    result = cli("derive", genotype, "--json", "--classes", "10", "--out", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    model = load_model(tmp_path / "m")
    assert model.cfg.img_size == 16 and model.cfg.patch_size == 2 and model.grid == (8, 8)
    result = cli("derive", genotype, "--json", "--img-size", "32")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("scansearch: note: the command line changes the model the genotype records: "
                                     "img_size=32 (recorded: 16)")
    json.loads(result.stdout)  # the note stays off stdout


def test_out_writes_a_loadable_model(cli, tmp_path):
    genotype = tmp_path / "g.yaml"
    Genotype(layers=(("h", "v"), "none", ("w2",), ("v_flip",)), model="vim_micro").save(genotype)
    result = cli("derive", genotype, "--img-size", "24x16", "--classes", "5", "--out", tmp_path / "model", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"][1] == "none"
    model = load_model(tmp_path / "model")
    assert model.cfg.img_size == (24, 16) and model(torch.randn(1, 3, 24, 16)).shape == (1, 5)


@pytest.mark.parametrize("args,fragment", [
    (["derive", "vim_gigantic"], "unknown model preset 'vim_gigantic'"),
    (["derive", "missing.yaml"], "missing.yaml: file not found"),
    (["derive", "vim_micro", "--img-size", "big"], "--img-size: expected N or HxW"),
    (["derive", "vim_micro", "--in-chans", "0"], "--in-chans must be >= 1"),
])
def test_bad_input_is_one_line_exit_2(cli, args, fragment):
    assert_one_line_error(cli(*args), fragment)


def test_bad_genotype_files(cli, tmp_path):
    bad, out = tmp_path / "bad.yaml", tmp_path / "out"
    bad.write_text("scansearch_genotype: 1\nmodel: local_vim_tiny\nlayers: [[h, v], [h, zigzag]]\n")
    assert_one_line_error(cli("derive", bad, "--out", out), "layer 1: unknown pattern 'zigzag'")
    bad.write_text("scansearch_genotype: 1\nmodel: local_vim_tiny\nlayers:\n" + "  - [h, v]\n" * 18)
    assert_one_line_error(cli("derive", bad, "--out", out), "genotype has 18 layers, local_vim_tiny has 20")
    bad.write_bytes(b"\x00\xff garbage")
    assert_one_line_error(cli("derive", bad, "--out", out), str(bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # --out was never created
