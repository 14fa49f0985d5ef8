"""Many workers on one study: how close N workers come to N times one worker's speed.

Each trial of a queued study (``searchers/study.py``) is a genotype whose evaluation is a
fixed wait (``--trial-seconds``), the stand-in for a trial that keeps a GPU busy and leaves
the CPU idle. The study is timed with 1, 2, 4, ... worker processes. The processes start
and open the storage first, and the clock runs from the moment they are all released. The
table gives the wall time, the speed-up over one worker, the efficiency (speed-up / N) and
the trials finished, which must equal ``--trials`` every time. What the efficiency misses is
the queue's overhead: taking a trial, the sampler, recording the result.

    python benchmarks/bench_workers.py                                 # a journal file
    python benchmarks/bench_workers.py --storage postgresql://user@host/db --workers 1,2,4,8
"""
from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _worker(storage: str, study: str, trials: int, seconds: float, seed: int, ready, go) -> None:
    import optuna

    from scansearch.searchers.encoding import GenotypeEncoding
    from scansearch.searchers.study import Objective, create_study, make_sampler, open_storage, run_study
    from scansearch.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    encoding = GenotypeEncoding(load_space("local8"), layers=4)
    queued = create_study(open_storage(storage, Path("."), heartbeat=10), study, ("loss",),
                          make_sampler("random", seed, ("loss",), trials), None, resume=True, encoding=encoding)

    def wait(layers, trial=None):
        time.sleep(seconds)
        return {"loss": float(sum(len(layer) for layer in layers))}

    ready.release()
    go.wait()
    run_study(queued, Objective(encoding, wait, ("loss",)), trials, fill=False)


def run_once(storage: str, name: str, workers: int, trials: int, seconds: float) -> tuple[float, int]:
    import optuna

    from scansearch.searchers.encoding import GenotypeEncoding
    from scansearch.searchers.study import create_study, fill_queue, make_sampler, open_storage
    from scansearch.spaces import load_space

    encoding = GenotypeEncoding(load_space("local8"), layers=4)
    study = create_study(open_storage(storage, Path("."), heartbeat=10), name, ("loss",), make_sampler("random", 0, ("loss",),
                         trials), None, resume=False, encoding=encoding, trials=trials)
    fill_queue(study, trials)
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Semaphore(0), spawn.Event()
    processes = [spawn.Process(target=_worker, args=(storage, name, trials, seconds, i + 1, ready, go))
                 for i in range(workers)]
    for p in processes:
        p.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for p in processes:
        p.join()
    wall = time.perf_counter() - started
    if any(p.exitcode for p in processes):
        raise SystemExit(f"a worker failed: exit codes {[p.exitcode for p in processes]}")
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return wall, complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a database URL or a .journal file (default: a journal file in a "
                                          "temporary folder; SQLite cannot serve several workers)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to time (default 1,2,4)")
    parser.add_argument("--trials", type=int, default=40, help="trials of each study (default 40)")
    parser.add_argument("--trial-seconds", type=float, default=0.5, help="each trial's wait (default 0.5)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = args.storage or str(Path(tempfile.mkdtemp(prefix="bench-workers-")) / "study.journal")
    counts = [int(n) for n in args.workers.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for n in counts:
        wall, complete = run_once(storage, f"bench-{stamp}-{n}", n, args.trials, args.trial_seconds)
        rows.append((n, wall, complete))
    one = rows[0][1] * rows[0][0]  # one worker's time (scaled, should the list not start at 1)
    kind = storage.split("://")[0] if "://" in storage else "a journal file"
    table = Table(title=f"{args.trials} trials of {args.trial_seconds} s on {kind}: "
                        f"ideal for N workers is {args.trials * args.trial_seconds:.0f} s / N")
    for column in ("workers", "wall s", "speed-up", "efficiency", "complete trials"):
        table.add_column(column, justify="right")
    for n, wall, complete in rows:
        table.add_row(str(n), f"{wall:.2f}", f"{one / wall:.2f}", f"{one / wall / n:.0%}", f"{complete}/{args.trials}")
    Console().print(table)


if __name__ == "__main__":
    main()
