"""Occlusion: a random rectangle over each image, covering a given share of its area.

``occlude(images, share, generator)`` paints one axis-aligned rectangle per image with
the fill value (0 by default: the data set's mean colour, since images arrive normalised).
The rectangle's height and width are the integers whose product is closest to
``share * H * W`` for an aspect ratio drawn from [1/2, 2] (clipped to the image), at a
uniformly random place; ``covered_share`` reports what was painted. The same generator
state gives the same rectangles, so an evaluation at 20% occlusion sees the same
occluders for every model (``OccludedLoader`` seeds each batch from ``(seed, index)``).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from scansearch.data.bundle import DataError

ASPECT = (0.5, 2.0)
SWEEP = (0.0, 0.2, 0.4)  # the paper's no / 20% / 40% occlusion


def check_share(share: float, where: str = "occlusion") -> float:
    share = float(share)
    if not math.isfinite(share) or not 0 <= share < 1:
        raise DataError(f"{where}: the occluded share must lie in [0, 1), got {share}")
    return share


def rectangle_size(share: float, H: int, W: int, aspect: float) -> tuple[int, int]:
    """(h, w) with h * w as close to ``share * H * W`` as the image allows, h / w near ``aspect``."""
    target = share * H * W
    if target <= 0:
        return 0, 0
    h = min(H, max(1, round(math.sqrt(target * aspect))))
    w = min(W, max(1, round(target / h)))
    h = min(H, max(1, round(target / w)))  # re-fit h once w is clipped
    return h, w


def occlusion_masks(batch: int, H: int, W: int, share: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Boolean masks ``(batch, H, W)``, True where occluded. ``share`` is one value or one per image."""
    shares = torch.as_tensor(share, dtype=torch.float64).expand(batch)
    aspects = torch.exp(torch.empty(batch, dtype=torch.float64).uniform_(
        math.log(ASPECT[0]), math.log(ASPECT[1]), generator=generator))
    places = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
    masks = torch.zeros(batch, H, W, dtype=torch.bool)
    for i in range(batch):
        h, w = rectangle_size(float(shares[i]), H, W, float(aspects[i]))
        if h == 0:
            continue
        top = int(places[i, 0] * (H - h + 1))
        left = int(places[i, 1] * (W - w + 1))
        masks[i, top:top + h, left:left + w] = True
    return masks


def occlude(images: torch.Tensor, share: float | torch.Tensor, generator: torch.Generator,
            fill: float = 0.0) -> torch.Tensor:
    """``images (B, C, H, W)`` with one rectangle of ``share`` of the area painted ``fill`` each."""
    if images.ndim != 4:
        raise DataError(f"occlusion: expected images (B, C, H, W), got shape {tuple(images.shape)}")
    B, _, H, W = images.shape
    masks = occlusion_masks(B, H, W, share, generator).to(images.device)
    return images.masked_fill(masks[:, None], fill)


def covered_share(original: torch.Tensor, occluded: torch.Tensor) -> torch.Tensor:
    """Per image, the share of pixels that differ (what ``occlude`` painted, where it changed them)."""
    return (original != occluded).any(1).flatten(1).float().mean(1)


def batch_generator(seed: int, index: int, stream: int = 7) -> torch.Generator:
    """The generator of batch ``index``'s occluders: the same for every model evaluated."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index * 9_176 + stream) % (2**63))


class OccludedLoader:
    """A loader whose images arrive occluded by ``share`` (deterministic per seed and batch)."""

    def __init__(self, loader, share: float, seed: int = 0):
        self.loader, self.share, self.seed = loader, check_share(share), seed

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, (images, labels) in enumerate(self.loader):
            yield (occlude(images, self.share, batch_generator(self.seed, index)) if self.share else images), labels
