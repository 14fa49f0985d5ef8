"""One DARTS supernet training step: the fused weighted scan against one scan per candidate.

    python benchmarks/bench_supernet.py                    # CPU: local_vim_micro, digits-sized
    python benchmarks/bench_supernet.py --device cuda      # GPU: adds local_vim_tiny_search, batch 128

Both supernets hold the same parameters (every layer: all eight local8 candidates with
their own SSM parameters, shared projections). ``fused`` merges the candidates inside
one ``multi_scan`` call weighted by ``softmax(alpha)``; ``per-candidate`` runs one K=1
scan per candidate and sums the weighted outputs afterwards, the way a DARTS mixed op
with one module per candidate does (it also keeps each candidate's output for backward).
A step = forward, cross-entropy, backward into weights and alphas, one SGD step.

Memory: on a GPU the peak allocated during the step; on the CPU the bytes autograd saves
for backward (unique storages, ``saved_tensors_hooks``), which is what grows with the
candidates. Times are medians, the two paths measured round-robin in one run.
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


def per_candidate(supernet: Supernet) -> Supernet:
    """The same supernet scanning each candidate in its own call: an identity "attention"
    sends every mixer down its per-direction path (one K=1 scan each, outputs stacked,
    then weighted and summed)."""
    for mixer in supernet.model.mixers():
        mixer.attn = nn.Identity()
    return supernet


def make(setting: str, device: str, fused: bool, seed: int = 0) -> tuple[Supernet, int, int, int]:
    preset, img, chans, classes, cpu_batch, gpu_batch = SETTINGS[setting]
    torch.manual_seed(seed)
    net = Supernet(preset, load_space("local8"), num_classes=classes, img_size=img, in_chans=chans).to(device)
    if not fused:
        per_candidate(net)
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
    for name, fused in (("fused", True), ("per-candidate", False)):
        net, *_ = make(setting, device, fused)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        paths[name] = (net, step_fn(net, images, labels, opt))
    # same parameters, same inputs: the two paths must agree before they are compared
    with torch.no_grad():
        a, b = paths["fused"][0](images), paths["per-candidate"][0](images)
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
    for col in ("setting", "batch", "fused ms", "per-cand. ms", "speed-up", f"fused {mem_kind}",
                f"per-cand. {mem_kind}", "memory ratio"):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=col == "setting")
    by_setting: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], {})[r["path"]] = r
    for setting, paths in by_setting.items():
        fused, naive = paths["fused"], paths["per-candidate"]
        table.add_row(setting, str(fused["batch"]), f"{fused['ms']:.1f}", f"{naive['ms']:.1f}",
                      f"{naive['ms'] / fused['ms']:.2f}x", f"{fused['memory_mb']:.1f}", f"{naive['memory_mb']:.1f}",
                      f"{fused['memory_mb'] / naive['memory_mb']:.2f}x")
    console.print(table)
    if not all(r["agree"] for r in rows):
        console.print("[red]the two paths disagree: the comparison is void[/]")
    return rows


if __name__ == "__main__":
    main()
