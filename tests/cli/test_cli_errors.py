"""Whose fault is it? Exit code 2 for the user's input, 3 for a run that diverged, 1 for an
internal error (with the traceback behind --debug and in the run folder's log)."""
from __future__ import annotations

import pytest

from helpers import assert_one_line_error
from scansearch.cli import EXIT_DIVERGED, EXIT_INTERNAL, EXIT_USER, main

DATA = "planted:grid=8,motifs_per_image=2,n_train=64,n_val=32,n_test=32"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4", "--set", "expand=1.0"]


def test_exit_codes_are_distinct():
    assert len({EXIT_INTERNAL, EXIT_USER, EXIT_DIVERGED, 0}) == 4


@pytest.mark.parametrize("error", [RuntimeError("index out of range"), ValueError("shape mismatch"),
                                   KeyError("weights"), AssertionError()])
def test_an_internal_error_is_not_called_bad_input(error, monkeypatch, capsys):
    """Errors the user cannot have caused, ValueError-derived ones included, exit 1 and say so."""
    from scansearch.cli import derive

    def broken(args):
        raise error

    monkeypatch.setattr(derive, "run", broken)
    assert main(["derive", "vim_micro"]) == EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"scansearch: internal error: {type(error).__name__}")
    assert "--debug" in err[0]
    with pytest.raises(type(error)):  # --debug shows the traceback
        main(["--debug", "derive", "vim_micro"])


def test_a_shape_error_inside_a_model_is_internal(monkeypatch, capsys):
    from scansearch.cli import derive
    from scansearch.models import ShapeError

    def broken(args):
        raise ShapeError("a sequence of 10 tokens does not fit a 4x4 grid")

    monkeypatch.setattr(derive, "run", broken)
    assert main(["derive", "vim_micro"]) == EXIT_INTERNAL
    assert "internal error: ShapeError" in capsys.readouterr().err


def test_a_full_disk_is_a_system_error_but_a_missing_file_is_the_users(monkeypatch, capsys, tmp_path):
    from scansearch.cli import derive

    def full(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(derive, "run", full)
    assert main(["derive", "vim_micro"]) == EXIT_INTERNAL
    assert capsys.readouterr().err.startswith("scansearch: system error: OSError: [Errno 28] No space left")
    monkeypatch.undo()
    assert main(["derive", str(tmp_path / "none.yaml")]) == EXIT_USER


def test_an_internal_error_in_a_search_leaves_its_traceback_in_the_run_log(monkeypatch, capsys, tmp_path):
    from scansearch.searchers import darts_searcher

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(darts_searcher, "search", broken)
    out = tmp_path / "run"
    code = main(["search", "--data", DATA, "--epochs", "1", "--quiet", "--out", str(out), *TINY])
    assert code == EXIT_INTERNAL
    err = capsys.readouterr().err.strip()
    assert err == (f"scansearch: internal error: IndexError: list index out of range "
                   f"(traceback in {out / 'log.txt'}, or run again with --debug)")
    log = (out / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "IndexError: list index out of range" in log


def test_a_diverging_run_says_so_with_its_own_exit_code(cli, tmp_path):
    result = cli("train", "vim_micro", "--data", DATA, "--out", tmp_path / "m", "--epochs", "2", "--lr", "1e30",
                 "--quiet", *TINY)
    assert result.returncode == EXIT_DIVERGED, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scansearch: diverged: training diverged: the loss is")


@pytest.mark.parametrize("option, fragment", [
    ("expand=0", "--set expand=0: local_vim_micro: field 'expand' must be positive, got 0"),
    ("expand=0.01", "--set expand=0.01: local_vim_micro: expand = 0.01 gives int(0.01 * 8) = 0 channels"),
    pytest.param("drop_path_rate=1.5", "--set drop_path_rate=1.5", marks=pytest.mark.slow),
    pytest.param("dim=-3", "--set dim=-3", marks=pytest.mark.slow),
    pytest.param("dim=eight", "--set dim=eight", marks=pytest.mark.slow),
    pytest.param("norm_eps=.nan", "--set norm_eps=nan", marks=pytest.mark.slow),
])
def test_set_is_checked_against_the_model_config_before_anything_runs(option, fragment, cli, tmp_path):
    args = ["--set", "dim=8", "--set", option]
    assert_one_line_error(cli("search", "--data", DATA, *args, cwd=tmp_path), fragment)
    assert_one_line_error(cli("train", "local_vim_micro", "--data", DATA, "--out", "m", *args, cwd=tmp_path),
                          fragment)
    assert list(tmp_path.iterdir()) == []
