"""Load a derived model in plain PyTorch and classify images with it.

    python examples/load_derived_model.py runs/quickstart/model

A model folder (written by ``scansearch train`` or ``save_model``) holds three files:
``genotype.yaml`` (the directions of each layer), ``config.yaml`` (the model's fields)
and ``weights.safetensors``. ``load_model`` rebuilds the ``nn.Module`` from them; it
needs ``scansearch`` (models and kernels) but no searcher code, and nothing is unpickled.
"""
from __future__ import annotations

import argparse

import torch

from scansearch.data import load_data
from scansearch.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()

    model = load_model(args.model_dir).eval()           # a plain torch.nn.Module
    print(model.genotype.layers)                         # what the search chose, layer by layer
    print({k: model.config[k] for k in ("family", "dim", "depth", "img_size")})

    # any (B, C, H, W) float tensor normalised like the training data works; here the test split
    data = load_data(args.data, in_chans=model.cfg.in_chans, seed=0)
    images, labels = next(iter(data.test))
    with torch.no_grad():
        probabilities = model(images).softmax(-1)
    predicted = probabilities.argmax(-1)
    print(f"{(predicted == labels).float().mean():.1%} of {len(labels)} test images right")

    # it is an ordinary module: fine-tune it, wrap it, save its state_dict as usual
    model.train()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    print(f"loss {loss.item():.3f}; gradients reach {sum(p.grad is not None for p in model.parameters())} tensors")


if __name__ == "__main__":
    main()
