"""Data-parallel searches under torchrun: two CPU processes (gloo) against one process.

The same global batch, shared between the ranks, must give the weights, alphas and genotype
one process gives (within float32 rounding: the gradients are summed in another order), and
only rank 0 may write or print.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from scansearch.distributed import DistributedError, check_global_batch, check_shardable, shard, shard_bounds

TINY = ["--model", "local_vim_micro", "--set", "dim=8", "--set", "depth=2", "--set", "d_state=4",
        "--data", "digits", "--batch-size", "32"]
RTOL, ATOL = 1e-4, 1e-5
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run_one(args, cwd, timeout=300):
    """`python -m scansearch ARGS` in one process."""
    return subprocess.run([sys.executable, "-m", "scansearch", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_ranks(args, cwd, nproc=2, module=True, timeout=300, monitor=None):
    """ARGS under torchrun with ``nproc`` processes; returns (CompletedProcess, {rank: (stdout, stderr)})
    with each rank's own output (torchrun's --log-dir/--redirects). ``monitor``: seconds between
    torchrun's looks at its processes (once one has failed it stops the others: a longer
    interval lets every rank reach its own end, to see how each ends)."""
    logs = Path(tempfile.mkdtemp(prefix="torchrun-logs-"))  # outside cwd: cwd holds what the ranks wrote
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--log-dir={logs}", "--redirects=3",
           *([f"--monitor-interval={monitor}"] if monitor else []), *(["-m", "scansearch"] if module else []), *map(str, args)]
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    ranks = {}
    for rank in range(nproc):
        found = glob.glob(str(logs / "*" / "attempt_0" / str(rank)))
        assert len(found) == 1, (found, result.stderr[-3000:])
        ranks[rank] = tuple((Path(found[0]) / name).read_text() for name in ("stdout.log", "stderr.log"))
    return result, ranks


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=RTOL, atol=ATOL), (key, (a[key] - b[key]).abs().max())
            worst = max(worst, (a[key] - b[key]).abs().max().item())
        else:
            assert torch.equal(a[key], b[key]), key
    return worst


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- the global batch, shared out ---------------------------------------------------------------
def test_shard_bounds_cover_the_batch_in_order():
    for n in (1, 7, 32, 33):
        for world in (1, 2, 3, 4):
            if n < world:
                continue
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_shard_weights_make_the_mean_of_slice_losses_the_batch_loss():
    images, labels = torch.randn(11, 3), torch.randint(0, 4, (11,))
    per_sample = images.sum(1) ** 2
    slices = [shard((images, labels), index=r, world=3) for r in range(3)]
    assert torch.equal(torch.cat([s[0][0] for s in slices]), images)
    assert torch.equal(torch.cat([s[0][1] for s in slices]), labels)
    assert [len(s[0][1]) for s in slices] == [4, 4, 3]
    mean_of_ranks = sum((local[0].sum(1) ** 2).mean() * w for local, w in slices) / 3
    assert torch.allclose(mean_of_ranks, per_sample.mean())
    even = [shard((images[:10], labels[:10]), index=r, world=2) for r in range(2)]
    assert [w for _, w in even] == [1.0, 1.0] and len(even[1][0][0]) == 5


def test_one_process_gets_the_batch_untouched():
    batch = (torch.randn(5, 2), torch.arange(5))
    local, weight = shard(batch)
    assert weight == 1.0 and all(a is b for a, b in zip(local, batch))


def test_batches_that_cannot_be_shared_are_refused():
    check_global_batch(32, world=2)
    with pytest.raises(DistributedError, match="--batch-size 33 is the global batch"):
        check_global_batch(33, world=2)
    with pytest.raises(DistributedError, match="cannot be shared"):
        shard((torch.zeros(1, 2), torch.zeros(1)), index=0, world=2)

    class Loader:
        num_samples, batch_size = 65, 32
    with pytest.raises(DistributedError, match="last training batch holds 1 sample"):
        check_shardable(Loader(), "training", world=2)
    check_shardable(Loader(), "training", world=1)


# -- DARTS: two processes against one ----------------------------------------------------------
@pytest.fixture(scope="module")
def darts_runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    args = ["search", *TINY, "--epochs", "2", "--out", "run"]
    single = run_one([*args, "--quiet"], one)
    assert single.returncode == 0, single.stderr[-3000:]
    multi, ranks = run_ranks(args, two)  # not quiet: rank 0 prints, rank 1 must not
    assert multi.returncode == 0, (multi.stderr[-3000:], ranks)
    return one, two, ranks


@pytest.mark.slow
def test_two_processes_train_the_weights_and_alphas_one_process_trains(darts_runs):
    one, two, _ = darts_runs
    a = torch.load(one / "run" / "checkpoint.pt", weights_only=False)
    b = torch.load(two / "run" / "checkpoint.pt", weights_only=False)
    worst = max_difference(a["model"], b["model"])
    print(f"max |difference| of the supernet weights and alphas: {worst:.3g}")
    assert (a["model"]["alphas"] - b["model"]["alphas"]).abs().max() <= ATOL + RTOL
    hist_a, hist_b = a["hooks"][0]["history"], b["hooks"][0]["history"]
    assert len(hist_a) == len(hist_b) == 2
    for x, y in zip(hist_a, hist_b):
        assert torch.allclose(torch.tensor(x["weights"]), torch.tensor(y["weights"]), atol=1e-5)
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)  # over the global batches
    layers = [yaml_layers(d / "run" / "genotype.yaml") for d in (one, two)]
    assert layers[0] == layers[1]


def yaml_layers(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())["layers"]


@pytest.mark.slow
def test_only_rank_zero_writes_and_prints(darts_runs):
    one, two, ranks = darts_runs
    assert files_below(one / "run") == files_below(two / "run")
    assert sorted(p.name for p in two.iterdir()) == ["run"]  # nothing else written
    out0, err0 = ranks[0]
    assert out0.count("next: scansearch train") == 1 and out0.count("searching") == 1
    assert err0.count("epoch 1/2") == 1 and err0.count("epoch 2/2") == 1  # rank 0's progress lines
    assert ranks[1] == ("", "")  # rank 1: not a line
    log = (two / "run" / "log.txt").read_text().splitlines()
    assert sum("started" in line for line in log) == 1 and sum("epoch 1:" in line for line in log) == 1


@pytest.mark.slow
def test_resume_under_torchrun_reads_rank_zeros_checkpoint(darts_runs):
    """A finished run resumed by two processes: both load the checkpoint (no epoch left to
    train), select again, and rank 0 writes the same genotype."""
    _, two, _ = darts_runs
    before = yaml_layers(two / "run" / "genotype.yaml")
    result, ranks = run_ranks(["search", "--resume", "--out", "run", "--quiet"], two)
    assert result.returncode == 0, (result.stderr[-3000:], ranks)
    assert yaml_layers(two / "run" / "genotype.yaml") == before
    assert ranks[1] == ("", "")
    assert (two / "run" / "log.txt").read_text().count("resumed") == 1


# -- second order, and batches that do not split evenly -----------------------------------------
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from scansearch import distributed
    from scansearch.data import DataBundle, TensorLoader
    from scansearch.searchers.darts import DartsConfig, DartsStep
    from scansearch.searchers.supernet import Supernet
    from scansearch.spaces import load_space
    from scansearch.train import TrainConfig, fit

    distributed.init("cpu")
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(46, 1, 8, 8, generator=gen), torch.randint(0, 4, (46,), generator=gen)
    # 23 images in batches of 4: the last batch of 3 is shared 2 + 1
    data = DataBundle("tiny", TensorLoader(images[:23], labels[:23], 4, shuffle=True, seed=0),
                      TensorLoader(images[23:], labels[23:], 4, seed=0), None, 4, list("abcd"), 8, 1)
    torch.manual_seed(0)
    net = Supernet("local_vim_micro", load_space("local8"), num_classes=4, img_size=8, in_chans=1,
                   dim=8, depth=2, d_state=4)
    config = TrainConfig(epochs=1, lr=1e-2, warmup_epochs=0.5, device="cpu", seed=0)
    step = DartsStep(net, DartsConfig(order=int(sys.argv[2]), mode=sys.argv[3]), data, 1, None)
    fit(net, data, config, hooks=[step], progress=False, step_fn=step, param_filter=Supernet.is_weight)
    if distributed.is_main():
        torch.save(net.state_dict(), sys.argv[1])
    distributed.cleanup()
""")


@pytest.mark.slow
@pytest.mark.parametrize("order, mode", [(2, "bilevel"), (1, "single")])
def test_second_order_and_uneven_batches_match_one_process(tmp_path, order, mode):
    script = tmp_path / "darts_tiny.py"
    script.write_text(SCRIPT)
    single = subprocess.run([sys.executable, str(script), "one.pt", str(order), mode], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    multi, ranks = run_ranks([str(script), "two.pt", order, mode], tmp_path, module=False)
    assert multi.returncode == 0, (multi.stderr[-3000:], ranks)
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    worst = max_difference(a, b)
    print(f"order {order} {mode}, uneven batches: max |difference| {worst:.3g}")
    assert not torch.equal(a["alphas"], torch.zeros_like(a["alphas"]))


# -- mistakes end every rank ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_exits_2_on_every_rank(tmp_path):
    result, ranks = run_ranks(["search", *TINY[:-1], "33", "--epochs", "2", "--out", "run"], tmp_path, timeout=120,
                               monitor=3)
    assert result.returncode != 0
    assert result.stderr.count("exitcode  : 2") == 2, result.stderr[-3000:]
    for rank, (out, err) in ranks.items():
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "--batch-size 33 is the global batch" in lines[0], (rank, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_folder_refused_on_rank_zero_ends_every_rank_with_its_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("complete: true\n")
    result, ranks = run_ranks(["search", *TINY, "--epochs", "2", "--out", "run"], tmp_path, timeout=120,
                               monitor=3)
    assert result.stderr.count("exitcode  : 2") == 2, result.stderr[-3000:]
    for rank, (_, err) in ranks.items():
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "already holds a run" in lines[0], (rank, err)


# -- the Optuna train evaluator ------------------------------------------------------------------
@pytest.mark.slow
def test_the_train_evaluator_trains_each_trial_on_every_rank(tmp_path):
    args = ["search", "--searcher", "random", "--evaluator", "train", "--trials", "2", "--train-epochs", "1",
            *TINY, "--out", "run", "--quiet"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_one(args, tmp_path / "one")
    assert single.returncode == 0, single.stderr[-3000:]
    multi, ranks = run_ranks(args, tmp_path / "two")
    assert multi.returncode == 0, (multi.stderr[-3000:], ranks)
    trials = [json.loads((tmp_path / d / "run" / "trials.json").read_text())["trials"] for d in ("one", "two")]
    assert [t["params"] for t in trials[0]] == [t["params"] for t in trials[1]]
    assert all(t["state"] == "COMPLETE" for t in trials[1])
    for x, y in zip(*trials):
        assert x["values"][0] == pytest.approx(y["values"][0], rel=1e-5)
    assert files_below(tmp_path / "one" / "run") == files_below(tmp_path / "two" / "run")
    assert ranks[1] == ("", "")


@pytest.mark.slow
def test_what_cannot_run_distributed_is_refused(tmp_path):
    result, ranks = run_ranks(["search", "--searcher", "tpe", *TINY, "--out", "run"], tmp_path, timeout=120,
                               monitor=3)
    assert result.stderr.count("exitcode  : 2") == 2, result.stderr[-3000:]
    for rank, (_, err) in ranks.items():
        assert "does not run across processes" in err and len(err.strip().splitlines()) == 1, err
    train = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            "-m", "scansearch", "train", "local_vim_micro", *TINY[2:8], "--data", "digits", "--epochs", "1",
                            "--out", "model"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert train.returncode != 0 and "run it without torchrun" in train.stderr + train.stdout
