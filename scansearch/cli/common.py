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

    from ..searchers.run import RunError

    errors: list[type[BaseException]] = [CLIError, SpaceError, GenotypeError, ModelError, DataError, TrainError,
                                         RunError, OSError]
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


def parse_overrides(items) -> dict:
    """``["dim=16", "drop_path_rate=0.1"]`` -> ``{"dim": 16, "drop_path_rate": 0.1}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CLIError(f"--set: expected FIELD=VALUE (e.g. dim=16), got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CLIError(f"--set {key}: cannot read the value {value!r}") from None
    return out
