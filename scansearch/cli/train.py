"""`scansearch train`: train a derived model stand-alone.

``train GENOTYPE --data D --out DIR`` builds the model the genotype names (a genotype
file, a search run folder or a preset; ``--model`` puts the genotype's layers into another
preset), trains it with the shared loop and saves it in ``DIR`` as ``genotype.yaml``,
``config.yaml``, ``weights.safetensors`` (what ``load_model`` reads), with ``data.json``
(what it was trained on), ``metrics.json``, the checkpoint and the per-epoch history.
``--semi-supervised`` and ``--occlusion`` are in :mod:`.train_semi`; ``scansearch eval``
is in :mod:`.evaluate`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from scansearch.cli import train_semi
from scansearch.cli.common import console, set_crash_log
from scansearch.data import default_img_size, load_data
from scansearch.errors import InputError
from scansearch.fileio import atomic_write_text
from scansearch.models import build_model, get_preset, recorded_config, save_model
from scansearch.models.build import resolve_source
from scansearch.models.options import check_model_options, parse_overrides
from scansearch.searchers.run import RunFolder
from scansearch.train import TrainConfig, evaluate, fit

DATA_FILE, METRICS_FILE = "data.json", "metrics.json"
TRAIN_DEFAULTS = {"epochs": 20, "batch_size": 64, "lr": 1e-2, "weight_decay": 0.05}


def register(sub) -> None:
    p = sub.add_parser("train", help="train the model a genotype describes and save it stand-alone",
                       description="Train a derived model (genotype file, search run or preset) and save it.")
    p.add_argument("source", metavar="GENOTYPE",
                   help="a genotype YAML, a search run folder (its genotype.yaml) or a model preset")
    p.add_argument("--data", default="digits", help="digits | planted[:...] | PATH (default digits)")
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"], help="peak AdamW learning rate (default 1e-2)")
    p.add_argument("--weight-decay", type=float, default=TRAIN_DEFAULTS["weight_decay"])
    p.add_argument("--ema", type=float, default=None, help="keep an EMA of the weights with this decay (e.g. 0.999)")
    p.add_argument("--img-size", type=int, default=None, help="default: the data's own, or the preset's for folders")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a model config field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--model", default=None, metavar="PRESET",
                   help="build the genotype's layers into this preset instead of the one it names "
                        "(e.g. a local_vmamba_micro search's genotype as a raum_micro backbone)")
    p.add_argument("--quiet", action="store_true")
    train_semi.add_arguments(p)
    p.set_defaults(func=run_train)


def _genotype_source(text: str):
    """A run folder stands for its genotype.yaml; anything else goes to build_model as is."""
    path = Path(text)
    if path.is_dir():

        return RunFolder.open(path).read_genotype()
    return text


def _with_model(source, preset: str | None):
    """``source`` with its genotype's ``model:`` replaced by ``preset`` (``--model``)."""
    if preset is None:
        return source


    get_preset(preset)  # an unknown name: a ModelError naming the presets
    _, genotype = resolve_source(source)
    if genotype is None:
        raise InputError(f"--model {preset}: {source} is a preset, not a genotype; train {preset} itself instead")
    return dataclasses.replace(genotype, model=preset)


def _data_size(source, img_size: int | None, data_spec: str) -> int | None:
    """The size images are loaded at: ``--img-size``, else the size the genotype was searched
    at, else a built-in set's own size, else (folders) the model preset's size."""

    if img_size is not None:
        return img_size
    preset, genotype = resolve_source(source)
    recorded = None if genotype is None else recorded_config(genotype).get("img_size")
    if recorded is not None:  # the size it was searched at, built-in data or not
        return recorded if isinstance(recorded, int) else recorded[0]
    return default_img_size(data_spec, preset.config.get("img_size", 224))


def run_train(args) -> int:


    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise InputError(f"--lr must be positive, got {args.lr}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise InputError(f"--out {out}: already holds a training run; pass --resume to continue it, or another --out")
    train_semi.check(args)
    run_options = train_semi.options(args)
    if args.resume:
        train_semi.check_resume(out, run_options)
    source = _with_model(_genotype_source(args.source), args.model)
    overrides = parse_overrides(args.set)
    check_model_options(source, args.img_size, overrides)
    set_crash_log(out / "log.txt")
    data = load_data(args.data, img_size=_data_size(source, args.img_size, args.data), batch_size=args.batch_size,
                     seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(source, num_classes=data.num_classes, img_size=data.img_size, in_chans=data.in_chans,
                        **overrides)
    fit_data, semi, semi_record = train_semi.setup(args, data, model)
    # confidence thresholds need unsmoothed targets: a smoothed label caps the top probability
    config = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, ema=args.ema,
                         warmup_epochs=min(2.0, args.epochs / 5), seed=args.seed, device=args.device,
                         label_smoothing=0.0 if args.semi_supervised else 0.1)
    config.validate()
    if not args.quiet:
        n_params = sum(p.numel() for p in model.parameters())
        console.print(f"training {model.cfg.family} ({n_params / 1e6:.3f}M params) on {data.name}: "
                      f"{args.epochs} epochs -> {out}", highlight=False)
        if semi_record.get("n_unlabeled") is not None:
            console.print(f"semi-supervised ({semi.config.filter}): {semi_record['n_labeled']:,} labeled, "
                          f"{semi_record['n_unlabeled']:,} unlabeled training images", highlight=False)
    hooks = [] if semi is None else [semi]
    if not args.resume:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / train_semi.OPTIONS_FILE, json.dumps(run_options, indent=2))
    result = fit(model, fit_data, config, out_dir=out, resume=args.resume, progress=not args.quiet, hooks=hooks,
                 step_fn=None if semi is None else semi.step)
    final = result.ema_model if result.ema_model is not None else result.model
    final.genotype = model.genotype
    split_name, loader = ("test", data.test) if data.test is not None else ("val", data.val)
    metrics = evaluate(final, loader, data.num_classes, amp=config.amp)
    save_model(final, out)
    atomic_write_text(out / DATA_FILE, json.dumps({**data.describe(), "spec": str(args.data), "seed": args.seed},
                                                  indent=2))
    summary = {"split": split_name, **metrics, "best_val_top1": result.best_val_top1, "best_epoch": result.best_epoch,
               "seconds": round(result.seconds, 1), "epochs": args.epochs, **semi_record}
    atomic_write_text(out / METRICS_FILE, json.dumps(summary, indent=2))
    console.print(metrics_table(metrics, data.class_names, f"{out} on {data.name} ({split_name} split)"))
    console.print(f"saved to {out}; load it with scansearch.models.load_model({str(out)!r})", highlight=False)
    return 0


def metrics_table(metrics: dict[str, Any], class_names, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("samples", f"{metrics['count']:,}")
    table.add_row("top-1", f"{metrics['top1']:.2%}")
    if "top5" in metrics:
        table.add_row("top-5", f"{metrics['top5']:.2%}")
    table.add_row("loss", f"{metrics['loss']:.4f}")
    for name, acc in zip(class_names, metrics["per_class"]):
        table.add_row(f"class {name}", "-" if acc is None else f"{acc:.2%}")
    return table
