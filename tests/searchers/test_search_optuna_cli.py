"""`scansearch search --searcher tpe|random|nsga2|bruteforce` driven as a user would."""
from __future__ import annotations

import json

import optuna
import pytest
import yaml

from helpers import assert_one_line_error
from scansearch import Genotype

DATA = "planted:grid=8,motifs_per_image=2,n_train=96,n_val=48,n_test=48"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4", "--set", "expand=1.0"]
QUICK = ["--data", DATA, "--epochs", "1", "--batch-size", "32", "--quiet", *TINY]


def finished(run) -> list[dict]:
    trials = json.loads((run / "trials.json").read_text())["trials"]
    return [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]


@pytest.mark.slow  # a supernet, a study, a training and a resumed study: the full suite runs it
def test_tpe_with_the_oneshot_evaluator_writes_a_run_that_train_accepts_and_resumes(tmp_path, cli):
    run = tmp_path / "tpe"
    result = cli("search", "--searcher", "tpe", "--trials", "8", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "study.journal", "supernet/checkpoint.pt", "genotype.yaml", "trials.json",
                 "summary.json", "log.txt"):
        assert (run / name).is_file(), name
    assert "the best trials and the known genotypes" in result.stdout
    trials = finished(run)
    assert len(trials) == 8
    assert [t["metrics"].get("known") for t in trials[:2]] == ["cross", "localmamba_baseline"]
    genotype = Genotype.load(run / "genotype.yaml")
    best = min(trials, key=lambda t: t["values"][0])
    assert genotype.provenance["searcher"] == "tpe" and genotype.provenance["trial"] == best["number"]
    assert genotype.provenance["loss"] == pytest.approx(best["values"][0], abs=1e-6)
    model_dir = tmp_path / "model"
    trained = cli("train", run / "genotype.yaml", "--data", DATA, "--out", model_dir, "--epochs", "1", "--quiet")
    assert trained.returncode == 0, trained.stderr
    # resume to a larger total: the finished trials are kept as they were, the supernet is not retrained
    stamp = (run / "supernet" / "checkpoint.pt").stat().st_mtime_ns
    again = cli("search", "--resume", "--out", run, "--trials", "12", "--quiet")
    assert again.returncode == 0, again.stderr
    more = finished(run)
    assert len(more) == 12 and more[:8] == trials
    assert (run / "supernet" / "checkpoint.pt").stat().st_mtime_ns == stamp
    study = optuna.load_study(study_name="scansearch", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))))
    assert len(study.trials) == 12
    # a one-shot search's supernet scores another search: the known genotypes score as they did
    reuse = tmp_path / "reuse"
    again = cli("search", "--searcher", "random", "--supernet", run, "--trials", "2", "--out", reuse, "--quiet")
    assert again.returncode == 0, again.stderr
    assert not (reuse / "supernet").exists()
    assert [t["values"] for t in finished(reuse)] == [t["values"] for t in trials[:2]]


@pytest.mark.slow  # a DARTS run, then a study: the full suite runs it
def test_oneshot_reuses_a_darts_supernet_and_nsga2_exports_a_pareto_front(tmp_path, cli):
    darts = tmp_path / "darts"
    result = cli("search", "--out", darts, "--k", "2", *QUICK)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "nsga2"
    result = cli("search", "--searcher", "nsga2", "--supernet", darts, "--objectives", "loss,flops", "--trials", "12",
                 "--out", run, "--quiet")
    assert result.returncode == 0, result.stderr
    assert not (run / "supernet").exists()  # scored with the DARTS run's weights
    settings = yaml.safe_load((run / "config.yaml").read_text())["settings"]
    assert settings["k"] == 2 and settings["data"] == DATA  # taken from the DARTS run
    summary = json.loads((run / "summary.json").read_text())
    front = summary["pareto"]
    assert front and all((run / m["file"]).is_file() for m in front)
    assert summary["pareto_plot"] == "pareto.png" and (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    points = [tuple(m["values"]) for m in front]
    for loss, flops in points:
        assert not any(l2 <= loss and f2 <= flops and (l2, f2) != (loss, flops) for l2, f2 in points)
    for member in front:
        genotype = Genotype.load(run / member["file"])
        assert all(len(layer) == 2 for layer in genotype.layers)
        assert genotype.provenance["flops"] == member["values"][1] == member["metrics"]["flops"]


@pytest.mark.slow  # trains a model per trial: the full suite runs it
def test_the_train_evaluator_reports_each_epoch_and_the_median_pruner_stops_trials(tmp_path, cli):
    run = tmp_path / "train"
    result = cli("search", "--searcher", "random", "--evaluator", "train", "--train-epochs", "3", "--pruner", "median",
                 "--trials", "10", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    assert not (run / "supernet").exists()
    trials = json.loads((run / "trials.json").read_text())["trials"]
    assert len(finished(run)) == 10
    study = optuna.load_study(study_name="scansearch", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in complete)
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)


@pytest.mark.slow  # three processes: the full suite runs it
def test_two_workers_run_one_study_from_the_command_line(tmp_path, cli):
    run = tmp_path / "workers"
    result = cli("search", "--searcher", "random", "--workers", "2", "--trials", "10", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    trials = json.loads((run / "trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == list(range(len(trials)))
    assert 10 <= len(finished(run)) <= 11 and all(t["state"] == "COMPLETE" for t in trials)


@pytest.mark.parametrize("args, fragments", [
    (["--trials", "0"], ["--trials"]),
    (["--workers", "0"], ["--workers"]),
    (["--objectives", "speed"], ["--objectives", "speed"]),
    (["--objectives", "flops,loss"], ["first objective"]),
    (["--supernet", "/no/such/run"], ["/no/such/run"]),
    (["--pruner", "median"], ["--pruner", "--evaluator train"]),
    (["--evaluator", "train", "--supernet", "x"], ["--supernet"]),
    (["--evaluator", "train", "--pruner", "median", "--objectives", "loss,flops"], ["--pruner", "single-objective"]),
    (["--evaluator", "zero-cost", "--objectives", "top1"], ["zero-cost", "'top1'"]),
    (["--storage", "nowhere"], ["--storage nowhere", "URL"]),
    (["--storage", "/no/such/dir/s.journal"], ["folder does not exist"]),
    (["--seeds", "0,1", "--supernet", "x"], ["--seeds and --supernet"]),
    (["--heartbeat", "5"], ["--heartbeat", "database --storage"]),
    (["--storage", "sqlite:///s.db", "--heartbeat", "0.5"], ["--heartbeat must be between 1 and 3600"]),
    (["--join"], ["--join needs --storage"]),
    (["--join", "--storage", "s.journal"], ["--searcher", "settings it was created with"]),
    (["--join", "--storage", "sqlite:///s.db"], ["SQLite has no row locks"]),
    (["--storage", "sqlite:///s.db", "--workers", "2"], ["SQLite has no row locks", "PostgreSQL"]),
    (["--join", "--resume", "--out", "r"], ["--join starts a run folder of its own"]),
])
def test_bad_optuna_options_are_one_line_and_leave_nothing(args, fragments, tmp_path, cli):
    result = cli("search", "--searcher", "tpe", *args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # three searches: the full suite runs it
def test_a_study_in_a_shared_storage_is_not_joined_by_a_new_run(tmp_path, cli):
    shared = tmp_path / "shared.journal"
    first = cli("search", "--searcher", "random", "--evaluator", "zero-cost", "--proxy", "locality", "--trials", "3",
                "--storage", shared, "--out", tmp_path / "a", *QUICK)
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "a" / "study.journal").exists()
    second = cli("search", "--searcher", "random", "--evaluator", "zero-cost", "--proxy", "locality", "--trials", "3",
                 "--storage", shared, "--out", tmp_path / "b", *QUICK)
    assert_one_line_error(second, "already holds a study named 'scansearch'", "--study")
    assert not (tmp_path / "b").exists()
    other = cli("search", "--searcher", "random", "--evaluator", "zero-cost", "--proxy", "locality", "--trials", "3",
                "--storage", shared, "--study", "second", "--out", tmp_path / "b", *QUICK)
    assert other.returncode == 0, other.stderr
    names = {s.study_name for s in optuna.get_all_study_summaries(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(shared))))}
    assert names == {"scansearch", "second"}


@pytest.mark.slow  # a DARTS run: the full suite runs it
def test_supernet_settings_that_differ_from_the_given_options_are_refused(tmp_path, cli):
    darts = tmp_path / "darts"
    assert cli("search", "--out", darts, *QUICK).returncode == 0
    result = cli("search", "--searcher", "tpe", "--supernet", darts, "--k", "2", "--out", tmp_path / "x")
    assert_one_line_error(result, "--k", "trained with None")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # trains a model per trial: the full suite runs it
def test_the_train_evaluator_with_two_objectives_exports_a_front(tmp_path, cli):
    run = tmp_path / "front"
    result = cli("search", "--searcher", "nsga2", "--evaluator", "train", "--train-epochs", "1",
                 "--objectives", "loss,params", "--trials", "4", "--out", run, *QUICK)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "summary.json").read_text())["pareto"]


@pytest.mark.slow  # a search killed mid-trial, then resumed
def test_a_killed_search_resumes_with_every_finished_trial(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    args = [sys.executable, "-m", "scansearch", "search", "--searcher", "random", "--evaluator", "train",
            "--train-epochs", "2", "--trials", "40", "--out", str(run), *QUICK]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = run / "study.journal"
    storage = None
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            time.sleep(0.5)
            if journal.exists():
                storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
                summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
                study = optuna.load_study(study_name="scansearch", storage=storage) if summaries else None
                if study is not None:
                    states = [t.state for t in study.trials]
                    if states.count(optuna.trial.TrialState.COMPLETE) >= 3 and "RUNNING" in [s.name for s in states]:
                        break
        else:
            pytest.fail("the search finished no trial in time")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    before = {t.number: (t.params, t.values) for t in optuna.load_study(study_name="scansearch", storage=storage).trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    from helpers import run_cli

    result = run_cli("search", "--resume", "--out", run, "--trials", str(len(before) + 2), "--quiet")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="scansearch", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    after = {t.number: (t.params, t.values) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(after[n] == before[n] for n in before)  # every finished trial kept as it was
    assert len(after) == len(before) + 2
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and any(t.user_attrs.get("retry_of") == failed[0].number for t in study.trials)
    assert "were running when the search stopped" in (run / "log.txt").read_text()
