"""RAUM-Net on scarce labels and occlusion: the paper's table shape, our numbers.

    python benchmarks/bench_raum.py semi --data digits --set patch_size=1 --epochs 15 \\
        --work /tmp/raum_digits --out benchmarks/data/raum_semi_digits.json
    python benchmarks/bench_raum.py semi --data /usr/share/datasets/fashion-mnist:n_train=2500,n_val=500,n_test=2000 \\
        --img-size 16 --set patch_size=2 --epochs 15 --work /tmp/raum_fashion --out benchmarks/data/raum_semi_fashion.json
    python benchmarks/bench_raum.py backbone --data digits --set patch_size=1 --epochs 15 \\
        --work /tmp/raum_backbone --out benchmarks/data/raum_backbone_digits.json

``semi``: per seed, ``raum_micro`` trained from the command line with 10% of each class's
training images labeled, at one budget (same epochs, steps, labeled batches, occlusion
augmentation of the labeled images and seed), three ways: supervised on the labeled part
only (``--filter none``), FixMatch's confidence filter (``--filter confidence``) and
RAUM-Net's uncertainty filter (``--filter uncertainty``). Each model is evaluated with
``scansearch eval --occlusion-sweep`` (no / 20% / 40% occlusion, deterministic pass and
MC mean) and ``--calibration`` (ECE, single pass against MC mean). Then the
pseudo-label comparison at equal kept share: on the unlabeled 90% (weak view = the eval
view), the uncertainty filter's kept set against the same number of images ranked by
single-pass confidence alone and by MC-mean confidence alone; and the precision of the
top-s share of each ranking for s = 10%..90%.

``backbone``: per seed, ``scansearch search --model raum_micro --space local8``, then the
searched genotype and the fixed cross genotype trained with all labels at one budget and
swept over occlusion.

Jobs run ``--jobs`` at a time, each on one thread. A run folder under ``--work`` that holds a
finished training or search is reused (only evaluated again). Everything goes to ``--out``
(JSON); seconds are those the trainings and searches recorded.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = {"supervised": "none", "fixmatch": "confidence", "raum": "uncertainty"}
SHARES = [round(0.1 * i, 1) for i in range(1, 10)]


def scansearch(args: list[str], capture: bool = False) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "scansearch", *args], check=True, env=env, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    return done.stdout if capture else ""


def model_args(opts) -> list[str]:
    out = ["--data", opts.data]
    if opts.img_size:
        out += ["--img-size", str(opts.img_size)]
    for item in opts.set:
        out += ["--set", item]
    return out


def train(opts, source: str, out: Path, seed: int, extra: list[str]) -> float:
    """Train (unless ``out`` holds the finished run: then only evaluate again); the training's
    seconds as the run recorded them."""
    if not (out / "metrics.json").exists():
        scansearch(["train", source, "--out", str(out), "--epochs", str(opts.epochs), "--batch-size",
                    str(opts.batch_size), "--seed", str(seed), "--occlusion", str(opts.train_occlusion), "--quiet",
                    *model_args(opts), *extra])
    return json.loads((out / "metrics.json").read_text())["seconds"]


def sweep(opts, model_dir: Path) -> dict:
    levels = json.loads(scansearch(["eval", str(model_dir), "--data", opts.data, "--occlusion-sweep", "--json"],
                                   capture=True))["levels"]
    calib = json.loads(scansearch(["eval", str(model_dir), "--data", opts.data, "--calibration", "--json"],
                                  capture=True))["levels"][0]
    return {"levels": levels, "ece": calib["ece"], "mc_ece": calib["mc_ece"]}


def precision_at_share(model_dir: Path, opts, seed: int) -> dict:
    """The uncertainty filter's kept set against rankings by confidence, at the same share."""
    from scansearch.data import load_data
    from scansearch.data.unlabeled import labeled_indices
    from scansearch.models import load_model
    from scansearch.uncertainty import collect_probs

    torch.set_num_threads(1)
    model = load_model(model_dir)
    data = load_data(opts.data, img_size=model.cfg.image_hw[0], in_chans=model.cfg.in_chans, batch_size=256,
                     seed=seed, augment=False)
    train = data.train
    mask = ~labeled_indices(train.labels, 0.1, seed)
    from scansearch.data import TensorLoader

    loader = TensorLoader(train.images[mask], train.labels[mask], 256)
    probs = collect_probs(model, loader, "cpu", mc_samples=model.cfg.mc_samples, seed=seed)
    labels = probs["labels"]
    single_conf, single_pred = probs["single"].max(1)
    mc_conf, mc_pred = probs["mc_mean"].max(1)
    bald = probs["mutual_info"]
    n = len(labels)

    def top(score: torch.Tensor, pred: torch.Tensor, k: int) -> float:
        idx = score.argsort(descending=True)[:k]
        return (pred[idx] == labels[idx]).float().mean().item()

    keep = (mc_conf >= opts.tau) & (bald <= torch.quantile(bald.float(), 0.5))
    k = int(keep.sum())
    result = {"n_unlabeled": n, "tau": opts.tau, "filter_kept_share": k / n,
              "filter_precision": (mc_pred[keep] == labels[keep]).float().mean().item() if k else None,
              "confidence_precision_same_share": top(single_conf, single_pred, k) if k else None,
              "mc_confidence_precision_same_share": top(mc_conf, mc_pred, k) if k else None,
              "curve": []}
    for share in SHARES:
        m = max(1, round(share * n))
        result["curve"].append({"share": share, "confidence": top(single_conf, single_pred, m),
                                "mc_confidence": top(mc_conf, mc_pred, m), "low_bald": top(-bald, mc_pred, m)})
    return result


def run_semi(opts) -> dict:
    work = Path(opts.work)
    jobs = [(seed, name) for seed in opts.seeds for name in METHODS]

    def one(job):
        seed, name = job
        out = work / f"seed{seed}" / name
        seconds = train(opts, "raum_micro", out, seed, ["--semi-supervised", "--labeled-ratio", "0.1", "--filter",
                                                        METHODS[name], *(["--tau", str(opts.tau)]
                                                                         if METHODS[name] != "none" else [])])
        history = json.loads((out / "history.json").read_text())
        record = {"seed": seed, "method": name, "seconds": seconds, **sweep(opts, out),
                  "kept_last": history[-1].get("unlabeled_kept"), "precision_last": history[-1].get("pseudo_precision")}
        if METHODS[name] != "none":
            record["pseudo_labels"] = precision_at_share(out, opts, seed)
        print(f"  seed {seed} {name}: " + " ".join(f"{lv['top1']:.3f}" for lv in record["levels"]), flush=True)
        return record

    with futures.ThreadPoolExecutor(opts.jobs) as pool:
        records = list(pool.map(one, jobs))
    return {"runs": records}


def run_backbone(opts) -> dict:
    work = Path(opts.work)

    def search(seed: int) -> dict:
        folder = work / f"seed{seed}" / "search"
        if not (folder / "genotype.yaml").exists():
            scansearch(["search", "--model", "raum_micro", "--space", "local8", "--epochs", str(opts.search_epochs),
                        "--seed", str(seed), "--out", str(folder), "--quiet", *model_args(opts)])
        seconds = json.loads((folder / "summary.json").read_text())["seconds"]
        return {"seed": seed, "search_seconds": seconds, "genotype": str(folder / "genotype.yaml")}

    def fixed_cross(seed: int) -> str:
        from scansearch.genotype import Genotype

        found = Genotype.load(work / f"seed{seed}" / "search" / "genotype.yaml")
        cross = dataclasses.replace(found, layers=(("h", "v", "h_flip", "v_flip"),) * len(found.layers), alphas=None,
                                    provenance={**found.provenance, "fixed": "cross"})
        path = work / f"seed{seed}" / "cross.yaml"
        cross.save(path)
        return str(path)

    with futures.ThreadPoolExecutor(opts.jobs) as pool:
        searches = list(pool.map(search, opts.seeds))
    jobs = []
    for s in searches:
        jobs.append((s["seed"], "searched", s["genotype"]))
        jobs.append((s["seed"], "cross", fixed_cross(s["seed"])))

    def one(job):
        seed, name, source = job
        out = work / f"seed{seed}" / name
        seconds = train(opts, source, out, seed, [])
        record = {"seed": seed, "backbone": name, "seconds": seconds, "genotype": source, **sweep(opts, out)}
        print(f"  seed {seed} {name}: " + " ".join(f"{lv['top1']:.3f}" for lv in record["levels"]), flush=True)
        return record

    with futures.ThreadPoolExecutor(opts.jobs) as pool:
        records = list(pool.map(one, jobs))
    return {"searches": searches, "runs": records}


def summarise(records: list[dict], key: str) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r[key] for r in records):
        mine = [r for r in records if r[key] == name]
        row = {key: name}
        for i, level in enumerate(mine[0]["levels"]):
            values = [r["levels"][i]["top1"] for r in mine]
            row[f"{level['occlusion']:.0%}"] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        row["ece"] = statistics.mean(r["ece"] for r in mine)
        row["mc_ece"] = statistics.mean(r["mc_ece"] for r in mine)
        rows.append(row)
    return rows


def print_table(rows: list[dict], key: str) -> None:
    levels = [k for k in rows[0] if k.endswith("%")]
    print(f"| {key} | " + " | ".join(f"{lv} occluded" for lv in levels) + " | ECE single | ECE MC mean |")
    print("|---|" + "---|" * (len(levels) + 2))
    for row in rows:
        cells = [f"{100 * row[lv][0]:.1f} ± {100 * row[lv][1]:.1f}" for lv in levels]
        print(f"| {row[key]} | " + " | ".join(cells) + f" | {row['ece']:.3f} | {row['mc_ece']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("semi", "backbone"))
    parser.add_argument("--data", default="digits")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--search-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tau", type=float, default=0.95)
    parser.add_argument("--train-occlusion", type=float, default=0.4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args()
    opts.seeds = [int(s) for s in opts.seeds.split(",")]
    started = time.perf_counter()
    result = run_semi(opts) if opts.part == "semi" else run_backbone(opts)
    key = "method" if opts.part == "semi" else "backbone"
    rows = summarise(result["runs"], key)
    print_table(rows, key)
    result.update(settings={k: v for k, v in vars(opts).items()}, summary=rows,
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                  seconds=round(time.perf_counter() - started, 1))
    Path(opts.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
