"""Every documented command runs as written.

The fenced blocks marked ``bash``, ``sh``, ``shell``, ``console`` or ``python`` in README.md,
CONTRIBUTING.md and docs/*.md are run, one test per block (its id: file and line of the
opening fence). Per document the blocks run in order in one fresh temporary folder, so a
later block reads what an earlier one wrote: shell blocks with ``bash -euo pipefail`` (a
failing command fails the test), a ``console`` block's ``$ `` lines likewise, Python blocks
each in a fresh interpreter. ``$REPO`` is the repository's root, and its ``examples/`` and
``benchmarks/`` are linked into the folder, so a command written for the root runs as is.
Error messages and tracebacks give the document's own line numbers.

An HTML comment right above a block (blank lines between are fine) changes how it runs:

* ``<!-- doc-test: skip (reason) -->``: not run; the reason is the skip's;
* ``<!-- doc-test: slow -->``: marked ``slow`` (searches, trainings);
* ``<!-- doc-test: repo -->``: run in the repository's root instead; ``slow, repo`` combines.

A block that reads what a slow block wrote must be slow too: ``-m "not slow"`` leaves the
slow one out. Selecting a single block with ``-k`` runs it without the blocks before it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [p for p in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
             if p.is_file()]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python"}
LINKED = ("examples", "benchmarks")  # linked into each document's folder, as in the repository's root
FLAGS = {"slow", "repo"}
QUICK_TIMEOUT, SLOW_TIMEOUT = 600, 2400  # seconds; generous, for a 2-core machine under load

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<text>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$", re.S)


@dataclass
class Block:
    doc: str          # path relative to the repository
    line: int         # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None
    slow: bool = False
    repo: bool = False

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The runnable blocks of one document, and what is wrong with its directives."""
    doc = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, problems, pending = [], [], []  # pending: (line, directive text) waiting for a block
    i = 0
    while i < len(lines):
        text = lines[i]
        directive = DIRECTIVE.match(text)
        fence = FENCE.match(text)
        if directive:
            pending.append((i + 1, directive.group("text")))
        elif fence:
            marker, lang = fence.group("fence"), fence.group("info").lower()
            close = re.compile(rf"^ {{0,3}}{marker[0]}{{{len(marker)},}}\s*$")
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            code = "\n".join(lines[i + 1:j]) + "\n"
            if lang in SHELL | PYTHON:
                block = Block(doc, i + 1, lang, code)
                for at, what in pending:
                    problem = _apply(block, what)
                    if problem:
                        problems.append(f"{doc}:{at}: {problem}")
                blocks.append(block)
            else:
                problems += [f"{doc}:{at}: a doc-test directive above a {lang or 'plain'} block, which is not run"
                             for at, _ in pending]
            pending = []
            i = j
        elif text.strip():
            problems += [f"{doc}:{at}: a doc-test directive with no code block right below it" for at, _ in pending]
            pending = []
        i += 1
    problems += [f"{doc}:{at}: a doc-test directive at the end of the document" for at, _ in pending]
    return blocks, problems


def _apply(block: Block, text: str) -> str | None:
    skip = SKIP.match(text)
    if skip:
        block.skip = skip.group("reason").strip()
        return None
    if text.startswith("skip"):
        return f"'{text}': a skip needs its reason in parentheses: skip (why)"
    for flag in (f.strip() for f in text.split(",")):
        if flag not in FLAGS:
            return f"unknown doc-test directive {flag!r} (known: skip (reason), {', '.join(sorted(FLAGS))})"
        setattr(block, flag, True)
    return None


def console_script(code: str) -> str:
    """A console block's commands: its ``$ `` lines, with their continuation lines."""
    commands, continued = [], False
    for line in code.splitlines():
        if continued:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            commands.append("")  # output: keeps the line numbers
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


PARSED = {path: parse(path) for path in DOCUMENTS}
BLOCKS = [block for blocks, _ in PARSED.values() for block in blocks]


def _param(block: Block):
    marks = []
    if block.skip is not None:
        marks.append(pytest.mark.skip(reason=f"doc-test: {block.skip}"))
    if block.slow:
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.id, marks=marks)


@pytest.fixture(scope="session")
def doc_folders(tmp_path_factory):
    """One fresh folder per document, shared by its blocks in order, and what failed there."""
    folders: dict[str, Path] = {}
    failed: dict[str, list[str]] = {}
    scripts = tmp_path_factory.mktemp("doc-scripts")

    def folder(doc: str) -> Path:
        if doc not in folders:
            path = tmp_path_factory.mktemp("doc-" + re.sub(r"\W+", "-", doc))
            for name in LINKED:
                if (REPO / name).is_dir():
                    (path / name).symlink_to(REPO / name, target_is_directory=True)
            folders[doc] = path
        return folders[doc]

    return folder, failed, scripts


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_documented_block_runs(block: Block, doc_folders):
    folder, failed, scripts = doc_folders
    cwd = REPO if block.repo else folder(block.doc)
    padding = "\n" * block.line  # the code's lines keep the document's numbers in messages
    name = re.sub(r"\W+", "-", block.doc)
    if block.lang in PYTHON:
        script = scripts / f"{name}-{block.line}.py"
        script.write_text(padding + block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        code = console_script(block.code) if block.lang == "console" else block.code
        script = scripts / f"{name}-{block.line}.sh"
        script.write_text(padding + code, encoding="utf-8")
        command = ["bash", "-euo", "pipefail", str(script)]
    env = {**os.environ, "REPO": str(REPO), "COLUMNS": "120", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    returncode, output = _run(command, cwd, env, SLOW_TIMEOUT if block.slow else QUICK_TIMEOUT)
    if returncode != 0:
        earlier = failed.setdefault(block.doc, [])
        note = f"\n(an earlier block of {block.doc} failed too: {', '.join(earlier)})" if earlier else ""
        earlier.append(block.id)
        pytest.fail(f"{block.id}: the {block.lang} block ended with exit code {returncode} in {cwd}{note}\n"
                    f"--- its output (the end) ---\n{output[-8000:]}", pytrace=False)


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run in a session of its own, so that a timeout stops the commands the block started too."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return -9, f"{output}\n(stopped after {timeout} s)"
    return proc.returncode, output


def test_directives_are_well_formed():
    problems = [problem for _, found in PARSED.values() for problem in found]
    assert not problems, "\n".join(problems)


def test_readme_test_command_is_what_ci_runs():
    """.ci/run runs the README's test command: the two must not drift apart."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    (command,) = [line for line in ci if line.startswith("python3 -m pip install")]
    for doc in ("README.md", "CONTRIBUTING.md"):
        shell = [line for block in PARSED[REPO / doc][0] if block.lang in SHELL
                 for line in block.code.splitlines()]
        assert command in shell, f"{doc} no longer holds .ci/run's test command:\n{command}"


LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a document's headings."""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_links_resolve():
    broken = []
    for path in DOCUMENTS:
        text = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
