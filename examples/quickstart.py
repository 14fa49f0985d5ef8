"""Quick start: search the scan directions on the built-in digits, train the result, use it.

    python examples/quickstart.py            # about 10 minutes on a 2-core CPU
    python examples/quickstart.py --fast     # a smoke run in about a minute

The same as three commands:

    scansearch search --space local8 --out runs/quickstart
    scansearch train runs/quickstart/genotype.yaml --data digits --out runs/quickstart/model
    scansearch eval runs/quickstart/model --data digits
"""
from __future__ import annotations

import argparse

import torch

from scansearch.data import load_data
from scansearch.models import build_model, load_model, save_model
from scansearch.searchers.darts import DartsConfig, search
from scansearch.searchers.run import RunFolder
from scansearch.searchers.supernet import Supernet
from scansearch.spaces import load_space
from scansearch.train import TrainConfig, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="one epoch each: checks the pipeline, not the result")
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args()
    search_epochs, train_epochs = (1, 1) if args.fast else (6, 20)
    steps = 4 if args.fast else None  # --fast: a few batches per epoch

    data = load_data("digits", batch_size=64, seed=0)      # 8x8 grey digits, 10 classes
    torch.manual_seed(0)
    supernet = Supernet("local_vim_micro", load_space("local8"), num_classes=data.num_classes,
                        img_size=data.img_size, in_chans=data.in_chans)
    run = RunFolder.create(RunFolder.default_path(args.out, "search"))
    result = search(supernet, data, TrainConfig(epochs=search_epochs, lr=1e-2, weight_decay=0.01, seed=0,
                                                max_steps_per_epoch=steps),
                    DartsConfig(), run)
    print("found:", [list(layer) for layer in result.genotype.layers])

    torch.manual_seed(0)
    model = build_model(result.genotype, num_classes=data.num_classes, img_size=data.img_size,
                        in_chans=data.in_chans)
    fit(model, data, TrainConfig(epochs=train_epochs, lr=1e-2, seed=0, max_steps_per_epoch=steps))
    print("test:", evaluate(model, data.test, data.num_classes)["top1"])

    save_model(model, run.path / "model")                   # genotype.yaml, config.yaml, weights.safetensors
    again = load_model(run.path / "model")                  # no searcher code needed
    images, _ = next(iter(data.test))
    assert torch.allclose(again(images), model.eval()(images), atol=1e-5)
    print("saved and reloaded:", run.path / "model")


if __name__ == "__main__":
    main()
