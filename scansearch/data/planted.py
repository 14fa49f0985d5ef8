"""The built-in ``planted`` task: classes that only a look at whole 2x2 blocks can tell apart.

It exists to check that a search over scan orders finds local 2x2-window scans (``w2``:
the four tokens of a block are consecutive) when the data needs them. It is evidence
only if the wrong orders pay for it: on a ``G x G`` grid of 1-pixel tokens a row scan
sees the two rows of a block ``G`` steps apart, a column scan the two columns. So the
grid is wide (16 or 24), there are several motif instances in every image, and every
statistic a row or column scan could read cheaply is made the same in every class.

Construction
------------
An image is a ``G/2 x G/2`` grid of 2x2-aligned blocks; a block is one of the 16 binary
patterns ``x = (a, b, c, d)`` (top-left, top-right, bottom-left, bottom-right). Write
``s = 2x - 1`` (spins +-1) and, for a set ``S`` of block positions, ``chi_S(x) = prod_{i in S} s_i``.
A distribution over blocks is fixed by its 16 moments ``E[chi_S]``; "order k" means ``|S| = k``.

Class ``k`` has a motif ``m_k``. Its *signal multiset* holds ``m_k`` twice and once each
of the ten patterns that differ from ``m_k`` in two or three pixels (12 blocks). Per
flip mask ``y = x XOR m_k``, the sum of ``chi_S(y)`` over this multiset is 0 for every
``S`` of order 1 or 2:

* a single pixel ``i``: ``m_k`` twice gives +2; the six weight-2 flips flip ``i`` in
  three of them (sum 0); the four weight-3 flips flip ``i`` in three (sum -2). Total 0.
* any pair ``{i, j}`` (horizontal, vertical or diagonal): +2 from ``m_k``; the weight-2
  flips give +1 (flip both), +1 (flip neither), -1 four times (flip one): -2; the
  weight-3 flips flip one of the pair twice and both twice: 0. Total 0.

Since ``chi_S(x) = chi_S(m_k) chi_S(y)``, every order-1 and order-2 moment of the
multiset is exactly 0, whatever ``m_k``: each pixel is on in 6 of the 12 blocks, and each
pixel pair, horizontal, vertical or diagonal, takes each of its 4 values exactly 3 times.
The multiset is in fact ``12 * (1/16)(1 + 1/3 * sum_{|S| >= 3} chi_S(m_k) chi_S(x))``:
the part of the motif that only moments of order 3 and 4 can see. Different motifs
differ in those moments, so classes differ; any three pixels of a block already span
both its rows and both its columns.

An image of class ``k`` holds ``M = motifs_per_image`` copies of ``m_k`` (``M/2`` signal
multisets, ``6M`` blocks) and fills the remaining blocks with uniformly random patterns
(mean 0 in every moment, the same in every class); all blocks are placed in a random
order, and Gaussian noise of std ``noise`` is added to the 0/1 pixels. Consequences:

* per image, the counts of "pixel on" and of each value of each within-block pair are
  exactly class-independent in the signal part, and drawn from the same law in the
  background;
* for two pixels in *different* blocks (e.g. the horizontal neighbours across a block
  border) the expected product is a function of the single-pixel and pair moments only
  (the blocks are a random permutation of the multiset), hence also class-independent;
* so any single pixel, any horizontal, vertical or diagonal pair anywhere has the same
  distribution in every class; only three or four pixels of one block together identify
  it. ``tests/test_data.py`` checks this on samples, together with the fact that the
  histogram of 2x2 block patterns separates the classes.

Motifs are chosen greedily so that classes are as distinct as possible: two motifs at
Hamming distance 1 or 4 have opposite high-order moments (inner product -3 of the five
``chi_S``, ``|S| >= 3``), at distance 2 or 3 similar ones (+1). There is no augmentation:
a shift or flip would move blocks off the 2x2 grid or turn one class's motif into another's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from .bundle import DataBundle, DataError, TensorLoader, repeat_channels

NUM_PATTERNS = 16
# PATTERN_BITS[p] is the 2x2 block of pattern p; bit 3 of p is the top-left pixel.
PATTERN_BITS = torch.tensor([[[(p >> 3) & 1, (p >> 2) & 1], [(p >> 1) & 1, p & 1]] for p in range(NUM_PATTERNS)],
                            dtype=torch.float32)
_HIGH_ORDER_SETS = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3), (0, 1, 2, 3)]
FIRST_MOTIF = 0b1001  # the main diagonal: an easy shape to spot in a plot


@dataclass(frozen=True)
class PlantedConfig:
    """Size and difficulty of the planted task. ``grid`` is the image side in pixels."""

    grid: int = 16
    classes: int = 4
    motifs_per_image: int = 6
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    noise: float = 0.1

    def validate(self) -> None:
        if self.grid < 2 or self.grid % 2:
            raise DataError(f"planted: grid must be even and at least 2, got {self.grid}")
        if not 2 <= self.classes <= NUM_PATTERNS:
            raise DataError(f"planted: classes must be between 2 and {NUM_PATTERNS}, got {self.classes}")
        blocks = (self.grid // 2) ** 2
        if self.motifs_per_image < 2 or self.motifs_per_image % 2:
            raise DataError(f"planted: motifs_per_image must be even and at least 2, got {self.motifs_per_image}")
        if 6 * self.motifs_per_image > blocks:
            raise DataError(f"planted: {self.motifs_per_image} motifs need {6 * self.motifs_per_image} of the "
                            f"{blocks} blocks of a {self.grid}x{self.grid} grid; use fewer or a larger grid")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise DataError(f"planted: {name} must not be negative")
        if self.noise < 0:
            raise DataError(f"planted: noise must not be negative, got {self.noise}")

    @classmethod
    def from_spec(cls, spec: str) -> "PlantedConfig":
        """``'planted'`` or ``'planted:grid=24,classes=4,motifs_per_image=8'`` -> a config."""
        name, _, params = spec.partition(":")
        if name.strip() != "planted":
            raise DataError(f"not a planted spec: {spec!r}")
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, eq, raw = (s.strip() for s in item.partition("="))
            if not eq or key not in kinds:
                raise DataError(f"planted: unknown parameter {item!r} (known: {', '.join(kinds)})")
            try:
                values[key] = float(raw) if kinds[key] in (float, "float") else int(raw)
            except ValueError:
                raise DataError(f"planted: {key} must be a number, got {raw!r}") from None
        return cls(**values)


def _signature(pattern: int) -> torch.Tensor:
    """The five order-3 and order-4 moments chi_S of one pattern."""
    spins = 2 * PATTERN_BITS[pattern].flatten() - 1
    return torch.stack([spins[list(s)].prod() for s in _HIGH_ORDER_SETS])


def planted_motifs(classes: int) -> list[int]:
    """The motif (pattern id) of each class: greedy, most distinct high-order moments first."""
    signatures = torch.stack([_signature(p) for p in range(NUM_PATTERNS)])
    chosen = [FIRST_MOTIF]
    while len(chosen) < classes:
        similarity = signatures @ signatures[chosen].sum(0)
        similarity[chosen] = math.inf
        chosen.append(int(torch.argmin(similarity)))  # argmin takes the lowest id on ties
    return chosen


def signal_multiset(motif: int) -> list[int]:
    """The motif twice and the ten patterns two or three pixel flips away (see the module doc)."""
    partners = [p for p in range(NUM_PATTERNS) if bin(p ^ motif).count("1") in (2, 3)]
    return [motif, motif] + partners


def generate_planted(config: PlantedConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images of the planted task, before normalisation.

    Returns pixels (n, 1, G, G) (0/1 plus noise), labels (n,) with balanced classes, and
    block patterns (n, G/2, G/2) (ids 0..15) for inspection and tests.
    """
    config.validate()
    gen = torch.Generator().manual_seed(seed)
    side, blocks = config.grid // 2, (config.grid // 2) ** 2
    labels = (torch.arange(n) % config.classes)[torch.randperm(n, generator=gen)]
    units = config.motifs_per_image // 2
    signal = torch.tensor([signal_multiset(m) * units for m in planted_motifs(config.classes)])
    background = torch.randint(NUM_PATTERNS, (n, blocks - signal.shape[1]), generator=gen)
    contents = torch.cat([signal[labels], background], dim=1)
    placement = torch.rand(n, blocks, generator=gen).argsort(dim=1)
    patterns = contents.gather(1, placement).view(n, side, side)
    pixels = PATTERN_BITS[patterns].permute(0, 1, 3, 2, 4).reshape(n, 1, config.grid, config.grid)
    if config.noise > 0:
        pixels = pixels + config.noise * torch.randn(pixels.shape, generator=gen)
    return pixels, labels, patterns


def load_planted(config: PlantedConfig | None = None, *, img_size: int | None = None, in_chans: int | None = None,
                 batch_size: int = 64, seed: int = 0) -> DataBundle:
    """The planted task as a DataBundle; splits are generated independently from ``seed``.

    ``img_size`` may be a multiple of ``grid``: each pixel then becomes an ``s x s``
    square (nearest neighbour), which keeps the 2x2 structure for a model with patch ``s``.
    """
    config = config or PlantedConfig()
    config.validate()
    size = config.grid if img_size is None else int(img_size)
    if size < config.grid or size % config.grid:
        raise DataError(f"planted: img_size must be a multiple of the grid ({config.grid}), got {img_size}; "
                        f"change the grid instead")
    scale = size // config.grid
    mean, std = 0.5, math.sqrt(0.25 + config.noise ** 2)

    def loader(n: int, split: int, train: bool) -> TensorLoader:
        pixels, labels, _ = generate_planted(config, n, seed=seed * 3 + split)
        images = (pixels - mean) / std
        if scale > 1:
            images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        return TensorLoader(repeat_channels(images, in_chans, "planted"), labels, batch_size, shuffle=train, seed=seed)

    train, val, test = loader(config.n_train, 0, True), loader(config.n_val, 1, False), loader(config.n_test, 2, False)
    motifs = planted_motifs(config.classes)
    chans = train.images.shape[1]
    return DataBundle(
        name="planted", train=train, val=val, test=test if config.n_test else None,
        num_classes=config.classes, class_names=[f"motif_{m:04b}" for m in motifs],
        img_size=size, in_chans=chans, mean=(mean,) * chans, std=(std,) * chans,
        details={"source": "built-in: planted 2x2 motifs", "planted": asdict(config), "motifs": motifs,
                 "seed": seed},
    )
