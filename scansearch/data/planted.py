"""The built-in ``planted`` task: classes that only a look at whole 4-pixel blocks can tell apart.

It exists to check that a search over scan orders finds the scan that visits a block's
pixels consecutively when the data needs it. The block ``shape`` picks which scan that is:

=========  =======================================  ====================  ========================
``shape``  block                                    the answer            pixels of a pattern
=========  =======================================  ====================  ========================
``2x2``    a 2x2-aligned square (the default)       ``w2`` (2x2 windows)  TL, TR, BL, BR
``4x1``    4 pixels tall, 1 wide: a column segment  ``v`` (column scan)   top to bottom
``1x4``    1 pixel tall, 4 wide: a row segment      ``h`` (row scan)      left to right
=========  =======================================  ====================  ========================

It is evidence only if the wrong orders pay for it. On a ``G x G`` grid of 1-pixel
tokens, the scan steps at which ``h`` (row-major), ``v`` (column-major) and ``w2``
(2x2 windows in row-major order, row-major inside a window) visit the four pixels of one
block, relative to the first (the ``_flip`` twins visit them in reverse, same distances):

* ``2x2``: ``w2`` 0, 1, 2, 3; ``h`` 0, 1, G, G+1 (the two rows ``G`` steps apart); ``v``
  0, G, 1, G+1 (the two columns ``G`` steps apart).
* ``4x1``: ``v`` 0, 1, 2, 3; ``h`` 0, G, 2G, 3G (each pixel a row apart); ``w2`` 0, 2,
  2G, 2G+2 (the block is split across two windows a window-row apart).
* ``1x4``: ``h`` 0, 1, 2, 3; ``v`` 0, G, 2G, 3G; ``w2`` 0, 1, 4, 5 (two horizontally
  adjacent windows, the windows' other row in between): only a few steps apart, so for
  ``1x4`` ``w2`` is a much milder wrong order than for ``4x1`` (``w2`` is row-major
  inside and across windows, not symmetric in rows and columns).

So the grid is wider than the mixers' causal convolution (4 tokens): on the default 8x8
grid ``w2`` brings a whole block inside one convolution window, while ``h`` and ``v``
leave 8 steps between its rows or columns, which only the state can carry. Every image
holds the motif twice among 16 blocks (12 of them carry signal), and every statistic a
scan could read cheaply from fewer than three pixels of a block is made the same in every
class. Wider grids (16, 24) with more motifs make the wrong orders pay more and the task
slower to learn.

Construction
------------
An image is a ``G/bh x G/bw`` grid of aligned ``bh x bw`` blocks (``bh x bw`` = 2x2, 4x1
or 1x4; ``G`` must be a multiple of both). A block is one of the 16 binary patterns
``x = (a, b, c, d)``, its pixels in the order of the table above (for ``2x2``:
top-left, top-right, bottom-left, bottom-right). Write ``s = 2x - 1`` (spins +-1) and, for
a set ``S`` of block positions, ``chi_S(x) = prod_{i in S} s_i``. A distribution over
blocks is fixed by its 16 moments ``E[chi_S]``; "order k" means ``|S| = k``. Nothing below
uses where the four positions are in the image, so the argument, the multiset and the
motifs are the same for every shape; only the geometry of a block changes.

Class ``k`` has a motif ``m_k``. Its *signal multiset* holds ``m_k`` twice and once each
of the ten patterns that differ from ``m_k`` in two or three pixels (12 blocks). Per
flip mask ``y = x XOR m_k``, the sum of ``chi_S(y)`` over this multiset is 0 for every
``S`` of order 1 or 2:

* a single pixel ``i``: ``m_k`` twice gives +2; the six weight-2 flips flip ``i`` in
  three of them (sum 0); the four weight-3 flips flip ``i`` in three (sum -2). Total 0.
* any pair ``{i, j}`` (for ``2x2``: horizontal, vertical or diagonal; for ``4x1`` and
  ``1x4``: at distance 1, 2 or 3 along the segment): +2 from ``m_k``; the weight-2
  flips give +1 (flip both), +1 (flip neither), -1 four times (flip one): -2; the
  weight-3 flips flip one of the pair twice and both twice: 0. Total 0.

Since ``chi_S(x) = chi_S(m_k) chi_S(y)``, every order-1 and order-2 moment of the
multiset is exactly 0, whatever ``m_k``: each pixel is on in 6 of the 12 blocks, and each
pixel pair of a block takes each of its 4 values exactly 3 times.
The multiset is in fact ``12 * (1/16)(1 + 1/3 * sum_{|S| >= 3} chi_S(m_k) chi_S(x))``:
the part of the motif that only moments of order 3 and 4 can see. Different motifs
differ in those moments, so classes differ; for ``2x2``, any three pixels of a block
already span both its rows and both its columns.

An image of class ``k`` holds ``M = motifs_per_image`` copies of ``m_k`` (``M/2`` signal
multisets, ``6M`` blocks, so ``6M`` must not exceed the ``G^2/4`` blocks) and fills the
remaining blocks with uniformly random patterns (mean 0 in every moment, the same in
every class); all blocks are placed in a random order, and Gaussian noise of std
``noise`` is added to the 0/1 pixels. Consequences:

* per image, the counts of "pixel on" and of each value of each within-block pair are
  exactly class-independent in the signal part, and drawn from the same law in the
  background;
* for two pixels in *different* blocks (e.g. the neighbours across a block border) the
  expected product is a function of the single-pixel and pair moments only (the blocks
  are a random permutation of the multiset), hence also class-independent;
* so any single pixel and any pair of pixels anywhere has the same distribution in every
  class; only three or four pixels of one block together identify it. The tests
  (``tests/data/test_data.py``, ``tests/data/test_data_planted.py``) check this on samples, together
  with the fact that the histogram of block patterns read along the block's own shape
  separates the classes, and (for ``4x1`` and ``1x4``) that 2x2 blocks do not.

Motifs are chosen greedily so that classes are as distinct as possible: two motifs at
Hamming distance 1 or 4 have opposite high-order moments (inner product -3 of the five
``chi_S``, ``|S| >= 3``), at distance 2 or 3 similar ones (+1). There is no augmentation:
a shift or flip would move blocks off the block grid or turn one class's motif into another's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from scansearch.data.bundle import DataBundle, DataError, TensorLoader, repeat_channels

NUM_PATTERNS = 16
# Block shapes: name -> (height, width) in pixels. Every shape has 4 pixels.
SHAPES = {"2x2": (2, 2), "4x1": (4, 1), "1x4": (1, 4)}
# PATTERN_BITS[p] is the 2x2 block of pattern p; bit 3 of p is the top-left pixel.
PATTERN_BITS = torch.tensor([[[(p >> 3) & 1, (p >> 2) & 1], [(p >> 1) & 1, p & 1]] for p in range(NUM_PATTERNS)],
                            dtype=torch.float32)
_HIGH_ORDER_SETS = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3), (0, 1, 2, 3)]
FIRST_MOTIF = 0b1001  # the main diagonal: an easy shape to spot in a plot


def pattern_bits(shape: str = "2x2") -> torch.Tensor:
    """(16, bh, bw): the block of each pattern in ``shape``; bit 3 of p is the first pixel in
    row-major order (top-left; top of a ``4x1`` column; left end of a ``1x4`` row)."""
    if not isinstance(shape, str) or shape not in SHAPES:
        raise DataError(f"planted: shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return PATTERN_BITS.reshape(NUM_PATTERNS, *SHAPES[shape])


@dataclass(frozen=True)
class PlantedConfig:
    """Size and difficulty of the planted task. ``grid`` is the image side in pixels;
    ``shape`` the block shape (``2x2``, ``4x1`` or ``1x4``, see the module docstring)."""

    grid: int = 8
    classes: int = 4
    motifs_per_image: int = 2
    n_train: int = 2000
    n_val: int = 1000
    n_test: int = 1000
    noise: float = 0.1
    shape: str = "2x2"

    @property
    def block(self) -> tuple[int, int]:
        """(height, width) of a block in pixels."""
        return SHAPES[self.shape]

    @property
    def block_grid(self) -> tuple[int, int]:
        """(rows, columns) of blocks in an image."""
        bh, bw = self.block
        return self.grid // bh, self.grid // bw

    def validate(self) -> None:
        if not isinstance(self.shape, str) or self.shape not in SHAPES:
            raise DataError(f"planted: shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        step = max(self.block)  # the grid must be a multiple of both block sides; they are 1, 2 or 4
        if self.grid < step or self.grid % step:
            need = "even" if step == 2 else f"a multiple of {step}"
            raise DataError(f"planted: grid must be {need} and at least {step} for shape={self.shape}, "
                            f"got {self.grid}")
        if not 2 <= self.classes <= NUM_PATTERNS:
            raise DataError(f"planted: classes must be between 2 and {NUM_PATTERNS}, got {self.classes}")
        rows, cols = self.block_grid
        blocks = rows * cols
        if self.motifs_per_image < 2 or self.motifs_per_image % 2:
            raise DataError(f"planted: motifs_per_image must be even and at least 2, got {self.motifs_per_image}")
        if 6 * self.motifs_per_image > blocks:
            raise DataError(f"planted: {self.motifs_per_image} motifs need {6 * self.motifs_per_image} of the "
                            f"{blocks} {self.shape} blocks of a {self.grid}x{self.grid} grid; "
                            f"use fewer or a larger grid")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise DataError(f"planted: {name} must not be negative")
        if self.noise < 0:
            raise DataError(f"planted: noise must not be negative, got {self.noise}")

    @classmethod
    def from_spec(cls, spec: str) -> "PlantedConfig":
        """``'planted'`` or ``'planted:shape=4x1,grid=24,classes=4,motifs_per_image=8'`` -> a config."""
        name, _, params = spec.partition(":")
        if name.strip() != "planted":
            raise DataError(f"not a planted spec: {spec!r}")
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, eq, raw = (s.strip() for s in item.partition("="))
            if not eq or key not in kinds:
                raise DataError(f"planted: unknown parameter {item!r} (known: {', '.join(kinds)})")
            if kinds[key] in (str, "str"):
                values[key] = raw
                continue
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
    block patterns (n, G/bh, G/bw) (ids 0..15; ``pattern_bits(shape)`` draws them) for
    inspection and tests.
    """
    config.validate()
    gen = torch.Generator().manual_seed(seed)
    rows, cols = config.block_grid
    blocks = rows * cols
    labels = (torch.arange(n) % config.classes)[torch.randperm(n, generator=gen)]
    units = config.motifs_per_image // 2
    signal = torch.tensor([signal_multiset(m) * units for m in planted_motifs(config.classes)])
    background = torch.randint(NUM_PATTERNS, (n, blocks - signal.shape[1]), generator=gen)
    contents = torch.cat([signal[labels], background], dim=1)
    placement = torch.rand(n, blocks, generator=gen).argsort(dim=1)
    patterns = contents.gather(1, placement).view(n, rows, cols)
    # (n, rows, cols, bh, bw) -> (n, rows, bh, cols, bw): block (r, c) pixel (i, j) is image pixel (r*bh+i, c*bw+j)
    pixels = pattern_bits(config.shape)[patterns].permute(0, 1, 3, 2, 4).reshape(n, 1, config.grid, config.grid)
    if config.noise > 0:
        pixels = pixels + config.noise * torch.randn(pixels.shape, generator=gen)
    return pixels, labels, patterns


def load_planted(config: PlantedConfig | None = None, *, img_size: int | None = None, in_chans: int | None = None,
                 batch_size: int = 64, seed: int = 0) -> DataBundle:
    """The planted task as a DataBundle; splits are generated independently from ``seed``.

    ``img_size`` may be a multiple of ``grid``: each pixel then becomes an ``s x s``
    square (nearest neighbour), which keeps the block structure for a model with patch ``s``.
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
        details={"source": f"built-in: planted {config.shape} motifs", "planted": asdict(config), "motifs": motifs,
                 "seed": seed},
    )
