"""Model options as a user types them: ``--set FIELD=VALUE`` overrides and ``--img-size``,
checked against a model's config before anything is loaded or built."""
from __future__ import annotations

import sys

import yaml

from scansearch.errors import InputError
from scansearch.models.build import model_config, recorded_config, resolve_source
from scansearch.models.errors import ModelError


def parse_overrides(items) -> dict:
    """``["dim=16", "drop_path_rate=0.1"]`` -> ``{"dim": 16, "drop_path_rate": 0.1}`` (values read as YAML)."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"--set: expected FIELD=VALUE (e.g. dim=16), got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--set {key}: cannot read the value {value!r}") from None
    return out


def check_model_options(source, img_size, overrides: dict) -> None:
    """Check ``--set`` and ``--img-size`` against the model's config (types, ranges, widths)
    before anything is loaded or built, and say in one line (stderr) where they override
    what a genotype records about the model it was searched on."""
    try:
        _, genotype = resolve_source(source)
        model_config(source, img_size=img_size, **overrides)
    except ModelError as err:
        named = [k for k in overrides if f"'{k}'" in str(err) or f"{k} =" in str(err)]
        raise (InputError(f"--set {named[0]}={overrides[named[0]]}: {err}") if named else err) from None
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


__all__ = ["check_model_options", "parse_overrides"]
