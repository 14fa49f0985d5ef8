"""The ``scansearch`` command line: one sub-module per command group.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` to a handler ``func(args) -> int``. Every failure ends with
one line on stderr and an exit code that says whose it is:

* 2: the user's input (a bad option, file, space, genotype, model setting, data set);
* 3: the run diverged (a NaN or infinite loss or gradient);
* 1: an internal error or a failure of the machine (disk full, ...). The traceback is
  shown with ``--debug`` and kept in the run folder's log where a command has one.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from scansearch import __version__
from scansearch.cli.common import PATH_ERRORS, crash_log
from scansearch.errors import EXIT_DIVERGED, EXIT_INPUT, EXIT_INTERNAL, DivergenceError, ScanSearchError

EXIT_USER = EXIT_INPUT
COMMANDS = ["spaces", "genotype", "derive", "search", "export", "train", "evaluate", "bench", "doctor"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line on stderr, exit code 2."""

    def error(self, message):  # noqa: D102 - argparse hook
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scansearch", description="Search the scan directions of vision Mamba models.")
    parser.add_argument("--version", action="version", version=f"scansearch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ScanSearchError as err:
        if err.exit_code == EXIT_INTERNAL:
            if args.debug:
                raise
            return _internal_error(err)
        label = "diverged" if isinstance(err, DivergenceError) else "error"
        sys.stderr.write(f"scansearch: {label}: {_one_line(err)}\n")
        return err.exit_code
    except PATH_ERRORS as err:  # a path the user named: not there, not a folder, not readable
        sys.stderr.write(f"scansearch: error: {_one_line(err)}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("scansearch: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error worth a word
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:  # noqa: BLE001 - the last line of defence: say what it is, keep the traceback
        if args.debug:
            raise
        return _internal_error(err)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _internal_error(err: Exception) -> int:
    """One line for an error that is not the user's: what it is, and where its traceback is."""
    kind = "system error" if isinstance(err, OSError) else "internal error"
    where = "run again with --debug for the traceback"
    log = crash_log()
    if log is not None:
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{kind}:\n{traceback.format_exc()}")
            where = f"traceback in {log}, or run again with --debug"
        except OSError:
            pass
    sys.stderr.write(f"scansearch: {kind}: {type(err).__name__}: {_one_line(err)} ({where})\n")
    return EXIT_INTERNAL

__all__ = ["EXIT_DIVERGED", "EXIT_INTERNAL", "EXIT_USER", "build_parser", "main"]
