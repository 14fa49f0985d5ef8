"""Whole models on the CPU: the compiled scan (backend ``cpu``) against the ``torch`` backend.

    python benchmarks/bench_cpu_scan.py                 # torch's thread count
    python benchmarks/bench_cpu_scan.py --threads 1     # one thread
    python benchmarks/bench_cpu_scan.py --quick         # fewer steps

Two kinds of rows, each timed for both backends round-robin in one run (same weights,
same batch), medians over ``--steps`` steps after two warm-up steps:

* ``train``: one training step (forward, cross-entropy, backward, SGD) of
  ``local_vim_micro`` at 8x8 tokens (8x8 images, patch 1: the built-in digits) and at
  14x14 tokens (28x28 images, patch 2: Vim's token grid), batch 64;
* ``supernet``: one step of the normalised DARTS supernet of ``scansearch search``
  (``bench_supernet.py``'s ``normalised`` path), local8 at 8x8 and 16x16 tokens.

The kernel-level comparison is ``scansearch bench kernels``; the default search's wall
time is measured with ``/usr/bin/time -v`` (see ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supernet import make, step_fn  # noqa: E402

from scansearch.models import build_model  # noqa: E402

BACKENDS = ("torch", "cpu")
# name -> (img_size, patch_size or None for the preset's, in_chans, classes, batch)
MODELS = {"local_vim_micro 8x8 tokens": (8, None, 1, 10, 64), "local_vim_micro 14x14 tokens": (28, 2, 1, 10, 64)}
SUPERNETS = ("local_vim_micro@8", "local_vim_micro@16")


def _model_step(name: str, backend: str):
    img, patch, chans, classes, batch = MODELS[name]
    torch.manual_seed(0)
    overrides = {"patch_size": patch} if patch else {}
    model = build_model("local_vim_micro", num_classes=classes, img_size=img, in_chans=chans, backend=backend,
                        **overrides)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, chans, img, img, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    tokens = (img // (patch or model.config.patch_size)) ** 2 if hasattr(model.config, "patch_size") else None
    return step, batch, tokens


def _supernet_step(setting: str, backend: str):
    net, img, chans, classes = make(setting, "cpu", "normalised")
    net.model.set_backend(backend)
    batch = 64 if img <= 8 else 32
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, chans, img, img, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    return step_fn(net, images, labels, optimizer), batch, None


def measure(steps: int) -> list[dict]:
    """Rows of (kind, setting, backend, batch, ms per step, img/s)."""
    cases = [("train", m, _model_step) for m in MODELS] + [("supernet", s, _supernet_step) for s in SUPERNETS]
    rows = []
    for kind, setting, build in cases:
        made = {b: build(setting, b) for b in BACKENDS}
        times = {b: [] for b in BACKENDS}
        for b in BACKENDS:
            for _ in range(2):
                made[b][0]()
        for _ in range(steps):
            for b in BACKENDS:
                t0 = time.perf_counter()
                made[b][0]()
                times[b].append(time.perf_counter() - t0)
        for b in BACKENDS:
            ms = 1e3 * statistics.median(times[b])
            rows.append({"kind": kind, "setting": setting, "backend": b, "batch": made[b][1], "ms": ms,
                         "img_s": made[b][1] / ms * 1e3, "threads": torch.get_num_threads()})
        print(f"{kind:9s} {setting:30s} torch {rows[-2]['ms']:8.1f} ms  cpu {rows[-1]['ms']:8.1f} ms  "
              f"speed-up {rows[-2]['ms'] / rows[-1]['ms']:.2f}x", file=sys.stderr)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--steps", type=int, default=9, help="timed steps per backend (median)")
    p.add_argument("--quick", action="store_true", help="3 timed steps")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(3 if args.quick else args.steps)
    print(f"\nwhole models on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32")
    print("| step | setting | batch | torch ms | cpu ms | torch img/s | cpu img/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for t, c in zip(rows[::2], rows[1::2]):
        print(f"| {t['kind']} | {t['setting']} | {t['batch']} | {t['ms']:.1f} | {c['ms']:.1f} | {t['img_s']:.0f} | "
              f"{c['img_s']:.0f} | {t['ms'] / c['ms']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
