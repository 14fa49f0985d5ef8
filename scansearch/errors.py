"""The error family of scansearch, in a leaf module that imports nothing of the package.

Every error the package raises on purpose derives from :class:`ScanSearchError`, and says
what is wrong and where in one line. Its ``exit_code`` is what the command line ends with:

* :class:`InputError` (exit 2): what the user gave cannot be used: an option, a file, a
  space, a genotype, a model setting, a data set, a run folder. Each package names its own
  kinds (``SpaceError``, ``GenotypeError``, ``ModelError``, ``DataError``, ``TrainError``,
  ``RunError``, ``StudyError``, ...); they are ``InputError`` (and ``ValueError``) too.
* :class:`DivergenceError` (exit 3): training diverged (a NaN or infinite loss or
  gradient): not the user's input and not a bug, but a setting that did not work out.
* anything else (exit 1) is internal: a bug, or the machine (a full disk).
"""
from __future__ import annotations

EXIT_INTERNAL, EXIT_INPUT, EXIT_DIVERGED = 1, 2, 3


class ScanSearchError(Exception):
    """The base of every error scansearch raises on purpose; internal unless a subclass says otherwise."""

    exit_code = EXIT_INTERNAL


class InputError(ScanSearchError, ValueError):
    """Input that cannot be used as given; the message says what and where, in one line."""

    exit_code = EXIT_INPUT


class DivergenceError(ScanSearchError, ArithmeticError):
    """Training diverged (a loss or gradient became NaN or infinite): not the user's input and
    not a bug, but a setting (learning rate, clipping, precision) that did not work out."""

    exit_code = EXIT_DIVERGED


class TrainError(InputError):
    """A training setup that cannot work; one line saying what and where."""


__all__ = ["DivergenceError", "EXIT_DIVERGED", "EXIT_INPUT", "EXIT_INTERNAL", "InputError", "ScanSearchError",
           "TrainError"]
