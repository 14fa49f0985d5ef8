"""`scansearch eval`: a saved model's accuracy on a data split, under occlusion, with its
MC-dropout uncertainty and calibration.

``eval DIR --data D`` prints top-1, top-5 (more than five classes) and per-class accuracy.
``--occlusion 0.2`` occludes every image by a rectangle over 20% of its area (the same
rectangles for every model, from ``--seed``); ``--occlusion-sweep`` prints the no / 20% /
40% table (``--levels`` changes the shares). For a model with an MC-dropout head (the
``raum`` family) the sweep and ``--mc-samples T`` add the accuracy of the mean of ``T``
stochastic passes; ``--calibration`` prints the expected calibration error of the single
deterministic pass and of the MC mean, and ``--plot F.png`` draws their reliability
diagram (at the first level: no occlusion unless ``--levels`` says otherwise). The
occluders come from ``--occlusion-seed`` (0 by default), so every model sees the same.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from scansearch.cli.common import InputError, console
from scansearch.cli.train import DATA_FILE, metrics_table
from scansearch.data import load_data
from scansearch.data.occlusion import OccludedLoader, batch_generator, check_share, occlude
from scansearch.models import load_model
from scansearch.plotting import pyplot
from scansearch.train import evaluate, resolve_device
from scansearch.uncertainty import collect_probs, expected_calibration_error, plot_reliability, reliability, supports_mc

ECE_BINS = 15


def register(sub) -> None:
    e = sub.add_parser("eval", help="accuracy of a saved model on a data split (top-1, top-5, per class)",
                       description="Evaluate a model saved by `scansearch train` or `scansearch derive --out`.")
    e.add_argument("model_dir", metavar="DIR")
    e.add_argument("--data", default="digits", help="digits | planted[:...] | PATH (default digits)")
    e.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which split (default test; val where the data has no test split)")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--seed", type=int, default=None,
                   help="data split seed (default: the one the model trained with)")
    e.add_argument("--device", default="auto")
    e.add_argument("--occlusion", type=float, default=0.0, metavar="SHARE",
                   help="occlude each image by a rectangle over this share of its area (e.g. 0.2)")
    e.add_argument("--occlusion-sweep", action="store_true", help="top-1 at no / 20%% / 40%% occlusion")
    e.add_argument("--levels", default=None, help="the sweep's shares (default 0,0.2,0.4)")
    e.add_argument("--occlusion-seed", type=int, default=0,
                   help="seed of the occluding rectangles (default 0: the same for every model)")
    e.add_argument("--mc-samples", type=int, default=None, metavar="T",
                   help="raum models: also the accuracy of the mean of T MC-dropout passes")
    e.add_argument("--calibration", action="store_true",
                   help="expected calibration error, single pass and MC mean (raum models)")
    e.add_argument("--plot", default=None, metavar="F.png", help="with --calibration: a reliability diagram")
    e.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    e.set_defaults(func=run_eval)


def _levels(text: str) -> list[float]:

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--levels: expected shares such as 0,0.2,0.4, got {text!r}") from None
    if not values:
        raise InputError("--levels: give at least one share")
    return [check_share(v, "--levels") for v in values]


def _check(args) -> list[float]:

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.mc_samples is not None and args.mc_samples < 1:
        raise InputError(f"--mc-samples must be at least 1, got {args.mc_samples}")
    check_share(args.occlusion, "--occlusion")
    if args.occlusion_sweep and args.occlusion:
        raise InputError("--occlusion and --occlusion-sweep: give one (the sweep sets the shares with --levels)")
    if args.levels is not None and not args.occlusion_sweep:
        raise InputError("--levels sets the shares of --occlusion-sweep; add --occlusion-sweep")
    if args.plot is not None:
        _check_plot(args)
    return _levels(args.levels or "0,0.2,0.4") if args.occlusion_sweep else [args.occlusion]


def _check_plot(args) -> None:

    plot = Path(args.plot)
    if not args.calibration:
        raise InputError("--plot draws the reliability diagram of --calibration; add --calibration")
    if not plot.parent.is_dir():
        raise InputError(f"--plot {plot}: no such folder {plot.parent}")
    if plot.is_dir():
        raise InputError(f"--plot {plot}: is a folder; give a file name such as reliability.png")
    plt = pyplot()
    if plt is None:
        raise InputError("--plot needs matplotlib: pip install 'scansearch[plot]'")
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    suffix = plot.suffix.lstrip(".").lower() or "png"
    if suffix not in formats:
        raise InputError(f"--plot {plot}: cannot write .{suffix} (formats: {', '.join(sorted(formats))})")


def run_eval(args) -> int:

    levels = _check(args)
    root = Path(args.model_dir)
    device = resolve_device(args.device)
    model = load_model(root, map_location=device)
    mc = supports_mc(model)
    if (args.calibration or args.mc_samples is not None) and not mc:
        raise InputError(f"{root}: a {model.cfg.family} model has no MC-dropout head; --mc-samples and "
                       f"--calibration need a raum model")
    samples = args.mc_samples if args.mc_samples is not None else (model.cfg.mc_samples if mc else None)
    trained_on: dict[str, Any] = {}
    if (root / DATA_FILE).is_file():
        try:
            trained_on = json.loads((root / DATA_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            trained_on = {}
    seed = args.seed if args.seed is not None else int(trained_on.get("seed", 0))
    cfg = model.cfg
    # the size the model was built for: a built-in set's own size may differ (--img-size in train)
    data = load_data(args.data, img_size=cfg.image_hw[0], in_chans=cfg.in_chans,
                     batch_size=args.batch_size, seed=seed, augment=False)
    if data.num_classes != cfg.num_classes:
        raise InputError(f"--data {args.data}: {data.num_classes} classes, the model in {root} predicts "
                       f"{cfg.num_classes}")
    loader = {"test": data.test, "val": data.val, "train": data.train}[args.split]
    split = args.split
    if loader is None:
        loader, split = data.val, "val"
    title = f"{root} on {data.name} ({split} split)"
    occluder_seed = args.occlusion_seed
    if not args.occlusion_sweep and not args.calibration and args.mc_samples is None:
        share = levels[0]
        metrics = evaluate(model, OccludedLoader(loader, share, occluder_seed) if share else loader,
                           data.num_classes, device)
        if args.json:
            print(json.dumps({"split": split, "occlusion": share, **metrics}))
            return 0
        suffix = f", {share:.0%} occluded" if share else ""
        console.print(metrics_table(metrics, data.class_names, title + suffix))
        return 0

    rows = []
    for share in levels:
        def transform(images, index, share=share):
            return occlude(images, share, batch_generator(occluder_seed, index)) if share else images
        probs = collect_probs(model, loader, device, mc_samples=samples if mc else None, transform=transform,
                              seed=occluder_seed)
        labels = probs["labels"]
        row = {"occlusion": share, "count": len(labels),
               "top1": (probs["single"].argmax(1) == labels).float().mean().item()}
        if mc:
            row["mc_top1"] = (probs["mc_mean"].argmax(1) == labels).float().mean().item()
            row["mc_samples"] = samples
            row["mutual_info"] = probs["mutual_info"].mean().item()
        if args.calibration:
            row["ece"] = expected_calibration_error(probs["single"], labels, ECE_BINS)
            row["mc_ece"] = expected_calibration_error(probs["mc_mean"], labels, ECE_BINS)
            if args.plot is not None and len(rows) == 0:
                _plot(row, probs, args.plot, f"{title}, {share:.0%} occluded" if share else title)
        rows.append(row)
    if args.json:
        print(json.dumps({"split": split, "levels": rows}))
        return 0
    console.print(_sweep_table(rows, title))
    return 0


def _sweep_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    table.add_column("occlusion", justify="right")
    table.add_column("top-1", justify="right")
    columns = [("mc_top1", "top-1, MC mean"), ("mutual_info", "mutual info"), ("ece", "ECE"), ("mc_ece", "ECE, MC mean")]
    shown = [(key, name) for key, name in columns if key in rows[0]]
    for _, name in shown:
        table.add_column(name, justify="right")
    for row in rows:
        cells = [f"{row['occlusion']:.0%}", f"{row['top1']:.2%}"]
        for key, _ in shown:
            cells.append(f"{row[key]:.4f}" if key in ("mutual_info", "ece", "mc_ece") else f"{row[key]:.2%}")
        table.add_row(*cells)
    return table


def _plot(row: dict, probs: dict, path: str, title: str) -> None:

    curves = {f"single pass (ECE {row['ece']:.3f})": reliability(probs["single"], probs["labels"], ECE_BINS),
              f"MC mean (ECE {row['mc_ece']:.3f})": reliability(probs["mc_mean"], probs["labels"], ECE_BINS)}
    plot_reliability(curves, path, title)
