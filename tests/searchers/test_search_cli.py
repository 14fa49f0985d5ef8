"""`search`, `export`, `train`, `eval`, `doctor` and `bench` driven as subprocesses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from helpers import assert_one_line_error
from scansearch import Genotype
from scansearch.models import load_model

DATA = "planted:grid=8,motifs_per_image=2,n_train=96,n_val=48,n_test=48"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4", "--set", "expand=1.0"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from helpers import run_cli

    out = tmp_path_factory.mktemp("search") / "run"
    result = run_cli("search", "--space", "local8", "--data", DATA, "--epochs", "2", "--batch-size", "32",
                     "--k", "2", "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    return out, result


def test_search_writes_a_complete_run_folder(finished_run):
    out, result = finished_run
    for name in ("config.yaml", "log.txt", "checkpoint.pt", "alphas.json", "genotype.yaml", "summary.json",
                 "alphas.png"):
        assert (out / name).is_file(), name
    genotype = Genotype.load(out / "genotype.yaml")
    assert len(genotype.layers) == 2 and all(len(layer) == 2 for layer in genotype.layers)
    assert genotype.model == "local_vim_micro" and genotype.provenance["searcher"] == "darts"
    assert genotype.provenance["model_overrides"] == {"dim": 8, "depth": 2, "d_state": 4, "expand": 1.0}
    assert genotype.provenance["img_size"] == 8
    history = json.loads((out / "alphas.json").read_text())
    assert len(history["epochs"]) == 2 and len(history["candidates"]) == 8
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["settings"]["k"] == 2 and config["darts"]["mode"] == "bilevel"
    assert "softmax(alpha)" in result.stdout and "w2_flip" in result.stdout  # the rich table
    hint = next(line for line in result.stdout.splitlines() if line.startswith("next: scansearch train "))
    trained = hint.split()[3]  # the found genotype, or the fixed one that beat it on held-out data
    assert trained in {str(out / "genotype.yaml"), str(out / "cross.yaml"), str(out / "localmamba_baseline.yaml")}
    assert hint == f"next: scansearch train {trained} --data {DATA} --out {out / 'model'}"
    selection = json.loads((out / "selection.json").read_text())
    assert set(selection["verify"]) == {"found", "cross", "localmamba_baseline"}
    assert [layer["kept"] for layer in selection["layers"]] == [list(layer) for layer in genotype.layers]
    assert "selection by effect" in result.stdout and "margin" in result.stdout


@pytest.mark.slow  # several searches and trainings in subprocesses: the full suite runs it
def test_the_searched_model_is_the_model_trained_anywhere(tmp_path, cli):
    """Search on the user's own space file at another image size and patch size; the closing
    hint trains that very model (patch 2 at 16x16, not patch 1 at 8x8, the same 8x8 token grid);
    then, with the space file gone, the genotype and the model load from another folder."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    (here / "mine.yaml").write_text("name: mine\ncandidates: [h, v, w2, hilbert]\nk: 2\n")
    result = cli("search", "--space", "mine.yaml", "--data", DATA, "--img-size", "16", "--set", "patch_size=2",
                 "--epochs", "1", "--batch-size", "32", "--out", "run", *TINY, cwd=here)
    assert result.returncode == 0, result.stderr
    hint = next(line for line in result.stdout.splitlines() if line.startswith("next: scansearch train "))
    args = hint[len("next: scansearch "):].split()
    result = cli(*args, "--epochs", "1", "--quiet", cwd=here)
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr  # nothing on the command line changed the recorded model
    (here / "mine.yaml").unlink()
    trained = Path(args[1])  # the found genotype, or a fixed one that beat it (relative to here)
    trained = trained.relative_to(here) if trained.is_absolute() else trained
    check = ("from scansearch import Genotype, load_model; import torch\n"
             "g = Genotype.load('../here/run/genotype.yaml'); m = load_model('../here/run/model')\n"
             "assert g.load_space().candidates == ('h', 'v', 'w2', 'hilbert') and g.provenance['img_size'] == 16\n"
             f"assert m.genotype == Genotype.load('../here/{trained}')\n"
             "assert m.cfg.img_size == 16 and m.cfg.patch_size == 2 and m.grid == (8, 8)\n"
             "assert m.cfg.dim == 8 and m.cfg.depth == 2\n"
             "print(m(torch.randn(2, 1, 16, 16)).shape)\n")
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "torch.Size([2, 4])"
    result = cli("eval", "../here/run/model", "--data", DATA, "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    # an option that changes the recorded model is said in one line
    result = cli("train", "../here/run/genotype.yaml", "--data", DATA, "--out", "m2", "--epochs", "1", "--quiet",
                 "--set", "patch_size=1", "--img-size", "8", *TINY, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("scansearch: note: the command line changes the model the genotype records: "
                                     "patch_size=1 (recorded: 2), img_size=8 (recorded: 16)")


@pytest.mark.slow  # several searches and trainings in subprocesses: the full suite runs it
def test_export_then_train_then_eval(finished_run, tmp_path, cli):
    out, _ = finished_run
    target = tmp_path / "found.yaml"
    result = cli("export", out, "-o", target)
    assert result.returncode == 0, result.stderr
    assert Genotype.load(target) == Genotype.load(out / "genotype.yaml")
    printed = cli("export", out)
    assert printed.returncode == 0 and Genotype.from_yaml(printed.stdout) == Genotype.load(target)

    model_dir = tmp_path / "model"
    result = cli("train", target, "--data", DATA, "--out", model_dir, "--epochs", "1", "--batch-size", "32", *TINY)
    assert result.returncode == 0, result.stderr
    assert "top-1" in result.stdout and "class" in result.stdout
    model = load_model(model_dir)
    assert model.genotype.layers == Genotype.load(target).layers
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["count"] == 48

    result = cli("eval", model_dir, "--data", DATA, "--json")
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated["count"] == 48 and abs(evaluated["top1"] - metrics["top1"]) < 1e-9
    table = cli("eval", model_dir, "--data", DATA, "--split", "val")
    words = table.stdout.split()  # the title wraps with the folder's length
    assert table.returncode == 0 and "top-1" in words and "(val" in words and "split)" in words
    # a run folder stands for its genotype
    again = cli("train", out, "--data", DATA, "--out", tmp_path / "model2", "--epochs", "1", "--batch-size", "32",
                "--quiet", *TINY)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_eval_uses_the_image_size_the_model_was_trained_at(tmp_path, cli):
    model_dir = tmp_path / "big"
    result = cli("train", "vim_micro", "--data", DATA, "--img-size", "16", "--out", model_dir, "--epochs", "1",
                 "--batch-size", "32", "--quiet", *TINY)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    evaluated = cli("eval", model_dir, "--data", DATA, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert abs(json.loads(evaluated.stdout)["loss"] - metrics["loss"]) < 1e-6


@pytest.mark.slow  # several searches and trainings in subprocesses: the full suite runs it
def test_resume_continues_a_stopped_search(tmp_path, cli):
    """A run stopped after its first epoch, resumed from the command line, ends where an
    uninterrupted run ends."""
    from scansearch.cli import main
    from scansearch.searchers import darts

    args = ["search", "--data", DATA, "--epochs", "2", "--batch-size", "32", "--quiet", *TINY]
    full = tmp_path / "full"
    assert cli(*args, "--out", full).returncode == 0
    stopped = tmp_path / "stopped"
    original = darts.DartsStep.on_epoch_end

    def stop_after_one(self, ctx, record):
        original(self, ctx, record)
        ctx.should_stop = True

    darts.DartsStep.on_epoch_end = stop_after_one
    try:
        assert main(args + ["--out", str(stopped)]) == 0
    finally:
        darts.DartsStep.on_epoch_end = original
    assert len(json.loads((stopped / "alphas.json").read_text())["epochs"]) == 1
    result = cli("search", "--resume", "--out", stopped, "--quiet")
    assert result.returncode == 0, result.stderr
    a = Genotype.load(full / "genotype.yaml")
    b = Genotype.load(stopped / "genotype.yaml")
    assert a.layers == b.layers
    torch.testing.assert_close(torch.tensor(a.alphas), torch.tensor(b.alphas), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_seeds_run_one_search_each_and_write_the_majority(tmp_path, cli):
    """--seeds: one complete run folder per seed, the per-layer agreement table, the majority
    genotype in the top folder (the one the hint trains); --verify-epochs trains each genotype
    of the closing check; --resume reuses finished seeds."""
    out = tmp_path / "run"
    args = ["search", "--data", DATA, "--epochs", "1", "--batch-size", "32", "--k", "2", "--seeds", "3,4",
            "--verify-epochs", "1", "--out", out, *TINY]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    seeds = [Genotype.load(out / f"seed-{s}" / "genotype.yaml") for s in (3, 4)]
    assert [g.provenance["seed"] for g in seeds] == [3, 4]
    for seed in (3, 4):
        selection = json.loads((out / f"seed-{seed}" / "selection.json").read_text())
        assert selection["verify_epochs"] == 1
        assert {v["epochs"] for v in selection["verify"].values()} == {1}
    combined = Genotype.load(out / "genotype.yaml")
    votes = json.loads((out / "seeds.json").read_text())
    assert combined.provenance["seeds"] == [3, 4] and votes["seeds"] == [3, 4]
    for i, layer in enumerate(votes["layers"]):
        assert layer["kept"] == list(combined.layers[i])
        expected = sum(set(g.layers[i]) == set(combined.layers[i]) for g in seeds)
        assert layer["agree"] == expected == combined.provenance["agree"][i]
        assert sum(layer["votes"].values()) == 2 * 2  # two seeds, two directions each
    assert "votes (seeds that kept each)" in result.stdout and "from scratch" in result.stdout
    assert f"next: scansearch train {out / 'genotype.yaml'} --data {DATA}" in result.stdout
    again = cli("search", "--resume", "--out", out)
    assert again.returncode == 0, again.stderr
    assert "searching" not in again.stdout and Genotype.load(out / "genotype.yaml").layers == combined.layers
    assert (out / "log.txt").read_text().count("finished before, reused") == 2


@pytest.mark.parametrize("args, fragments", [
    (["search", "--space", "nope"], ["nope"]),
    (["search", "--model", "vit_tiny"], ["vit_tiny"]),
    (["search", "--data", "/no/such/folder"], ["/no/such/folder"]),
    (["search", "--epochs", "0"], ["--epochs"]),
    (["search", "--k", "9"], ["k must be"]),
    (["search", "--set", "dim"], ["--set"]),
    (["search", "--set", "colour=3"], ["colour"]),
    (["search", "--set", "expand=0"], ["--set expand=0", "must be positive"]),
    (["search", "--resume"], ["--resume needs --out"]),
    (["search", "--model", "mambaout_micro"], ["no scan layers"]),
    (["search", "--warmup-epochs", "9"], ["--warmup-epochs"]),
    (["search", "--seed", "1", "--seeds", "0,1"], ["--seed and --seeds"]),
    (["search", "--seeds", "0,0"], ["--seeds", "repeated"]),
    (["search", "--seeds", "0,x"], ["--seeds", "integers"]),
    (["search", "--verify-epochs", "-1"], ["--verify-epochs"]),
    (["export", "/no/such/run"], ["not a run folder"]),
    (["train", "/no/such.yaml", "--out", "x"], ["such.yaml"]),
    (["eval", "/no/such/model"], ["not a model directory"]),
])
def test_bad_input_is_one_line_and_leaves_nothing(args, fragments, tmp_path, cli):
    result = cli(*args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_and_changed_resume_settings_are_refused(finished_run, tmp_path, cli):
    out, _ = finished_run
    assert_one_line_error(cli("search", "--out", out, "--data", DATA), "already holds a run", "--resume")
    assert_one_line_error(cli("search", "--out", out, "--resume", "--epochs", "5"), "--epochs", "started with 2")
    assert_one_line_error(cli("export", tmp_path), "not a run folder")


@pytest.mark.slow
def test_eval_refuses_data_with_other_classes(finished_run, tmp_path, cli):
    out, _ = finished_run
    model_dir = tmp_path / "m"
    assert cli("train", out, "--data", DATA, "--out", model_dir, "--epochs", "1", "--quiet", *TINY).returncode == 0
    assert_one_line_error(cli("eval", model_dir, "--data", DATA.replace("grid=8", "grid=8,classes=3")),
                          "3 classes", "predicts 4")
    assert_one_line_error(cli("train", out, "--data", DATA, "--out", model_dir, "--quiet", *TINY),
                          "already holds a training run")


def test_doctor_reports_backends(cli):
    result = cli("doctor")
    assert result.returncode == 0, result.stderr
    assert "torch" in result.stdout and "reference" in result.stdout and "triton" in result.stdout
    data = json.loads(cli("doctor", "--json").stdout)
    assert data["backends"]["reference"] == "ok" and data["default_backend_cpu"] == "cpu"


@pytest.mark.slow
def test_bench_model_and_kernels_quick(cli, monkeypatch, capsys):
    result = cli("bench", "model", "--models", "mambaout_micro", "--quick", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "mambaout_micro" in result.stdout
    assert_one_line_error(cli("bench", "model", "--models", "nope", "--device", "cpu"), "nope")
    assert_one_line_error(cli("bench", "kernels", "--device", "tpu"), "--device must be cpu or cuda")
    from scansearch.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a CUDA host
    assert main(["bench", "kernels", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is visible" in capsys.readouterr().err
