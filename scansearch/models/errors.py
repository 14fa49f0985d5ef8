"""The one error type of the models package."""
from __future__ import annotations


class ModelError(ValueError):
    """A model that cannot be built, saved or loaded; the message says what and where, in one line."""
