"""Errors of the spaces package: bad input, reported to users as one line."""


class SpaceError(ValueError):
    """A search space or pattern that cannot be used (unknown name, malformed file)."""


class PatternError(SpaceError):
    """An unknown scan-pattern name or an invalid grid."""
