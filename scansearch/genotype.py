"""Genotypes: the per-layer scan directions a search found, as human-readable YAML.

```yaml
scansearch_genotype: 1
model: local_vim_tiny
space: local8                 # a shipped space by name; any other inline:
                              #   space: {name: mine, candidates: [h, v, w3], k: 2}
grid: [14, 14]
layers:
  - [h, v_flip, w7, w7_flip]
  - none
provenance: {searcher: darts, seed: 0}
alphas: [[0.1, ...], ...]     # optional: final architecture weights per layer
```

Loading validates everything and raises ``GenotypeError`` with one line naming the
file, the layer and the reason. YAML is read with ``safe_load`` only.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from scansearch.errors import InputError
from scansearch.fileio import atomic_write_text
from scansearch.spaces import (NONE, SearchSpace, SpaceError, is_pattern_name, load_space, shipped_spaces,
                               space_from_dict)

VERSION = 1
PRESETS_DIR = Path(__file__).resolve().parent / "assets" / "genotypes"
_KEYS = ("scansearch_genotype", "model", "space", "grid", "layers", "provenance", "alphas")

Layer = Union[tuple[str, ...], str]  # a tuple of pattern names, or the string "none"


class GenotypeError(InputError):
    """A genotype that cannot be used; the message names the file, the layer and the reason."""


def _fail(where: str, message: str) -> GenotypeError:
    return GenotypeError(f"{where}: {message}")


def _check_layer(raw: object, index: int, space: SearchSpace | None, where: str) -> Layer:
    at = f"layer {index}"
    if raw == NONE:
        if space is not None and not space.allows_none:
            raise _fail(where, f"{at}: 'none' is not allowed by space {space.name!r}")
        return NONE
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise _fail(where, f"{at}: expected a list of pattern names or 'none', got {raw!r}")
    for name in raw:
        if name == NONE:
            raise _fail(where, f"{at}: 'none' stands alone, it cannot be mixed with directions")
        if not is_pattern_name(name):
            raise _fail(where, f"{at}: unknown pattern {name!r}")
        if space is not None and name not in space.candidates:
            raise _fail(where, f"{at}: pattern {name!r} is not a candidate of space {space.name!r}")
    duplicates = sorted({n for n in raw if raw.count(n) > 1})
    if duplicates:
        raise _fail(where, f"{at}: duplicate direction {', '.join(duplicates)}")
    if space is not None and len(raw) != space.k:
        raise _fail(where, f"{at}: {len(raw)} directions, space {space.name!r} keeps k={space.k}")
    return tuple(raw)


def _check_space(raw: object, where: str) -> tuple[str | SearchSpace | None, SearchSpace | None]:
    """(what the genotype records, the space to check its layers against).

    A shipped space stays a name. A mapping is a space carried inline. A path (how older
    genotypes named a user's space) is read where it exists and carried inline from then on.
    """
    if raw is None:
        return None, None
    if isinstance(raw, dict):
        try:
            space = space_from_dict(raw, f"{where}: space")
        except SpaceError as err:
            raise GenotypeError(str(err)) from None
        return space, space
    if not isinstance(raw, str):
        raise _fail(where, f"'space' must be a shipped space's name or a mapping (name, candidates, k), got {raw!r}")
    try:
        space = load_space(raw)
    except SpaceError as err:
        raise _fail(where, f"space: {err}") from None
    if raw in shipped_spaces():
        return raw, space
    return dataclasses.replace(space, path=None), space


def _check_grid(raw: object, where: str) -> tuple[int, int] | None:
    if raw is None:
        return None
    if (not isinstance(raw, (list, tuple)) or len(raw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in raw)):
        raise _fail(where, f"'grid' must be [H, W] with positive integers, got {raw!r}")
    return int(raw[0]), int(raw[1])


def _check_alphas(raw: object, n_layers: int, space: SearchSpace | None, where: str):
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != n_layers:
        raise _fail(where, f"'alphas' must be a list with one row per layer ({n_layers})")
    rows = []
    for i, row in enumerate(raw):
        if (not isinstance(row, list) or not row or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)):
            raise _fail(where, f"layer {i}: alphas must be a non-empty list of finite numbers")
        if space is not None and len(row) != len(space.candidates):
            raise _fail(where, f"layer {i}: {len(row)} alphas, space {space.name!r} has "
                               f"{len(space.candidates)} candidates")
        rows.append(tuple(float(v) for v in row))
    return tuple(rows)


@dataclass(frozen=True)
class Genotype:
    """Per-layer scan directions for one model, with where they came from."""

    layers: tuple[Layer, ...]
    model: str | None = None
    space: str | SearchSpace | None = None  # a shipped space's name, or a space carried whole
    grid: tuple[int, int] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    alphas: tuple[tuple[float, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.layers)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object, where: str = "<genotype>") -> "Genotype":
        """Validate a parsed document; ``where`` (usually the file) prefixes every error."""
        if not isinstance(data, dict):
            raise _fail(where, f"a genotype must be a mapping, got {type(data).__name__}")
        unknown = [str(k) for k in data if k not in _KEYS]
        if unknown:
            raise _fail(where, f"unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(_KEYS)})")
        version = data.get("scansearch_genotype")
        if version is None:
            raise _fail(where, "missing 'scansearch_genotype: 1' (the format version)")
        if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
            raise _fail(where, f"unsupported genotype version {version!r} (this scansearch reads {VERSION})")
        if data.get("model") is not None and not isinstance(data["model"], str):
            raise _fail(where, f"'model' must be a string, got {data['model']!r}")
        space_ref, space = _check_space(data.get("space"), where)
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise _fail(where, "'layers' must be a non-empty list (one entry per mixer layer)")
        checked = tuple(_check_layer(raw, i, space, where) for i, raw in enumerate(layers))
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, dict) or not all(isinstance(k, str) for k in provenance):
            raise _fail(where, "'provenance' must be a mapping with string keys")
        return cls(
            layers=checked,
            model=data.get("model"),
            space=space_ref,
            grid=_check_grid(data.get("grid"), where),
            provenance=dict(provenance),
            alphas=_check_alphas(data.get("alphas"), len(checked), space, where),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Genotype":
        """Read and validate a genotype YAML file."""
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _fail(where, "file not found") from None
        except IsADirectoryError:
            raise _fail(where, "is a directory, not a genotype file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise _fail(where, f"cannot read: {err}") from None
        return cls.from_yaml(text, where)

    @classmethod
    def from_yaml(cls, text: str, where: str = "<genotype>") -> "Genotype":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise _fail(where, f"{line}YAML syntax error: {problem}") from None
        except RecursionError:
            raise _fail(where, "YAML nesting too deep") from None
        return cls.from_dict(data, where)

    @classmethod
    def preset(cls, name: str) -> "Genotype":
        """A shipped genotype: LocalMamba's searched directions (``local_vim_tiny``, ...)."""
        path = PRESETS_DIR / f"{name}.yaml"
        if not path.is_file():
            raise GenotypeError(f"unknown genotype preset {name!r} (shipped: {', '.join(cls.presets())})")
        return cls.load(path)

    @staticmethod
    def presets() -> list[str]:
        return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"scansearch_genotype": VERSION}
        if self.model is not None:
            data["model"] = self.model
        if self.space is not None:
            data["space"] = self.space if isinstance(self.space, str) else self.space.to_dict()
        if self.grid is not None:
            data["grid"] = list(self.grid)
        data["layers"] = [NONE if layer == NONE else list(layer) for layer in self.layers]
        if self.provenance:
            data["provenance"] = dict(self.provenance)
        if self.alphas is not None:
            data["alphas"] = [list(row) for row in self.alphas]
        return data

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, width=100)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file beside the target, then a rename."""
        return atomic_write_text(path, self.to_yaml())

    # -- views --------------------------------------------------------------------------------
    def load_space(self) -> SearchSpace | None:
        if self.space is None or isinstance(self.space, SearchSpace):
            return self.space
        return load_space(self.space)

    @property
    def space_name(self) -> str | None:
        """The space's name, shipped or carried inline."""
        return self.space if isinstance(self.space, str) or self.space is None else self.space.name

    @property
    def directions(self) -> tuple[tuple[str, ...], ...]:
        """Each layer's directions; a ``none`` layer has none: ``()``."""
        return tuple(() if layer == NONE else layer for layer in self.layers)


class _Dumper(yaml.SafeDumper):
    """Block style for the document, flow style for the short lists (a layer, a grid)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
