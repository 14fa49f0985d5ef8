"""Many workers on one study in a database, as machines would run it.

    python examples/many_workers.py                                   # a journal file, 3 workers
    python examples/many_workers.py --storage postgresql://user@host/db --workers 8

The first process creates the study (its settings are stored in it); the others join it
with ``scansearch search --join``, as a command on another machine would. Each writes its
own run folder. The study ends with exactly ``--trials`` finished trials however many
workers run. On several machines, run the joining command below on each of them, against a
PostgreSQL database: its workers send heartbeats, so a trial whose worker dies is run again
while the study runs (a journal file has none: such a trial is run again on ``--resume``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna

SEARCH = ["--searcher", "zero-cost", "--proxy", "locality", "--set", "dim=8", "--set", "depth=2", "--quiet"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a database URL or a .journal file (default: OUT/study.journal)")
    parser.add_argument("--study", default="many-workers", help="the study's name (default many-workers)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes in all (default 3)")
    parser.add_argument("--trials", type=int, default=24, help="trials the study runs (default 24)")
    parser.add_argument("--out", default=None, help="folder for the run folders (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="scansearch-workers-"))
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or str(out / "study.journal")
    common = ["--storage", storage, "--study", args.study]

    from scansearch.searchers.study import open_storage

    db = open_storage(storage, out, heartbeat=None)  # makes the file, or Optuna's tables, before a worker starts

    command = [sys.executable, "-m", "scansearch", "search"]
    creator = subprocess.Popen([*command, *SEARCH, "--trials", str(args.trials), *common, "--out",
                                str(out / "worker-0")])
    while args.study not in {s.study_name for s in optuna.get_all_study_summaries(db, include_best_trial=False)}:
        if creator.poll() is not None:
            sys.exit(f"the creating worker stopped with exit code {creator.returncode}")
        time.sleep(0.5)
    join = [*command, "--join", *common]
    print("joining, as each other machine would:", " ".join(join), "--out RUN", flush=True)
    joiners = [subprocess.Popen([*join, "--quiet", "--out", str(out / f"worker-{i}")])
               for i in range(1, args.workers)]
    codes = [p.wait() for p in (creator, *joiners)]
    study = optuna.load_study(study_name=args.study, storage=db)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    print(f"exit codes {codes}; trials by state: {dict(states)}; best loss {study.best_value:.4g}")
    print(f"run folders: {', '.join(str(out / f'worker-{i}') for i in range(args.workers))}")
    if any(codes) or states["COMPLETE"] != args.trials:
        sys.exit(1)


if __name__ == "__main__":
    main()
