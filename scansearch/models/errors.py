"""The error types of the models package: what the user gave, and what a caller got wrong."""
from __future__ import annotations

from scansearch.errors import InputError, ScanSearchError


class ModelError(InputError):
    """A model that cannot be built, saved or loaded; the message says what and where, in one line."""


class ShapeError(ScanSearchError, RuntimeError):
    """A module called with tensors or indices that do not fit it: a bug in the calling code, not the
    user's input (so the command line reports it as an internal error, not exit code 2)."""
