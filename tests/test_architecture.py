"""docs/architecture.md names only what exists, and names every module.

* Every dotted name starting with ``scansearch.`` inside backticks (and a span that is just
  ``scansearch``, the package) is a module, found with
  ``importlib.util.find_spec`` (which imports the parent packages but never the module
  itself, so optional extras such as NNI or matplotlib stay unloaded), or a name defined at
  the top level of one (read with ``ast``, nothing imported).
* Every path in backticks whose first part is a folder of the repository
  (``searchers/pipeline.py``, ``tests/kernels``), and every such path ending in ``.py``,
  exists relative to the repository root.
* Every module of the four packages (``scansearch/``, ``kernels/``, ``spaces/``,
  ``searchers/``, mapped to import names by ``pyproject.toml``'s package-dir) is named in the
  document by its dotted name: a new module without its line fails here.

Fenced code blocks are left out; names are looked for in inline code spans only.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"(?<![\w.])scansearch(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*/?")


def spans() -> list[tuple[int, str]]:
    """(line number, text) of every inline code span outside fenced blocks."""
    found, fence = [], None
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                    and not line.strip()[len(opened.group(1)):]:
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        found.extend((number, span) for span in SPAN.findall(line))
    return found


def dotted_names() -> list[tuple[int, str]]:
    """The module names in code spans: dotted ``scansearch.`` names, and the package itself
    where a span is just ``scansearch``."""
    return [(number, name) for number, span in spans()
            for name in (["scansearch"] if span == "scansearch" else DOTTED.findall(span))]


def package_dirs() -> dict[str, Path]:
    """Import name -> folder, from pyproject.toml's ``[tool.setuptools] package-dir``."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: read the one inline table by hand
        line = re.search(r"^package-dir\s*=\s*\{(.*)\}\s*$", text, flags=re.M).group(1)
        mapping = dict(re.findall(r'"([\w.]+)"\s*=\s*"([^"]+)"', line))
    else:
        mapping = tomllib.loads(text)["tool"]["setuptools"]["package-dir"]
    return {name: REPO / folder for name, folder in mapping.items()}


def repository_modules() -> set[str]:
    """Every module of the four packages by its import name (a package by its own name)."""
    modules = set()
    for package, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if not all((folder.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(len(parts))):
                continue  # not inside a package (no __init__.py on the way)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.add(".".join((package, *parts)))
    return modules


@lru_cache(maxsize=None)
def module_spec(name: str):
    """The module's spec, or None when there is no such module."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent that is not a package, or not there
        return None


@lru_cache(maxsize=None)
def top_level_names(path: str) -> frozenset[str]:
    """The names a module's source binds at its top level (definitions, assignments, imports)."""
    names = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(Path(path).read_text(encoding="utf-8")).body)
    return frozenset(names)


def exists(name: str) -> bool:
    """A module, or a name defined at the top level of a module."""
    if module_spec(name) is not None:
        return True
    module, _, attribute = name.rpartition(".")
    spec = module_spec(module) if "." in module else None
    return spec is not None and spec.origin is not None and spec.origin.endswith(".py") \
        and attribute in top_level_names(spec.origin)


def test_named_modules_exist():
    missing = [f"{DOC.name}:{number}: `{name}`" for number, name in dotted_names() if not exists(name)]
    assert not missing, "no such module (or name in a module):\n" + "\n".join(missing)


def test_named_paths_exist():
    top = {entry.name for entry in REPO.iterdir() if entry.is_dir()}
    checked, missing = 0, []
    for number, span in spans():
        if "/" not in span or not PATH.fullmatch(span):
            continue
        if span.split("/")[0] not in top and not span.endswith(".py"):
            continue  # not a repository path: a run folder's file (RUN/config.yaml, supernet/), ...
        checked += 1
        if not (REPO / span).exists():
            missing.append(f"{DOC.name}:{number}: `{span}`")
    assert checked, f"{DOC.name} names no repository path; is the parser broken?"
    assert not missing, "no such file or folder in the repository:\n" + "\n".join(missing)


def test_every_module_is_named():
    modules = repository_modules()
    assert {"scansearch", "scansearch.kernels", "scansearch.spaces", "scansearch.searchers"} <= modules
    named = {name for _, name in dotted_names()}
    missing = sorted(modules - named)
    assert not missing, (f"{len(missing)} module(s) without a line in docs/architecture.md (add one to its "
                         f"Modules tables):\n" + "\n".join(missing))
