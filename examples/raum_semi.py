"""RAUM-Net with 10% labels: semi-supervised training, uncertainty, occlusion, calibration.

    python examples/raum_semi.py            # a few minutes on a 2-core CPU
    python examples/raum_semi.py --fast     # a smoke run in under a minute

The same from the command line:

    scansearch train raum_micro --set patch_size=1 --out runs/raum --epochs 15 \\
        --semi-supervised --labeled-ratio 0.1 --filter uncertainty
    scansearch eval runs/raum --occlusion-sweep
    scansearch eval runs/raum --calibration --plot runs/raum/reliability.png

Here in Python: keep 10% of each digit class labeled, train raum_micro with FixMatch's
weak/strong views and RAUM-Net's uncertainty filter, then look at what the model says
about its own predictions: MC-dropout mean, mutual information, where it looks (the
region attention), how it fares under occlusion and how well calibrated it is.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from scansearch import build_model, expected_calibration_error, predict_with_uncertainty
from scansearch.data import load_data
from scansearch.data.occlusion import OccludedLoader
from scansearch.data.unlabeled import split_labeled
from scansearch.semi import SemiConfig, SemiLoader, SemiSupervised
from scansearch.train import TrainConfig, evaluate, fit
from scansearch.uncertainty import collect_probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a smoke run: 2 epochs")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    epochs = 2 if args.fast else args.epochs

    data = load_data("digits", batch_size=32, seed=0)
    labeled, unlabeled = split_labeled(data, ratio=0.1, seed=0, batch_size=32, unlabeled_batch=96)
    print(f"{labeled.num_samples} labeled and {unlabeled.num_samples} unlabeled training images")

    torch.manual_seed(0)
    model = build_model("raum_micro", num_classes=10, img_size=8, in_chans=1, patch_size=1)
    semi = SemiSupervised(SemiConfig(filter="uncertainty", tau=0.95, uncertainty_quantile=0.5))
    fit(model, dataclasses.replace(data, train=SemiLoader(labeled, unlabeled)),
        TrainConfig(epochs=epochs, lr=1e-2, label_smoothing=0.0, warmup_epochs=1), step_fn=semi.step, hooks=[semi],
        progress=False)

    model.eval()
    images, labels = next(iter(data.test))
    result = predict_with_uncertainty(model, images[:4], samples=8)
    _, attention = model(images[:4], return_attention=True)
    for i in range(4):
        print(f"image {i}: label {labels[i].item()}, predicted {result.prediction[i].item()} "
              f"(p={result.confidence[i]:.2f}, mutual information {result.mutual_info[i]:.4f}), "
              f"attention over 2x2 regions {[round(a, 2) for a in attention[i].flatten().tolist()]}")

    for share in (0.0, 0.2, 0.4):
        loader = OccludedLoader(data.test, share, seed=0) if share else data.test
        print(f"test top-1 at {share:.0%} occlusion: {evaluate(model, loader, 10)['top1']:.1%}")

    probs = collect_probs(model, data.test, "cpu", mc_samples=8)
    print(f"ECE: single pass {expected_calibration_error(probs['single'], probs['labels']):.3f}, "
          f"MC mean {expected_calibration_error(probs['mc_mean'], probs['labels']):.3f}")


if __name__ == "__main__":
    main()
