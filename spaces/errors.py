"""Errors of the spaces package: bad input, reported to users as one line."""
from scansearch.errors import InputError


class SpaceError(InputError):
    """A search space or pattern that cannot be used (unknown name, malformed file)."""


class PatternError(SpaceError):
    """An unknown scan-pattern name or an invalid grid."""
