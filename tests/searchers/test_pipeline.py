"""run_search from Python runs the search the CLI runs; a run folder has one owner at a time."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from helpers import assert_one_line_error, run_cli
from scansearch import Genotype
from scansearch.errors import InputError
from scansearch.searchers import RunContext, SearchSettings, run_search
from scansearch.searchers.run import RunError, RunFolder

DATA = "planted:grid=8,motifs_per_image=2,n_train=64,n_val=32,n_test=32"
OVERRIDES = ("dim=8", "depth=2", "d_state=4", "expand=1.0")
TINY = [arg for item in OVERRIDES for arg in ("--set", item)]

HOLD = """
import sys, time
from scansearch.searchers.run import RunFolder
lock = RunFolder(sys.argv[1]).lock()
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(folder):
    """A process that takes ``folder``'s lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow  # a search or two: the full suite runs it
def test_python_and_the_command_line_run_the_same_search(tmp_path):
    settings = SearchSettings(data=DATA, epochs=1, batch_size=32, k=2, set=OVERRIDES)
    outcome = run_search(settings, tmp_path / "py", ctx=RunContext(device="cpu", quiet=True))
    result = run_cli("search", "--data", DATA, "--epochs", "1", "--batch-size", "32", "--k", "2", "--device", "cpu",
                     "--quiet", "--out", tmp_path / "cli", *TINY,
                     env={"OMP_NUM_THREADS": str(torch.get_num_threads())})  # the same threads: the same sums
    assert result.returncode == 0, result.stderr
    cli = RunFolder(tmp_path / "cli")
    assert outcome.genotype.layers == cli.read_genotype().layers
    assert outcome.folder.read_config()["settings"] == cli.read_config()["settings"]
    for name in ("alphas.json", "selection.json"):  # alphas and selection scores, bit for bit
        assert outcome.folder.read_json(name) == cli.read_json(name)
    assert outcome.to_train.is_file() and len(outcome.scores) == 2
    assert not (tmp_path / "py" / RunFolder.LOCK).exists()  # released at the end


@pytest.mark.slow  # a search or two: the full suite runs it
def test_resume_from_python_reads_the_stored_settings(tmp_path):
    run = tmp_path / "run"
    settings = SearchSettings(data=DATA, epochs=1, batch_size=32, set=OVERRIDES)
    first = run_search(settings, run, ctx=RunContext(device="cpu", quiet=True))
    again = run_search(None, run, resume=True, ctx=RunContext(device="cpu", quiet=True))
    assert again.genotype.layers == first.genotype.layers
    with pytest.raises(InputError, match="--resume needs --out"):
        run_search(None, resume=True)


def test_a_lock_refuses_a_second_owner_and_a_killed_owner_leaves_none(tmp_path):
    folder = RunFolder(tmp_path)
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunError, match=rf"another scansearch process \(host .* pid {holder.pid}\) is running"):
            folder.lock()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        holder.wait()
    assert (tmp_path / RunFolder.LOCK).exists()  # the file stays, its lock went with the process
    with folder.lock() as lock:
        assert lock.stale == f"host {os.uname().nodename} pid {holder.pid}"
        assert f"pid {os.getpid()}" in (tmp_path / RunFolder.LOCK).read_text()
    assert not (tmp_path / RunFolder.LOCK).exists()
    with folder.lock() as lock:  # released: free again, and nothing stale
        assert lock.stale is None


@pytest.mark.slow  # a search or two: the full suite runs it
def test_a_second_process_cannot_resume_a_run_that_one_drives(tmp_path):
    run = tmp_path / "run"
    result = run_cli("search", "--data", DATA, "--epochs", "1", "--batch-size", "32", "--quiet", "--out", run, *TINY)
    assert result.returncode == 0, result.stderr
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    holder = _hold_lock(run)
    try:
        result = run_cli("search", "--resume", "--out", run, "--quiet")
        assert_one_line_error(result, str(run), "another scansearch process", f"pid {holder.pid}")
        after = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        assert after == {**before, RunFolder.LOCK: after[RunFolder.LOCK]}  # nothing else written
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_resumes_of_one_interrupted_run_one_is_refused(tmp_path):
    """As a user would try it: a search stopped in its second epoch, then resumed from two
    shells at once. One continues; the other is refused and the run ends whole."""
    run = tmp_path / "run"
    args = ["search", "--data", DATA, "--epochs", "3", "--batch-size", "32", "--quiet", "--out", str(run), *TINY]
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.Popen([sys.executable, "-m", "scansearch", *args], env=env)
    deadline = time.time() + 300
    while not (run / RunFolder.CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # interrupted after its first epoch
    first.wait()
    resume = [sys.executable, "-m", "scansearch", "search", "--resume", "--out", str(run), "--quiet"]
    procs = [subprocess.Popen(resume, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another scansearch process" in refused and len(refused.strip().splitlines()) == 1
    assert Genotype.load(run / "genotype.yaml").layers
    summary = json.loads((run / "summary.json").read_text())
    assert summary["genotype"]["layers"] and yaml.safe_load((run / "config.yaml").read_text())["complete"]
