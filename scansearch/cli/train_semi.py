"""The semi-supervised and occlusion options of `scansearch train` (see :mod:`scansearch.semi`).

``--semi-supervised`` with ``--labeled-ratio R`` keeps R of each class's training images
labeled and uses the rest as unlabeled images (their labels only measure pseudo-label
precision); with ``--unlabeled DIR`` every training image stays labeled and the images
below DIR are the unlabeled ones. ``--filter`` picks RAUM-Net's uncertainty filter,
plain FixMatch confidence, or none (supervised on the labeled part only, same steps).
``--occlusion S`` occludes each labeled training image by a share drawn from [0, S].
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from scansearch.cli.common import InputError, console
from scansearch.data.unlabeled import split_labeled, unlabeled_folder
from scansearch.semi import SemiConfig, SemiLoader, SemiSupervised

SEMI_OPTIONS = ("labeled_ratio", "unlabeled", "filter", "tau", "uncertainty", "uncertainty_max",
                "uncertainty_quantile", "mc_samples", "unlabeled_ratio", "lambda_u")


def add_arguments(p) -> None:
    g = p.add_argument_group("semi-supervised training (FixMatch style, RAUM-Net's uncertainty filter)")
    g.add_argument("--semi-supervised", action="store_true", help="train on labeled and unlabeled images")
    g.add_argument("--labeled-ratio", type=float, default=None, metavar="R",
                   help="keep R of each class's training images labeled (e.g. 0.1), the rest unlabeled")
    g.add_argument("--unlabeled", default=None, metavar="DIR", help="a folder of unlabeled images (image-folder data)")
    g.add_argument("--filter", default=None, choices=("uncertainty", "confidence", "none"),
                   help="which pseudo-labels count: uncertainty (MC mean, confident and certain; default), "
                        "confidence (plain FixMatch), none (supervised on the labeled part only)")
    g.add_argument("--tau", type=float, default=None, help="confidence threshold (default 0.95)")
    g.add_argument("--uncertainty", default=None, choices=("mutual_info", "entropy"),
                   help="the uncertainty the filter reads (default mutual_info, i.e. BALD)")
    g.add_argument("--uncertainty-max", type=float, default=None, metavar="U",
                   help="keep pseudo-labels whose uncertainty is at most U (nats)")
    g.add_argument("--uncertainty-quantile", type=float, default=None, metavar="Q",
                   help="keep pseudo-labels in the lowest Q of the batch's uncertainty (default 0.5)")
    g.add_argument("--mc-samples", type=int, default=None, metavar="T", help="MC-dropout passes (default: the model's)")
    g.add_argument("--unlabeled-ratio", type=int, default=None, metavar="MU",
                   help="unlabeled images per labeled image in a step (default 3)")
    g.add_argument("--lambda-u", type=float, default=None, help="weight of the unlabeled loss (default 1)")
    p.add_argument("--occlusion", type=float, default=0.0, metavar="S",
                   help="occlude each labeled training image by a share drawn from [0, S] (augmentation)")


def check(args) -> None:
    """Option combinations, before anything is loaded."""
    given = [f"--{name.replace('_', '-')}" for name in SEMI_OPTIONS if getattr(args, name) is not None]
    if not args.semi_supervised:
        if given:
            raise InputError(f"{given[0]} belongs to semi-supervised training; add --semi-supervised")
    elif (args.labeled_ratio is None) == (args.unlabeled is None):
        raise InputError("--semi-supervised needs one of --labeled-ratio R and --unlabeled DIR")
    if args.labeled_ratio is not None and not 0 < args.labeled_ratio < 1:
        raise InputError(f"--labeled-ratio must lie in (0, 1), got {args.labeled_ratio}")
    if args.uncertainty_max is not None and args.uncertainty_quantile is not None:
        raise InputError("--uncertainty-max and --uncertainty-quantile: give one")
    if args.filter not in (None, "uncertainty"):
        ignored = [f"--{n.replace('_', '-')}" for n in ("uncertainty", "uncertainty_max", "uncertainty_quantile",
                                                        "mc_samples") if getattr(args, n) is not None]
        if ignored:
            raise InputError(f"--filter {args.filter} reads no uncertainty; drop {', '.join(ignored)}")
    semi_config(args, mc_default=8).validate()  # a TrainError: exit code 2, one line


def semi_config(args, mc_default: int):

    values: dict[str, Any] = {"occlusion": args.occlusion, "seed": args.seed, "mc_samples": mc_default}
    if args.semi_supervised:
        values["filter"] = args.filter or "uncertainty"
    else:
        values["filter"] = "none"
    for name in ("tau", "uncertainty", "mc_samples", "unlabeled_ratio", "lambda_u"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.uncertainty_max is not None:
        values.update(uncertainty_max=args.uncertainty_max, uncertainty_quantile=None)
    elif args.uncertainty_quantile is not None:
        values["uncertainty_quantile"] = args.uncertainty_quantile
    return SemiConfig(**values)


def setup(args, data, model):
    """(data for ``fit``, the SemiSupervised hook or None, what to record) for these options."""

    if not args.semi_supervised and not args.occlusion:
        return data, None, {}
    mc_default = getattr(model.cfg, "mc_samples", 8)
    config = semi_config(args, mc_default)
    semi = SemiSupervised(config, console=None if args.quiet else console)
    semi.check_model(model)
    if not args.semi_supervised:
        return data, semi, {"occlusion": args.occlusion}
    mu = config.unlabeled_ratio
    if args.labeled_ratio is not None:
        labeled, unlabeled = split_labeled(data, args.labeled_ratio, args.seed, args.batch_size, mu * args.batch_size)
    else:
        labeled = data.train
        unlabeled = unlabeled_folder(args.unlabeled, data, mu * args.batch_size, args.seed)
    loader = SemiLoader(labeled, unlabeled, unlabeled_images=config.filter != "none")
    record = {"semi": config.to_dict(), "labeled_ratio": args.labeled_ratio, "unlabeled_dir": args.unlabeled,
              "n_labeled": labeled.num_samples, "n_unlabeled": unlabeled.num_samples}
    return dataclasses.replace(data, train=loader), semi, record


OPTIONS_FILE = "train_options.json"


def options(args) -> dict[str, Any]:
    """What a resumed run must repeat: the semi-supervised settings, the split and the occlusion."""

    semi = None
    if args.semi_supervised:
        semi = {**semi_config(args, mc_default=8).to_dict(), "mc_samples": args.mc_samples}  # None: the model's
    return {"semi_supervised": bool(args.semi_supervised), "semi": semi, "labeled_ratio": args.labeled_ratio,
            "unlabeled": None if args.unlabeled is None else str(Path(args.unlabeled).expanduser().resolve()),
            "occlusion": args.occlusion}


def check_resume(out, current: dict[str, Any]) -> None:
    """Refuse to resume with other semi-supervised settings, split or occlusion than the run had."""

    path = out / OPTIONS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        saved = {"semi_supervised": False, "semi": None, "labeled_ratio": None, "unlabeled": None, "occlusion": 0.0}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path}: not a mapping")
    for key in current:
        if saved.get(key) != current[key]:
            raise InputError(f"--resume: {out} was trained with {key}={saved.get(key)!r}, this command says "
                           f"{current[key]!r}; repeat the run's options or use another --out")
