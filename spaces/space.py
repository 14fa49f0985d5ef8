"""Search spaces: which scan patterns a layer may choose from, and how many it keeps."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scansearch.spaces.errors import SpaceError
from scansearch.spaces.patterns import NONE, is_pattern_name

SPACES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SearchSpace:
    """``candidates`` are pattern names (``none`` allowed); a layer keeps ``k`` patterns, or ``none``."""

    name: str
    candidates: tuple[str, ...]
    k: int
    description: str = ""
    path: str | None = field(default=None, compare=False)  # the file it was read from, if any

    @property
    def patterns(self) -> tuple[str, ...]:
        """The candidates that are scan patterns (all but ``none``)."""
        return tuple(c for c in self.candidates if c != NONE)

    @property
    def allows_none(self) -> bool:
        return NONE in self.candidates

    @property
    def is_shipped(self) -> bool:
        """True for a space that ships with scansearch, unchanged (same candidates and k)."""
        if self.path is None or Path(self.path).resolve().parent != SPACES_DIR:
            return False
        return load_space(self.name) == self

    @property
    def ref(self) -> "str | SearchSpace":
        """How a genotype records this space: a shipped one by name, any other whole (inline),
        so the genotype rebuilds on a machine without the user's space file."""
        return self.name if self.is_shipped else dataclasses.replace(self, path=None)

    def keep(self, k: int | None) -> "SearchSpace":
        """This space keeping ``k`` directions per layer (None: its own ``k``). The one check of
        a ``k`` asked for anywhere (a search option, a DARTS config, an encoding)."""
        if k is None or k == self.k:
            return self
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.patterns):
            raise SpaceError(f"k must be in [1, {len(self.patterns)}] for space {self.name!r}, got {k}")
        return dataclasses.replace(self, k=k)

    def to_dict(self) -> dict:
        data = {"name": self.name, "candidates": list(self.candidates), "k": self.k}
        if self.description:
            data["description"] = self.description
        return data


def shipped_spaces() -> list[str]:
    """Names of the spaces that ship with scansearch, sorted."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def space_from_dict(data: object, where: str) -> SearchSpace:
    """Validate a parsed YAML document as a search space; ``where`` names it in errors."""
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: a search space must be a mapping with name, candidates and k")
    unknown = set(map(str, data)) - {"name", "candidates", "k", "description"}
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name, candidates, k = data.get("name"), data.get("candidates"), data.get("k")
    if not isinstance(name, str) or not name:
        raise SpaceError(f"{where}: 'name' must be a non-empty string")
    if not isinstance(candidates, list) or not candidates:
        raise SpaceError(f"{where}: 'candidates' must be a non-empty list of pattern names")
    for c in candidates:
        if c != NONE and not is_pattern_name(c):
            raise SpaceError(f"{where}: candidate {c!r} is not a scan pattern")
    duplicates = sorted({c for c in candidates if candidates.count(c) > 1})
    if duplicates:
        raise SpaceError(f"{where}: duplicate candidate(s) {', '.join(duplicates)}")
    n_patterns = sum(c != NONE for c in candidates)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_patterns:
        raise SpaceError(f"{where}: 'k' must be an integer from 1 to {n_patterns} "
                         f"(the number of pattern candidates), got {k!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpaceError(f"{where}: 'description' must be a string")
    return SearchSpace(name, tuple(candidates), k, description)


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (``local8``) or a user's YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or _looks_like_path(text) or path.is_file():
        if not path.is_file():
            raise SpaceError(f"{text}: search-space file not found")
    elif (SPACES_DIR / f"{text}.yaml").is_file():
        path = SPACES_DIR / f"{text}.yaml"
    else:
        raise SpaceError(f"unknown search space {text!r} (shipped: {', '.join(shipped_spaces())}; "
                         "or give the path of a YAML file)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise SpaceError(f"{text}:{line} YAML syntax error: {getattr(err, 'problem', None) or err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(f"{text}: cannot read: {err}") from None
    space = space_from_dict(data, text)
    return SearchSpace(space.name, space.candidates, space.k, space.description, str(path))
