"""The source tree keeps the shape docs/architecture.md describes: absolute imports, no import
cycles, function-level imports only for optional or heavy extras, files of readable size,
one error family, a thin command line."""
from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import networkx as nx
import pytest

from helpers import REPO
from scansearch.errors import DivergenceError, InputError, ScanSearchError

PACKAGES = {"scansearch": "scansearch", "scansearch.kernels": "kernels", "scansearch.spaces": "spaces",
            "scansearch.searchers": "searchers"}
# imported inside functions because they are optional extras or need a GPU stack
LAZY = ("triton", "nni", "pytorch_lightning", "matplotlib", "scipy", "sqlalchemy", "psycopg", "PIL",
        "scansearch.kernels")  # the Triton kernels' own modules, which import triton
MAX_LAZY, MAX_LINES, MAX_CLI_SEARCH = 25, 450, 400


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if folder == "scansearch" and parts[0] in ("kernels", "spaces", "searchers"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _imported(node: ast.AST) -> list[str]:
    """The modules of ours an import statement loads (``from a import b`` is a.b when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    out = []
    for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.append(full if full in MODULES else node.module)
    return [m for m in out if m in MODULES]


def test_imports_between_our_modules_are_absolute():
    relative = [f"{MODULES[name].relative_to(REPO)}:{node.lineno}" for name, tree in TREES.items()
                for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert not relative, f"relative imports: {relative}"


def test_no_module_imports_one_that_imports_it_back():
    graph = nx.DiGraph()
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node):
                    if target != name and not name.startswith(target + "."):  # a package's own __init__
                        graph.add_edge(name, target)
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_function_level_imports_only_for_optional_extras():
    lazy = []
    for name, tree in TREES.items():
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        lazy.append((f"{MODULES[name].relative_to(REPO)}:{node.lineno}", module))
    heavy = [(where, m) for where, m in lazy if not m.startswith(LAZY)]
    assert not heavy, f"imports inside functions that could be at the top: {heavy}"
    assert len(lazy) <= MAX_LAZY, f"{len(lazy)} function-level imports (at most {MAX_LAZY}): {lazy}"


def test_files_stay_readable_and_the_search_command_thin():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not long, f"files of {MAX_LINES} lines or more: {long}"
    cli = sorted((REPO / "scansearch" / "cli").glob("search*.py"))
    assert sum(len(p.read_text(encoding="utf-8").splitlines()) for p in cli) < MAX_CLI_SEARCH


def test_no_module_takes_the_name_of_a_standard_library_module():
    clashes = [name for name in MODULES if name.rpartition(".")[2] in sys.stdlib_module_names]
    assert not clashes, clashes


def test_every_error_class_belongs_to_the_family():
    """Each exception class the packages define derives from ScanSearchError; the input ones
    (exit 2) from InputError, and the CLI catches the base, not a list of types."""
    strays, codes = [], {}
    for name in MODULES:
        if name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                if not issubclass(cls, ScanSearchError):
                    strays.append(f"{name}.{cls.__name__}")
                codes[cls.__name__] = cls.exit_code if issubclass(cls, ScanSearchError) else None
    assert not strays, f"error classes outside the family: {strays}"
    for user in ("SpaceError", "PatternError", "GenotypeError", "ModelError", "DataError", "TrainError", "RunError",
                 "StudyError", "EncodingError", "BackendError", "NNIMissing", "DistributedError"):
        assert codes[user] == 2, user
    assert codes["DivergenceError"] == 3 and codes["ShapeError"] == 1 and codes["OrderError"] == 1
    assert issubclass(InputError, ValueError) and issubclass(DivergenceError, ArithmeticError)
    source = (REPO / "scansearch" / "cli" / "__init__.py").read_text(encoding="utf-8")
    assert "except ScanSearchError" in source and "user_errors" not in source


@pytest.mark.parametrize("error, code", [(InputError("bad --thing"), 2), (DivergenceError("nan"), 3),
                                         (ScanSearchError("broken"), 1)])
def test_the_command_line_ends_with_the_error_s_own_code(error, code, monkeypatch, capsys):
    from scansearch.cli import derive, main

    def fail(args):
        raise error

    monkeypatch.setattr(derive, "run", fail)
    assert main(["derive", "local_vim_micro"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(error) in lines[0]
