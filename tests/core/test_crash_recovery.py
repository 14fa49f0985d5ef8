"""Crash recovery through the command line: a search killed with SIGKILL (between epochs,
within an epoch, while a checkpoint or the genotype is renamed into place) resumes to the
very weights, alphas and genotype of a run that was never interrupted; an Optuna study
killed mid-trial keeps its finished trials and retries the killed one; no half-written
genotype, checkpoint or weights file is ever left in place; a run whose loss or weights go
NaN or infinite stops with exit code 3 and keeps the last good checkpoint.

The faults are planted by ``crash_child.py``, which runs the command line in a child
process that kills itself (SIGKILL: no handler, no clean-up) or poisons a weight at a
chosen point.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scansearch.training_state import load_checkpoint

CHILD = Path(__file__).with_name("crash_child.py")
KILLED = -signal.SIGKILL
# 8 training and 3 validation batches at batch size 32: an epoch's architecture steps end
# mid-way through the validation stream, which a resumed search must pick up where it was
DATA = "planted:grid=8,motifs_per_image=2,n_train=256,n_val=96,n_test=32"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4"]
# drop path draws from the global RNG, which a resumed search must restore; no warm-up, so
# that the alphas move from the first epoch on
SEARCH = ["search", "--space", "local8", "--model", "local_vim_micro", *TINY, "--set", "drop_path_rate=0.1",
          "--data", DATA, "--epochs", "3", "--warmup-epochs", "0", "--batch-size", "32", "--finetune-steps", "3",
          "--quiet"]
TRAIN = ["train", "local_vim_micro", *TINY, "--data", DATA, "--epochs", "2", "--batch-size", "32", "--quiet"]
TIMING = ("seconds", "img_per_s")  # the only history entries that differ between identical runs


def scansearch(*args, fault: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m scansearch ARGS``, or the same through crash_child.py with ``fault`` planted."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    head = [sys.executable, "-m", "scansearch"] if fault is None else [sys.executable, str(CHILD), fault, "--"]
    return subprocess.run([*head, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


def assert_killed(result) -> None:
    assert result.returncode == KILLED, (result.returncode, result.stderr)


def assert_ok(result) -> None:
    assert result.returncode == 0, result.stderr


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def assert_same_search(run: Path, straight: Path) -> None:
    """Bit for bit the uninterrupted search: per-epoch alphas and metrics, the final weights,
    alphas and both optimisers, the genotype and the selection."""
    ours, theirs = (json.loads((r / "alphas.json").read_text()) for r in (run, straight))
    assert [e["weights"] for e in ours["epochs"]] == [e["weights"] for e in theirs["epochs"]]
    assert len(ours["epochs"]) == 3
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    assert_same_tensors(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key in a["optimizer"]["state"]:
        assert_same_tensors(a["optimizer"]["state"][key], b["optimizer"]["state"][key])
    assert a["hooks"][0]["val_position"] == b["hooks"][0]["val_position"]
    for key, value in a["hooks"][0]["arch_optimizer"]["state"].items():
        assert_same_tensors(value, b["hooks"][0]["arch_optimizer"]["state"][key])
    assert without_timing(a["history"]) == without_timing(b["history"])
    # the genotype (layers, alphas, margins) and every selection score, to the last digit
    for name in ("genotype.yaml", "selection.json"):
        assert (run / name).read_text() == (straight / name).read_text(), name


def all_finite(value) -> bool:
    """No NaN or infinity anywhere in a JSON value or a dict of tensors."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    return True


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted search every resumed one must reproduce."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert_ok(scansearch(*SEARCH, "--out", out))
    return out


# -- 1. a DARTS search killed, then resumed ---------------------------------------------------------
def kill_and_check(run: Path, fault: str, last_epoch: int, *, resume: bool) -> None:
    """Run (or resume) the search with ``fault``: it must die by SIGKILL and leave the last
    complete checkpoint, of ``last_epoch``, whole, and no genotype."""
    args = ["search", "--out", run, "--resume", "--quiet"] if resume else [*SEARCH, "--out", run]
    assert_killed(scansearch(*args, fault=fault))
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == last_epoch and all_finite(state["model"]), fault
    assert not (run / "genotype.yaml").exists(), fault


CHAINS = {
    # right after epoch 1's checkpoint is on disk; then 4 of epoch 2's 8 steps in, its checkpoint not yet
    "between_and_during_epochs": [("checkpoint:1", 1), ("step:2:4", 1)],
    # epoch 2's checkpoint written but not renamed (epoch 1's was); then training and selection done,
    # the genotype written but not renamed
    "renaming_checkpoint_and_genotype": [("replace:checkpoint.pt:2", 1), ("replace:genotype.yaml:1", 3)],
}


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
def test_a_search_killed_and_resumed_ends_as_the_uninterrupted_one(straight, tmp_path, chain):
    """Killed with SIGKILL at each point of the chain in turn, resumed each time with
    ``--resume``: bit for bit the uninterrupted search's weights, alphas and genotype."""
    run = tmp_path / "run"
    for n, (fault, last_epoch) in enumerate(CHAINS[chain]):
        kill_and_check(run, fault, last_epoch, resume=n > 0)
    unfinished = scansearch("export", run)
    assert unfinished.returncode == 2 and "has not written genotype.yaml" in unfinished.stderr
    assert_ok(scansearch("search", "--out", run, "--resume", "--quiet"))
    assert_same_search(run, straight)
    assert (run / "log.txt").read_text().count("resumed") == len(CHAINS[chain])


# -- 2. an Optuna study killed mid-trial, then resumed ----------------------------------------------
def load_journal(run: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    return optuna.load_study(study_name="scansearch", storage=storage)


@pytest.mark.slow  # killed and resumed in subprocesses: the full suite runs it
def test_a_killed_optuna_study_keeps_its_trials_and_retries_the_killed_one(tmp_path):
    from optuna.trial import TrialState

    run = tmp_path / "run"
    study = ["search", "--searcher", "zero-cost", "--trials", "6", "--space", "local8", *TINY, "--data", DATA,
             "--batch-size", "32", "--quiet"]
    assert_killed(scansearch(*study, "--out", run, fault="evaluate:5"))  # killed while evaluating the 5th trial
    before = load_journal(run).get_trials(deepcopy=True)
    finished = {t.number: t for t in before if t.state == TrialState.COMPLETE}
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(finished) == 4 and len(running) == 1, [(t.number, t.state) for t in before]
    killed = running[0]
    assert killed.params  # it was being evaluated: its genotype is known

    assert_ok(scansearch("search", "--out", run, "--resume", "--quiet"))
    records = {t["number"]: t for t in json.loads((run / "trials.json").read_text())["trials"]}
    for number, trial in finished.items():  # every trial finished before the kill, unchanged
        record = records[number]
        assert record["state"] == "COMPLETE" and record["params"] == trial.params and record["values"] == trial.values
    assert records[killed.number]["state"] == "FAIL"
    retries = [t for t in records.values() if t["metrics"].get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0]["state"] == "COMPLETE" and retries[0]["params"] == killed.params
    assert sum(t["state"] == "COMPLETE" for t in records.values()) == 6  # the asked total, the retry included
    after = load_journal(run).get_trials(deepcopy=False)
    assert {t.number: (t.state.name, t.params, t.values) for t in after} == \
        {n: (t["state"], t["params"], t["values"]) for n, t in records.items()}
    assert json.loads((run / "summary.json").read_text())["trials"] == 6


# -- 3. no half-written file in place ---------------------------------------------------------------
@pytest.mark.slow  # killed and resumed in subprocesses: the full suite runs it
def test_a_kill_before_a_checkpoint_rename_keeps_the_previous_checkpoint_of_a_training_run(tmp_path):
    out = tmp_path / "model"
    assert_killed(scansearch(*TRAIN, "--out", out, fault="replace:checkpoint.pt:2"))
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and all_finite(state["model"])
    assert not (out / "weights.safetensors").exists()
    assert_ok(scansearch(*TRAIN, "--out", out, "--resume"))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


@pytest.fixture
def atomic_exchange(tmp_path):
    """Skip where folders cannot be exchanged in one step: there a model save takes two
    renames, and a crash between them leaves the folder aside under a ``.old`` name."""
    from scansearch import fileio

    a, b = tmp_path / ".probe-a", tmp_path / ".probe-b"
    a.mkdir()
    b.mkdir()
    exchanged = fileio.exchange(a, b)
    a.rmdir()
    b.rmdir()
    if not exchanged:
        pytest.skip("no atomic exchange of folders on this system or file system")


def model_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("weights.safetensors", "config.yaml", "genotype.yaml")}


@pytest.mark.slow  # killed and resumed in subprocesses: the full suite runs it
def test_a_kill_at_any_rename_of_a_model_save_leaves_the_old_model_or_the_new_one(tmp_path, atomic_exchange):
    """``derive --out`` over a saved model, killed before each rename its save makes in turn:
    the folder is always one whole model, the old or the new, never a mix and never absent."""
    from scansearch.models import load_model

    out = tmp_path / "model"
    derive = ["derive", "local_vim_micro", "--in-chans", "1", "--out", out]
    assert_ok(scansearch(*derive, "--classes", "3"))
    old = model_files(out)
    for rename in range(1, 10):
        result = scansearch(*derive, "--classes", "5", fault=f"replace:model:{rename}")
        if result.returncode == 0:  # every rename of the save was survived once
            break
        assert_killed(result)
        assert out.is_dir(), f"killed before rename {rename}: {sorted(p.name for p in tmp_path.iterdir())}"
        classes = load_model(out).head.out_features
        assert classes in (3, 5) and (classes == 5 or model_files(out) == old), rename
    else:
        pytest.fail("the save never finished")
    assert rename > 1 and load_model(out).head.out_features == 5


def assert_checkpoint_kept(out: Path) -> None:
    assert out.is_dir(), sorted(p.name for p in out.parent.iterdir())
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and all_finite(state["model"])
    assert not (out / "weights.safetensors").exists()


@pytest.mark.slow  # killed and resumed in subprocesses: the full suite runs it
def test_a_training_run_killed_while_saving_its_model_keeps_its_checkpoint_and_resumes(tmp_path, atomic_exchange):
    """``scansearch train`` killed before the rename that swaps its saved model into its run
    folder, then (where the swap takes two renames) before the second: the folder keeps its
    last checkpoint and holds no weights; ``--resume`` saves the model."""
    from scansearch.models import load_model

    out = tmp_path / "model"
    assert_killed(scansearch(*TRAIN, "--out", out, fault="replace:model:1"))
    assert_checkpoint_kept(out)
    result = scansearch(*TRAIN, "--out", out, "--resume", fault="replace:model:2")
    if result.returncode != 0:  # a second rename: the swap without an atomic exchange
        assert_killed(result)
        assert_checkpoint_kept(out)
        assert_ok(scansearch(*TRAIN, "--out", out, "--resume"))
    assert all_finite(dict(load_model(out).state_dict()))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


class RenameRefused(OSError):
    pass


@pytest.fixture(params=["exchange", "two_renames"])
def renames_fail(request, monkeypatch):
    """Every rename (or one-step exchange of folders) onto or from a path named in the
    returned set fails: a writer that does not go through a temporary file and a rename
    would change its target anyway. ``two_renames``: as where the system has no exchange."""
    from scansearch import fileio

    names: set[str] = set()

    def refusing(rename):
        def refuse(src, dst, *args, **kwargs):
            if {Path(src).name, Path(dst).name} & names:
                raise RenameRefused(f"rename of {dst} refused")
            return rename(src, dst, *args, **kwargs)
        return refuse

    monkeypatch.setattr(os, "replace", refusing(os.replace))
    if request.param == "exchange":
        monkeypatch.setattr(fileio, "exchange", refusing(fileio.exchange))
    else:
        monkeypatch.setattr(fileio, "exchange", lambda a, b: False)
    return names


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def assert_untouched(folder: Path, before: dict[str, bytes | None]) -> None:
    """The folder holds exactly what it held, byte for byte: no change, no temporary left."""
    assert snapshot(folder) == before


def test_every_writer_of_genotypes_checkpoints_and_weights_writes_through_a_rename(tmp_path, renames_fail, capsys,
                                                                                    one_torch_thread):
    from scansearch.cli import main
    from scansearch.models import build_model, load_model, save_model
    from scansearch.searchers.run import RunFolder
    from scansearch.training_state import save_checkpoint

    genotype = build_model("local_vim_micro", num_classes=3, in_chans=1).genotype
    # the run folder's genotype
    run = RunFolder.create(tmp_path / "run")
    run.write_genotype(genotype)
    before = snapshot(run.path)
    renames_fail.add("genotype.yaml")
    with pytest.raises(RenameRefused):
        run.write_genotype(dataclasses.replace(genotype, provenance={"written": "second"}))
    assert_untouched(run.path, before)
    assert run.read_genotype() == genotype
    # the training checkpoint
    save_checkpoint(run.file("checkpoint.pt"), {"epoch": 1, "w": torch.ones(2)})
    before = snapshot(run.path)
    renames_fail.clear()
    renames_fail.add("checkpoint.pt")
    with pytest.raises(RenameRefused):
        save_checkpoint(run.file("checkpoint.pt"), {"epoch": 2, "w": torch.zeros(2)})
    assert_untouched(run.path, before)
    assert load_checkpoint(run.file("checkpoint.pt"))["epoch"] == 1
    # the weights, as save_model writes them (train and derive call it)
    model_dir = tmp_path / "saved"
    save_model(build_model("local_vim_micro", num_classes=3, in_chans=1), model_dir)
    before = snapshot(tmp_path)
    renames_fail.clear()
    renames_fail.add("saved")
    with pytest.raises(RenameRefused):
        save_model(build_model("local_vim_micro", num_classes=5, in_chans=1), model_dir)
    assert_untouched(tmp_path, before)
    assert load_model(model_dir).head.out_features == 3
    # `derive --out` and `train --out` save through save_model: a refused rename is a system
    # error (exit 1), and nothing is left half-written
    assert main(["derive", "local_vim_micro", "--classes", "5", "--in-chans", "1", "--out", str(model_dir)]) == 1
    assert "rename of" in capsys.readouterr().err
    assert_untouched(tmp_path, before)
    trained = tmp_path / "trained"
    renames_fail.clear()
    renames_fail.add("trained")
    assert main(["train", "local_vim_micro", *TINY, "--data", DATA, "--epochs", "1", "--batch-size", "64",
                 "--quiet", "--out", str(trained)]) == 1
    assert "rename of" in capsys.readouterr().err
    assert not (trained / "weights.safetensors").exists()
    assert load_checkpoint(trained / "checkpoint.pt")["epoch"] == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- 4. divergence: exit code 3, the last good checkpoint kept ---------------------------------------
def assert_diverged(result) -> None:
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scansearch: diverged: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow  # killed and resumed in subprocesses: the full suite runs it
@pytest.mark.parametrize("fault", ["nan-start:2", "inf-end:2"])
def test_a_diverging_training_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, fault):
    """A weight made NaN as epoch 2 starts (the loss goes NaN), or infinite after its last step
    (every loss of the epoch finite, the weights not): exit 3, one line, epoch 1's checkpoint
    kept, no weights saved; resumed without the fault, the run finishes with finite weights."""
    from scansearch.models import load_model

    out = tmp_path / "model"
    result = scansearch(*TRAIN, "--out", out, fault=fault)
    assert_diverged(result)
    assert "epoch 2" in result.stderr
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and all_finite(state["model"]) and all_finite(state["optimizer"]["state"])
    assert not (out / "weights.safetensors").exists()
    assert all_finite(json.loads((out / "history.json").read_text()))
    assert_ok(scansearch(*TRAIN, "--out", out, "--resume"))
    assert all_finite(dict(load_model(out).state_dict()))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["nan-start:2", "inf-end:2"])
def test_a_diverging_search_stops_and_keeps_its_last_good_checkpoint(straight, tmp_path, fault):
    """The same for a DARTS search: no genotype and no NaN alphas written; resumed without the
    fault (once: both faults leave the same checkpoint), it ends bit for bit where the
    uninterrupted search ends."""
    run = tmp_path / "run"
    assert_diverged(scansearch(*SEARCH, "--out", run, fault=fault))
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 1 and all_finite(state["model"])
    assert not (run / "genotype.yaml").exists()
    alphas = json.loads((run / "alphas.json").read_text())
    assert len(alphas["epochs"]) == 1 and all_finite(alphas)
    if fault.startswith("inf"):
        assert_ok(scansearch("search", "--out", run, "--resume", "--quiet"))
        assert_same_search(run, straight)
