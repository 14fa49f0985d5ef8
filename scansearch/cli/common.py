"""Helpers shared by the command modules: the console, the crash log, option parsing."""
from __future__ import annotations

import re

from rich.console import Console

from scansearch.errors import InputError

console = Console()


# Operating-system errors about a path the user named are the user's (exit 2); any other
# OSError (a full disk, an I/O error) is the machine's.
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


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
        raise InputError(f"--grid: expected HxW with positive integers (e.g. 14x14), got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) is not None else h
