"""Error types shared across the package, in a leaf module that imports nothing of it.

What a command does with each: the user's input (``TrainError`` and the other
``*Error`` types that subclass ``ValueError`` in their own modules) ends with exit code 2;
a run that diverged (``DivergenceError``) says so with exit code 3; anything else is an
internal error, exit code 1.
"""
from __future__ import annotations


class TrainError(ValueError):
    """A training setup that cannot work; one line saying what and where."""


class DivergenceError(ArithmeticError):
    """Training diverged (a loss or gradient became NaN or infinite): not the user's input and
    not a bug, but a setting (learning rate, clipping, precision) that did not work out."""
