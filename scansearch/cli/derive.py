"""`scansearch derive GENOTYPE_OR_PRESET`: build the stand-alone model, report its size, save it."""
from __future__ import annotations

import json
import re

import torch
from rich.table import Table

from scansearch.cli.common import console
from scansearch.errors import InputError
from scansearch.flops import count_flops, count_params
from scansearch.models import PRESETS, build_model, save_model
from scansearch.models.build import resolve_source
from scansearch.models.options import check_model_options
from scansearch.spaces import NONE


def register(sub) -> None:
    p = sub.add_parser("derive", help="build a model from a genotype or preset: layers, params, FLOPs; save it")
    p.add_argument("source", metavar="GENOTYPE_OR_PRESET",
                   help="a model preset (vim_tiny, local_vim_micro, ...) or a genotype YAML file")
    p.add_argument("--img-size", default=None,
                   help="input size, N or HxW (default: the preset's; FLOPs are counted at this size)")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    p.add_argument("--in-chans", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--out", default=None, help="write the model here (genotype.yaml, config.yaml, weights.safetensors)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object and nothing else: params, flops (fvcore rule), flops_published "
                        "with flops_convention (the rule of the preset's published figure), published, layers")
    p.set_defaults(func=run)


def parse_size(text: str | None):
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise InputError(f"--img-size: expected N or HxW with positive integers (e.g. 224), got {text!r}")
    return int(m.group(1)) if m.group(2) is None else (int(m.group(1)), int(m.group(2)))


def run(args) -> int:

    img_size = parse_size(args.img_size)
    if args.classes < 0:
        raise InputError(f"--classes must be >= 0, got {args.classes}")
    if args.in_chans < 1:
        raise InputError(f"--in-chans must be >= 1, got {args.in_chans}")
    kwargs = dict(num_classes=args.classes, img_size=img_size, in_chans=args.in_chans)
    check_model_options(args.source, img_size, {})
    if args.out is None:
        with torch.device("meta"):  # sizes only: no memory, no initialisation
            model = build_model(args.source, **kwargs)
    else:
        model = build_model(args.source, **kwargs)
    size = model.cfg.img_size
    params, flops = count_params(model), count_flops(model, size, args.in_chans)
    layers = [NONE if layer == NONE else list(layer) for layer in model.genotype.layers]
    published = resolve_source(args.source)[0].published
    convention = published.flops_convention if published is not None else "fvcore"
    if args.out is not None:
        save_model(model, args.out)
    if args.json:
        figures = None if published is None else {"params": published.params, "flops": published.flops,
                                                  "top1": published.top1, "source": published.source}
        print(json.dumps({"params": params, "flops": flops, "flops_convention": convention,
                          "flops_published": count_flops(model, size, args.in_chans, convention=convention),
                          "published": figures, "layers": layers}))
        return 0
    console.print(_layer_table(model, args.source))
    console.print(f"params: {params / 1e6:.2f}M ({params:,})")
    console.print(f"FLOPs:  {flops / 1e9:.3f}G at {_size_text(size)} ({flops:,}; one multiply-add = one FLOP)")
    line = _published(model, args)
    if line:
        console.print(line)
    if args.out is not None:
        console.print(f"saved to {args.out}")
    return 0


def _size_text(size) -> str:
    return f"{size}x{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _choice(layer) -> str:
    return "none (gated CNN)" if layer == NONE else " ".join(layer)


def _groups(layers, start: int = 0):
    """Runs of consecutive layers with the same choice: (first, last, choice)."""
    runs = []
    for i, layer in enumerate(layers, start):
        if runs and runs[-1][2] == layer:
            runs[-1][1] = i
        else:
            runs.append([i, i, layer])
    return runs


def _layer_table(model, source: str) -> Table:
    cfg = model.cfg
    table = Table(title=f"{source}: {cfg.family}, {cfg.num_layers} layers")
    table.add_column("layers", justify="right")
    table.add_column("stage")
    table.add_column("tokens", justify="right")
    table.add_column("directions")
    layers = model.genotype.layers
    if hasattr(cfg, "depths"):
        h, w = cfg.token_grid
        start = 0
        for s, (depth, dim) in enumerate(zip(cfg.depths, cfg.dims)):
            for first, last, layer in _groups(layers[start:start + depth], start):
                span = str(first) if first == last else f"{first}-{last}"
                table.add_row(span, f"{s} (dim {dim})", f"{h}x{w}", _choice(layer))
            start += depth
            h, w = -(-h // 2), -(-w // 2)
    else:
        h, w = model.grid
        for first, last, layer in _groups(layers):
            span = str(first) if first == last else f"{first}-{last}"
            table.add_row(span, f"dim {cfg.dim}", f"{h}x{w}", _choice(layer))
    return table


def _published(model, args) -> str | None:
    """The preset's published figures, when the model is that preset unchanged at 224x224."""

    preset = PRESETS.get(args.source)
    if (preset is None or preset.published is None or model.cfg.image_hw != (224, 224)
            or args.classes != 1000 or args.in_chans != 3):
        return None
    pub = preset.published
    line = f"published: {pub.params}M params, {pub.flops}G FLOPs"
    if pub.flops_convention != "fvcore":
        theirs = count_flops(model, 224, convention=pub.flops_convention)
        line += f" ({pub.flops_convention} convention; counted so here: {theirs / 1e9:.3f}G)"
    return line + (f", top-1 {pub.top1}%" if pub.top1 else "") + f" [{pub.source}]"
