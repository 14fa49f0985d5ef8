"""A genotype as an Optuna trial: one categorical choice per layer, every value valid.

A layer keeps ``k`` of the space's patterns (or ``none``, where the space allows it). Optuna
stores categorical values that are ``None``, bools, numbers or strings, so a k-of-N pick is
one string per layer: the kept directions in the space's order, joined by ``+``
(``"h+h_flip+w2+w2_flip"``), or ``"none"``. Every value the sampler can draw is a valid
layer, and every trial can be written to any storage and read back as the same genotype.

Why one categorical per layer and not ``k`` choices of a pattern each: ``k`` separate
choices can repeat a pattern (an invalid layer the sampler would need to learn to avoid)
or depend on each other (a dynamic space, which Optuna's multivariate TPE and NSGA-II do
not model). The price is a larger categorical: ``C(8, 4) = 70`` values for ``local8``.
"""
from __future__ import annotations

import itertools
from typing import Sequence

from scansearch.errors import InputError
from scansearch.spaces import NONE, SearchSpace

SEPARATOR = "+"


class EncodingError(InputError):
    """A genotype that the space cannot encode, or a trial value that is no layer of it."""


class GenotypeEncoding:
    """The trial parameters of ``layers`` layers over ``space`` (``k`` kept per layer)."""

    def __init__(self, space: SearchSpace, layers: int, k: int | None = None):
        if layers < 1:
            raise EncodingError(f"a genotype needs at least one layer, got {layers}")
        self.space, self.layers = space, layers
        self.k = space.keep(k).k
        patterns = space.patterns
        choices = [SEPARATOR.join(c) for c in itertools.combinations(patterns, self.k)]
        if space.allows_none:
            choices.append(NONE)
        self.choices: tuple[str, ...] = tuple(choices)

    def name(self, layer: int) -> str:
        """The parameter name of a layer (``layer_0``, ``layer_1``, ...)."""
        return f"layer_{layer}"

    @property
    def size(self) -> int:
        """How many genotypes the encoding holds (choices ** layers)."""
        return len(self.choices) ** self.layers

    def encode_layer(self, layer: Sequence[str] | str) -> str:
        if layer == NONE or tuple(layer) == (NONE,):
            if not self.space.allows_none:
                raise EncodingError(f"space {self.space.name} has no 'none'")
            return NONE
        names = tuple(layer)
        order = self.space.patterns
        unknown = [n for n in names if n not in order]
        if unknown:
            raise EncodingError(f"{unknown[0]!r} is not a pattern of space {self.space.name}")
        if len(set(names)) != len(names) or len(names) != self.k:
            raise EncodingError(f"a layer keeps {self.k} distinct patterns of {self.space.name}, got {list(names)}")
        return SEPARATOR.join(sorted(names, key=order.index))

    def decode_layer(self, value: str) -> tuple[str, ...] | str:
        if value not in self.choices:
            raise EncodingError(f"{value!r} is not a layer of space {self.space.name} with k={self.k}")
        return NONE if value == NONE else tuple(value.split(SEPARATOR))

    def params(self, layers: Sequence) -> dict[str, str]:
        """The trial parameters of a genotype's layers (for ``study.enqueue_trial``)."""
        if len(layers) != self.layers:
            raise EncodingError(f"expected {self.layers} layers, got {len(layers)}")
        return {self.name(i): self.encode_layer(layer) for i, layer in enumerate(layers)}

    def decode(self, params: dict[str, str]) -> tuple:
        """A trial's parameters as genotype layers."""
        try:
            return tuple(self.decode_layer(params[self.name(i)]) for i in range(self.layers))
        except KeyError as err:
            raise EncodingError(f"trial has no parameter {err.args[0]!r}") from None

    def suggest(self, trial) -> tuple:
        """Ask ``trial`` for every layer; returns the genotype layers."""
        return tuple(self.decode_layer(trial.suggest_categorical(self.name(i), self.choices))
                     for i in range(self.layers))

    def describe(self) -> str:
        """``4 layers x 70 choices = 24,010,000 genotypes``."""
        return f"{self.layers} layers x {len(self.choices)} choices = {self.size:,} genotypes"


__all__ = ["EncodingError", "GenotypeEncoding", "SEPARATOR"]
