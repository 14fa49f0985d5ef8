"""Many workers, many machines: one Optuna study in a real PostgreSQL server.

The server is started by the test on 127.0.0.1 (Debian's ``postgresql`` packages, which
``.ci/run`` installs; the ``psycopg`` driver from the test extra). Four worker processes
(one that creates the study, three that ``--join`` it, as machines would) run 40 trials; one
is killed with SIGKILL in the middle of a trial. The study must end with exactly 40 completed
trials: none lost, none counted twice, the killed one retried by heartbeat.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from helpers import assert_one_line_error

DATA = "planted:grid=8,motifs_per_image=2,n_train=64,n_val=32,n_test=32"
TINY = ["--set", "dim=8", "--set", "depth=2", "--set", "d_state=4", "--set", "expand=1.0"]
SEARCH = ["--searcher", "zero-cost", "--proxy", "params", "--data", DATA, "--batch-size", "32", "--quiet", *TINY]
TRIALS = 40

# A worker whose evaluator logs the start and end of each trial (and takes a little longer), so
# that the test can kill it in the middle of one.
WORKER = """
import sys, time
from scansearch.searchers import zero_cost
log, delay = sys.argv[1], float(sys.argv[2])
evaluate = zero_cost.ZeroCost.__call__
def logged(self, layers, trial=None):
    with open(log, "a") as f:
        f.write(f"start {trial.number}\\n")
    time.sleep(delay)
    out = evaluate(self, layers, trial)
    with open(log, "a") as f:
        f.write(f"end {trial.number}\\n")
    return out
zero_cost.ZeroCost.__call__ = logged
from scansearch.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _pg_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of the test's own on 127.0.0.1 and a free port; its URL."""
    initdb, pg_ctl = _pg_program("initdb"), _pg_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql; .ci/run installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install 'scansearch[postgres]')")
    root = Path(tempfile.mkdtemp(prefix="scansearch-pg-"))
    as_server = []
    if os.geteuid() == 0:  # the server refuses to run as root: it runs as the postgres user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_server = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run([*as_server, initdb, "-D", str(data), "-U", "scansearch", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    started = subprocess.run([*as_server, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", options,
                              "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
    if started.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}")
    try:
        yield f"postgresql://scansearch@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_server, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _worker(log: Path, delay: float, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(log), str(delay), "search", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})})


def _lines(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def _storage(url: str):
    from scansearch.searchers.study import rdb_storage

    return rdb_storage(url, heartbeat=None)


def _wait_for_study(url: str, name: str, creator: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert creator.poll() is None, creator.communicate()
        if name in {s.study_name for s in optuna.get_all_study_summaries(_storage(url), include_best_trial=False)}:
            return
        time.sleep(0.5)
    pytest.fail(f"study {name} was not created within {timeout} s")


@pytest.mark.slow  # a database server and four worker processes: the full suite runs it
def test_four_workers_one_killed_mid_trial_finish_exactly_the_trials_asked(postgres, tmp_path):
    study_name = "four"
    logs = [tmp_path / f"worker-{i}.log" for i in range(4)]
    common = ["--storage", postgres, "--study", study_name]
    _storage(postgres)  # Optuna's tables exist before the workers start
    creator = _worker(logs[0], 0.3, *SEARCH, "--trials", TRIALS, "--heartbeat", 1, *common, "--out", tmp_path / "a")
    _wait_for_study(postgres, study_name, creator)
    joiners = [_worker(log, 0.3 if i else 1.0, "--join", *common, "--quiet", "--out", tmp_path / f"join-{i}")
               for i, log in enumerate(logs[1:])]
    victim, killed = joiners[0], None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline:  # kill it in the middle of its second trial
        lines = _lines(logs[1])
        starts = [line for line in lines if line.startswith("start")]
        if len(starts) >= 2 and lines[-1].startswith("start"):
            victim.send_signal(signal.SIGKILL)
            killed = int(lines[-1].split()[1])
        assert victim.poll() is None or killed is not None, victim.communicate()
        time.sleep(0.05)
    assert killed is not None, "the worker to kill never started a second trial"
    assert victim.wait(60) == -signal.SIGKILL
    assert f"end {killed}" not in _lines(logs[1])
    for process in (creator, *joiners[1:]):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, (out, err)

    study = optuna.load_study(study_name=study_name, storage=_storage(postgres))
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS, states                                  # none lost, none extra
    assert states.count(optuna.trial.TrialState.FAIL) == 1                 # only the killed one failed
    assert not [s for s in states if s in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    dead = trials[killed]
    assert dead.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE  # retried once
    assert retries[0].params == dead.params
    # no trial ran twice: the trials the workers finished are distinct (a genotype asked again
    # is scored from its earlier trial without running)
    ended = [int(line.split()[1]) for log in logs for line in _lines(log) if line.startswith("end")]
    assert len(ended) == len(set(ended)) and set(ended) <= {t.number for t in complete}
    # the creator and the joiners each exported the study's result into their own run folder
    for run in (tmp_path / "a", tmp_path / "join-1", tmp_path / "join-2"):
        exported = json.loads((run / "trials.json").read_text())["trials"]
        assert sum(t["state"] == "COMPLETE" for t in exported) == TRIALS, run
        assert (run / "genotype.yaml").is_file()


@pytest.mark.slow  # a database server and two searches: the full suite runs it
def test_join_takes_the_study_settings_and_refuses_others(postgres, tmp_path, cli):
    first = cli("search", *SEARCH, "--trials", 4, "--storage", postgres, "--study", "joined", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    again = cli("search", *SEARCH, "--trials", 4, "--storage", postgres, "--study", "joined", "--out", tmp_path / "b")
    assert_one_line_error(again, "already holds a study named 'joined'", "--join")
    assert not (tmp_path / "b").exists()
    other = cli("search", "--join", "--storage", postgres, "--study", "joined", "--trials", 9, "--out", tmp_path / "c")
    assert_one_line_error(other, "--trials", "settings it was created with")
    missing = cli("search", "--join", "--storage", postgres, "--study", "nope", "--out", tmp_path / "c")
    assert_one_line_error(missing, "no study named 'nope'")
    assert not (tmp_path / "c").exists()
    joined = cli("search", "--join", "--storage", postgres, "--study", "joined", "--quiet", "--out", tmp_path / "c")
    assert joined.returncode == 0, joined.stderr  # the study is finished: the joiner exports it
    settings = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["settings"]
    assert settings["proxy"] == "params" and settings["trials"] == 4 and settings["join"] is True
    assert "password" not in (tmp_path / "c" / "log.txt").read_text()


def test_an_unreachable_database_is_one_line_and_leaves_nothing(tmp_path, cli):
    pytest.importorskip("psycopg")
    port = _free_port()  # nothing listens there
    result = cli("search", *SEARCH, "--storage", f"postgresql://someone:secret@127.0.0.1:{port}/db",
                 "--out", tmp_path / "a")
    assert_one_line_error(result, "--storage", "cannot open the database")
    assert "secret" not in result.stderr
    assert not (tmp_path / "a").exists()
