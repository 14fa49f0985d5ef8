"""The ``scansearch`` command line: one sub-module per command group.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` to a handler ``func(args) -> int``. Errors a user can
cause end with exit code 2 and a single line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import CLIError, user_errors

COMMANDS = ["spaces", "genotype", "derive", "search", "export", "train", "bench", "doctor"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line on stderr, exit code 2."""

    def error(self, message):  # noqa: D102 - argparse hook
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="scansearch", description="Search the scan directions of vision Mamba models.")
    parser.add_argument("--version", action="version", version=f"scansearch {__version__}")
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
    except user_errors() as err:
        sys.stderr.write(f"scansearch: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("scansearch: interrupted\n")
        return 130


__all__ = ["CLIError", "build_parser", "main"]
