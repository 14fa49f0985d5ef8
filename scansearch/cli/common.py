"""Helpers shared by the command modules: user-error types, grid parsing, the console."""
from __future__ import annotations

import re
import sys

from rich.console import Console

console = Console()


class CLIError(Exception):
    """A mistake in what the user typed; reported as one line, exit code 2."""


# Operating-system errors about a path the user named; any other OSError (a full disk, an
# I/O error) is the machine's, not the user's.
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type that means 'bad input', not 'bug'."""
    from ..data import DataError
    from ..errors import TrainError
    from ..genotype import GenotypeError
    from ..kernels import BackendError
    from ..models import ModelError
    from ..searchers.encoding import EncodingError
    from ..searchers.nni_adapter import NNIMissing
    from ..searchers.run import RunError
    from ..searchers.study import StudyError
    from ..spaces import SpaceError

    return (CLIError, SpaceError, GenotypeError, ModelError, DataError, TrainError, RunError, BackendError,
            EncodingError, StudyError, NNIMissing, *PATH_ERRORS)


_crash_log = None


def set_crash_log(path) -> None:
    """Where an internal error's traceback goes (a run folder's log), once a command has one."""
    global _crash_log
    _crash_log = path


def crash_log():
    return _crash_log


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


def check_model_options(source, img_size, overrides: dict) -> None:
    """Check ``--set`` and ``--img-size`` against the model's config (types, ranges, widths)
    before anything is loaded or built, and say in one line (stderr) where they override
    what a genotype records about the model it was searched on."""
    from ..models import ModelError, model_config, recorded_config
    from ..models.build import resolve_source

    try:
        _, genotype = resolve_source(source)
        model_config(source, img_size=img_size, **overrides)
    except ModelError as err:
        named = [k for k in overrides if f"'{k}'" in str(err) or f"{k} =" in str(err)]
        raise (CLIError(f"--set {named[0]}={overrides[named[0]]}: {err}") if named else err) from None
    if genotype is None:
        return
    recorded = recorded_config(genotype)
    given = {**overrides, **({} if img_size is None else {"img_size": img_size})}
    changed = [f"{k}={given[k]!r} (recorded: {recorded[k]!r})" for k in given
               if k in recorded and _same_value(k, given[k]) != _same_value(k, recorded[k])]
    if changed:
        sys.stderr.write(f"scansearch: note: the command line changes the model the genotype records: "
                         f"{', '.join(changed)}\n")


def _same_value(name: str, value):
    """Values compared as the config stores them (an int image size is a square)."""
    if name == "img_size" and isinstance(value, int):
        return (value, value)
    return tuple(value) if isinstance(value, list) else value
