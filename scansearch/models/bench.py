"""Throughput of the published-size models side by side: images per second for inference
(``no_grad``, eval mode) and training (forward, backward, one SGD step)."""
from __future__ import annotations

import time
from functools import partial
from typing import Sequence

import torch
from rich.console import Console
from rich.table import Table

from scansearch.flops import count_flops, count_params
from scansearch.models import build_model

BENCH_MODELS = ("vim_tiny", "local_vim_tiny", "vmamba_tiny", "local_vmamba_tiny", "mambaout_tiny")


def _defaults(device: str) -> tuple[int, int]:
    """(batch, img_size): the published setting on a GPU, something a CPU finishes in minutes."""
    return (128, 224) if device.startswith("cuda") else (4, 112)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _images_per_second(step, batch: int, repeats: int, device: str) -> float:
    step()  # warm-up: allocations, order tables, kernel compilation
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    return batch * repeats / (time.perf_counter() - start)


def run_model_bench(device: str = "cpu", batch: int | None = None, img_size: int | None = None,
                    quick: bool = False, models: Sequence[str] = BENCH_MODELS, backend: str | None = None,
                    repeats: int | None = None) -> list[dict]:
    """One row per model: params, FLOPs per image at ``img_size``, inference and training img/s."""

    default_batch, default_size = _defaults(device)
    batch = batch or default_batch
    img_size = img_size or default_size
    repeats = repeats or (1 if quick else 3)
    rows = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, img_size=img_size, backend=backend).to(device)
        images = torch.randn(batch, 3, img_size, img_size, device=device)
        labels = torch.randint(0, model.num_classes, (batch,), device=device)
        row = {"model": name, "params": count_params(model), "flops": count_flops(model, img_size),
               "batch": batch, "img_size": img_size, "device": device, "backend": backend or "default",
               "threads": torch.get_num_threads()}

        model.eval()
        row["infer_img_s"] = _images_per_second(partial(_infer, model, images), batch, repeats, device)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        step = partial(_train_step, model, optimizer, images, labels)
        row["train_img_s"] = _images_per_second(step, batch, repeats, device)
        rows.append(row)
        del model, optimizer
    return rows


def _infer(model, images) -> None:
    with torch.no_grad():
        model(images)


def _train_step(model, optimizer, images, labels) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


def print_table(rows: list[dict], console=None) -> None:

    console = console or Console()
    if not rows:
        console.print("no rows")
        return
    first = rows[0]
    title = (f"model throughput on {first['device']} (batch {first['batch']}, {first['img_size']}x{first['img_size']}, "
             f"scan backend {first['backend']}, {first['threads']} threads)")
    table = Table(title=title)
    for column in ("model", "params", "GFLOPs/img", "inference img/s", "training img/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['params'] / 1e6:.1f}M", f"{r['flops'] / 1e9:.2f}",
                      f"{r['infer_img_s']:.1f}", f"{r['train_img_s']:.1f}")
    console.print(table)
