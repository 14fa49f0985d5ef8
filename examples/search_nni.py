"""NNI's one-shot strategies on a scansearch space (needs the nni extra, in its own venv).

    python -m venv .venv-nni && .venv-nni/bin/pip install torch==2.13.0 && .venv-nni/bin/pip install -e '.[nni]'
    .venv-nni/bin/python examples/search_nni.py              # NNI's DARTS on the digits, a few minutes
    .venv-nni/bin/python examples/search_nni.py --fast       # a smoke run in under a minute

The same from the command line:

    scansearch search --searcher nni-darts --out runs/nni-darts
    scansearch search --searcher nni-gumbel|nni-proxyless|nni-random ...

Here in Python: the supernet DARTS trains becomes an NNI model space (each layer an
InputChoice of k of its N scan directions); NNI's strategy trains it, and its export
becomes a genotype that `scansearch train` accepts.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from scansearch.data import load_data
from scansearch.genotype import Genotype
from scansearch.searchers.nni_adapter import NNI_STRATEGIES, NNIMissing, search
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="nni-darts", choices=tuple(NNI_STRATEGIES))
    parser.add_argument("--fast", action="store_true", help="a small model, one epoch: checks the pipeline")
    parser.add_argument("--out", default=None, help="folder for NNI's files and the genotype (default: temporary)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="scansearch-nni-"))
    out.mkdir(parents=True, exist_ok=True)
    small = {"dim": 8, "depth": 2} if args.fast else {}

    data = load_data("digits", batch_size=64, seed=0)
    space = load_space("local8")
    torch.manual_seed(0)
    supernet = Supernet("local_vim_micro", space, num_classes=data.num_classes, img_size=data.img_size,
                        in_chans=data.in_chans, **small)
    template = Genotype(layers=(space.patterns[:space.k],) * supernet.num_layers, model="local_vim_micro",
                        space="local8", grid=tuple(supernet.token_grid),
                        provenance={"img_size": data.img_size, **({"model_overrides": small} if small else {})})
    try:
        result = search(supernet, data, strategy=args.strategy, k=space.k, epochs=1 if args.fast else 5, lr=1e-2,
                        weight_decay=0.01, arch_lr=3e-2, seed=0, template=template, root=str(out / "nni"))
    except NNIMissing as err:
        raise SystemExit(str(err)) from None
    result.genotype.save(out / "genotype.yaml")
    print(f"NNI {args.strategy[4:]} exported {result.exported}")
    for i, layer in enumerate(result.genotype.layers):
        print(f"layer {i}: {' '.join(layer)}")
    print(f"genotype: {out / 'genotype.yaml'}; train it with scansearch train {out / 'genotype.yaml'} --data digits")


if __name__ == "__main__":
    main()
