"""The examples run as a user would run them (their fast settings)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow  # a search, a training and a reload: the full suite runs it
def test_quickstart_then_load_the_model(tmp_path):
    result = run_example("quickstart.py", "--fast", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "found:" in result.stdout and "saved and reloaded" in result.stdout
    (model_dir,) = list((tmp_path / "runs").glob("search-*/model"))
    loaded = run_example("load_derived_model.py", model_dir, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "test images right" in loaded.stdout and "gradients reach" in loaded.stdout


@pytest.mark.slow  # a search and a training on generated images: the full suite runs it
def test_search_on_an_imagefolder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for c, name in enumerate(("cat", "dog")):
        for i in range(12):
            path = tmp_path / "pets" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (120 * c, 10 * i, 90)).save(path)
    result = run_example("search_imagefolder.py", tmp_path / "pets", "--img-size", "16", "--epochs", "1",
                         "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("genotype.yaml", "model/weights.safetensors", "model/metrics.json"):
        assert (tmp_path / "run" / name).is_file(), name


@pytest.mark.slow  # a supernet and a study: the full suite runs it
def test_search_with_optuna(tmp_path):
    result = run_example("search_optuna.py", "--fast", "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 trials; best trial" in result.stdout and "loss on unseen batches" in result.stdout
    for name in ("genotype.yaml", "study.journal", "supernet/checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file(), name


@pytest.mark.slow  # a semi-supervised training: the full suite runs it
def test_raum_semi_supervised_example(tmp_path):
    result = run_example("raum_semi.py", "--fast", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "126 labeled and 1132 unlabeled" in result.stdout
    assert "test top-1 at 40% occlusion" in result.stdout and "ECE: single pass" in result.stdout


@pytest.mark.slow  # three worker processes: the full suite runs it
def test_many_workers_on_one_journal_study(tmp_path):
    result = run_example("many_workers.py", "--trials", "12", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trials by state: {'COMPLETE': 12}" in result.stdout
    assert "--join" in result.stdout
    for i in range(3):
        assert (tmp_path / "runs" / f"worker-{i}" / "genotype.yaml").is_file()


@pytest.mark.slow  # two searches and a resume: the full suite runs it
def test_the_search_pipeline_from_python(tmp_path):
    result = run_example("search_pipeline.py", "--fast", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused before anything ran: --epochs must be at least 1" in result.stdout
    assert "same genotype: True" in result.stdout and "TPE's best:" in result.stdout
    for name in ("darts/genotype.yaml", "tpe/genotype.yaml", "tpe/study.journal"):
        assert (tmp_path / "runs" / name).is_file(), name
