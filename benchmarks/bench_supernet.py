"""One DARTS supernet training step: the fused supernet, and the normalised one done two ways.

    python benchmarks/bench_supernet.py                    # CPU: local_vim_micro, digits-sized
    python benchmarks/bench_supernet.py --device cuda      # GPU: adds local_vim_tiny_search, batch 128

Three supernets with the same candidates (every layer: all eight local8 directions with
their own SSM parameters, shared projections):

* ``fused``: the earlier supernet (``normalise=False``): no SCAttn, the candidates merged
  inside one ``multi_scan`` call weighted by ``softmax(alpha)``;
* ``per-candidate``: the normalised supernet (each candidate through SCAttn and an
  affine-free LayerNorm before the weighted merge) computed the way a DARTS mixed op with
  one module per candidate does it: one K=1 scan per candidate;
* ``normalised``: the same supernet with every candidate's output from one
  ``multi_scan(merge=False)`` call (what ``scansearch search`` runs).

``per-candidate`` and ``normalised`` hold the same parameters and must agree before they
are compared. A step = forward, cross-entropy, backward into weights and alphas, one SGD
step. Memory: on a GPU the peak allocated during the step; on the CPU the bytes autograd
saves for backward. Times are medians, the paths measured round-robin in one run.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn as nn

from scansearch.kernels.bench import saved_bytes
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space

# name -> (preset, img_size, in_chans, classes, batch on cpu, batch on cuda)
SETTINGS = {
    "local_vim_micro@8": ("local_vim_micro", 8, 1, 10, 64, 128),
    "local_vim_micro@16": ("local_vim_micro", 16, 1, 4, 32, 128),
    "local_vim_tiny_search@224": ("local_vim_tiny_search", 224, 3, 1000, 2, 128),
}
CPU_DEFAULT = ("local_vim_micro@8", "local_vim_micro@16")


def one_scan_per_candidate(mixer) -> None:
    """Make ``mixer`` compute its per-direction outputs with one K=1 scan each."""
    from scansearch.kernels import multi_scan

    def scan_each(u, delta, A, B, C, D, orders, z, scan_args):
        ys = []
        for k in range(orders.shape[0]):
            one = slice(k, k + 1)
            u_k = u[:, :, one] if scan_args["scan_order"] else u
            args = dict(scan_args, delta_bias=scan_args["delta_bias"][one])
            ys.append(multi_scan(u_k, delta[:, :, one], A[one], B[:, :, one], C[:, :, one], D[one], orders[one],
                                 z=z, **args))
        return torch.stack(ys, dim=1)

    mixer.scan_each = scan_each


PATHS = ("fused", "per-candidate", "normalised")


def make(setting: str, device: str, path: str, seed: int = 0) -> tuple[Supernet, int, int, int]:
    preset, img, chans, classes, cpu_batch, gpu_batch = SETTINGS[setting]
    torch.manual_seed(seed)
    net = Supernet(preset, load_space("local8"), num_classes=classes, img_size=img, in_chans=chans,
                   normalise=path != "fused").to(device)
    if path == "per-candidate":
        for mixer in net.model.mixers():
            one_scan_per_candidate(mixer)
    return net, img, chans, classes


def step_fn(net: Supernet, images, labels, optimizer):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        return loss
    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(setting: str, device: str, batch: int | None, repeats: int) -> list[dict]:
    preset, img, chans, classes, cpu_batch, gpu_batch = SETTINGS[setting]
    batch = batch or (gpu_batch if device == "cuda" else cpu_batch)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, chans, img, img, generator=gen).to(device)
    labels = torch.randint(0, classes, (batch,), generator=gen).to(device)
    paths = {}
    for name in PATHS:
        net, *_ = make(setting, device, name)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        paths[name] = (net, step_fn(net, images, labels, opt))
    # same parameters, same inputs: the two ways to the normalised supernet must agree
    with torch.no_grad():
        a, b = paths["normalised"][0](images), paths["per-candidate"][0](images)
    agree = torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    times: dict[str, list[float]] = {name: [] for name in paths}
    memory: dict[str, int] = {}
    for name, (net, step) in paths.items():
        for _ in range(2):
            step()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step()
            sync(device)
            memory[name] = torch.cuda.max_memory_allocated()
        else:
            memory[name] = saved_bytes(lambda net=net: nn.functional.cross_entropy(net(images), labels))
    for _ in range(repeats):
        for name, (net, step) in paths.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for name in paths:
        rows.append({"setting": setting, "batch": batch, "path": name, "ms": statistics.median(times[name]),
                     "memory_mb": memory[name] / 2**20, "agree": agree})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.settings or (list(SETTINGS) if args.device == "cuda" else list(CPU_DEFAULT))
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for setting in settings:
        with console.status(f"timing {setting}"):
            rows += measure(setting, args.device, args.batch, args.repeats)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else \
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    mem_kind = "peak MB" if args.device == "cuda" else "saved MB"
    table = Table(title=f"supernet training step, local8 (8 candidates), {where}, torch {torch.__version__}")
    for col in ("setting", "batch", *(f"{p} ms" for p in PATHS), "normalised / fused time", "per-cand. / normalised time",
                *(f"{p} {mem_kind}" for p in PATHS)):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=col == "setting")
    by_setting: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], {})[r["path"]] = r
    for setting, paths in by_setting.items():
        ms = {p: paths[p]["ms"] for p in PATHS}
        table.add_row(setting, str(paths["fused"]["batch"]), *(f"{ms[p]:.1f}" for p in PATHS),
                      f"{ms['normalised'] / ms['fused']:.2f}x",
                      f"{ms['per-candidate'] / ms['normalised']:.2f}x",
                      *(f"{paths[p]['memory_mb']:.1f}" for p in PATHS))
    console.print(table)
    if not all(r["agree"] for r in rows):
        console.print("[red]the per-candidate and normalised paths disagree: the comparison is void[/]")
    return rows


if __name__ == "__main__":
    main()
