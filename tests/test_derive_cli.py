"""`scansearch derive` driven as a subprocess: table, JSON, saving, bad input."""
import json

import pytest
import torch
from conftest import assert_one_line_error

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
    assert set(data) == {"params", "flops", "layers"}
    with torch.device("meta"):
        model = build_model("local_vim_micro", num_classes=10, in_chans=1)
    assert data["params"] == count_params(model)
    assert data["flops"] == count_flops(model, 8, in_chans=1)
    assert data["layers"] == [["h", "h_flip", "w2", "w2_flip"]] * 4


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
    bad = tmp_path / "bad.yaml"
    bad.write_text("scansearch_genotype: 1\nmodel: local_vim_tiny\nlayers: [[h, v], [h, zigzag]]\n")
    assert_one_line_error(cli("derive", bad), "layer 1: unknown pattern 'zigzag'")
    bad.write_text("scansearch_genotype: 1\nmodel: local_vim_tiny\nlayers:\n" + "  - [h, v]\n" * 18)
    assert_one_line_error(cli("derive", bad), "genotype has 18 layers, local_vim_tiny has 20")
    bad.write_bytes(b"\x00\xff garbage")
    assert_one_line_error(cli("derive", bad), str(bad))
    assert not (tmp_path / "out").exists()
