"""Helpers shared by the command modules: user-error types, grid parsing, the console."""
from __future__ import annotations

import re

from rich.console import Console

console = Console()


class CLIError(Exception):
    """A mistake in what the user typed; reported as one line, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type that means 'bad input', not 'bug'."""
    from ..spaces import SpaceError
    from ..genotype import GenotypeError
    from ..models import ModelError

    from ..data import DataError
    from ..train import TrainError

    errors: list[type[BaseException]] = [CLIError, SpaceError, GenotypeError, ModelError, DataError, TrainError,
                                         OSError]
    try:
        from ..kernels import BackendError
        errors.append(BackendError)
    except ImportError:
        pass
    return tuple(errors)


def parse_grid(text: str) -> tuple[int, int]:
    """'14x14' or '14' -> (14, 14)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise CLIError(f"--grid: expected HxW with positive integers (e.g. 14x14), got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) is not None else h
