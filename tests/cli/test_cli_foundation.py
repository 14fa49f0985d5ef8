"""The foundation commands driven as a subprocess: version, spaces, inspect, genotype."""
import importlib.util

import pytest

import scansearch
from helpers import FIXTURES

BAD = FIXTURES / "bad_genotypes"


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"scansearch {scansearch.__version__}"


def test_spaces_table(cli):
    result = cli("spaces")
    assert result.returncode == 0
    for name in ("local8", "cross4", "bidir2", "ext16", "local8_none"):
        assert name in result.stdout


def test_inspect_space(cli):
    result = cli("inspect", "local8", "--grid", "14x14")
    assert result.returncode == 0, result.stderr
    assert "w7_flip" in result.stdout and "7.50" in result.stdout and "most local set of k=4" in result.stdout


def test_inspect_pattern_and_user_space(cli, tmp_path):
    result = cli("inspect", "snake_h", "--grid", "5x9")
    assert result.returncode == 0 and "100.0%" in result.stdout
    space = tmp_path / "s.yaml"
    space.write_text("name: s\ncandidates: [hilbert, spiral]\nk: 1\n")
    result = cli("inspect", space, "--grid", "6")
    assert result.returncode == 0 and "hilbert" in result.stdout and "spiral" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="plot extra not installed")
def test_inspect_plot(cli, tmp_path):
    out = tmp_path / "paths.png"
    result = cli("inspect", "cross4", "--grid", "6x6", "--plot", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["paths.png"]


@pytest.mark.parametrize("args,fragment", [
    (["inspect", "local9"], "'local9' is neither a scan pattern nor a search space"),
    (["inspect", "local8", "--grid", "14by14"], "--grid: expected HxW"),
    (["inspect", "local8", "--grid", "0x4"], "--grid: expected HxW"),
    (["inspect", "missing/space.yaml"], "missing/space.yaml: search-space file not found"),
    (["inspect", "none"], "'none' is not a scan pattern"),
    (["genotype", "validate", "no_such_file.yaml"], "no_such_file.yaml: file not found"),
    (["genotype", "show", "no_such_file.yaml"], "no_such_file.yaml: file not found"),
    (["frobnicate"], "invalid choice"),
    (["inspect"], "the following arguments are required"),
])
def test_bad_input_exits_2_with_one_line(cli, args, fragment):
    _one_line_error(cli(*args), fragment)


def test_inspect_plot_into_missing_folder(cli, tmp_path):
    _one_line_error(cli("inspect", "h", "--plot", tmp_path / "no" / "p.png"), "does not exist")


def test_genotype_validate_and_show(cli, tmp_path):
    result = cli("genotype", "validate", "local_vim_tiny")
    assert result.returncode == 0 and "ok (20 layers, space local8)" in result.stdout
    g = scansearch.Genotype.preset("local_vim_tiny")
    path = g.save(tmp_path / "g.yaml")
    result = cli("genotype", "show", path)
    assert result.returncode == 0 and "h v_flip w7 w7_flip" in result.stdout and "19" in result.stdout


@pytest.mark.parametrize("name", ["03_wrong_k", "07_syntax", "15_unknown_space"])
def test_genotype_validate_reports_the_reason(cli, name):
    path = BAD / f"{name}.yaml"
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    _one_line_error(cli("genotype", "validate", path), str(path), expected)
