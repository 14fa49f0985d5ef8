"""Model configurations: one dataclass per family, stored as a plain dict beside the weights.

Every field has a default; ``from_dict`` rejects unknown keys and wrong types with a
:class:`ModelError` that names the field, so a hand-edited ``config.yaml`` fails early.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from scansearch.models.errors import ModelError

# Fields whose value must be one of a few words.
CHOICES = {
    "pool": ("cls", "mean"),
    "merge": ("sum", "mean"),
    "norm": ("rms", "layer"),
}
# Float fields that scale a width or divide: strictly positive.
POSITIVE = ("expand", "ssm_ratio", "cnn_expansion", "head_mlp_ratio", "conv_ratio", "norm_eps")
# Probabilities of dropping: in [0, 1).
RATES = ("drop_rate", "drop_path_rate", "head_dropout", "mc_dropout")
# Beyond any real model: a config (a file anyone may edit) must not make the builder loop or
# allocate without end before the weights are even read.
MAX_IMG_SIZE, MAX_LAYERS = 16384, 4096


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(name: str, value: Any, default: Any, where: str) -> Any:
    """Coerce ``value`` to the kind of ``default`` (lists become tuples) or fail on ``name``."""
    bad = ModelError(f"{where}: field {name!r} has a bad value {value!r}")
    if name == "preset":
        if value is not None and not isinstance(value, str):
            raise bad
        return value
    if name == "dt_rank":
        if value == "auto" or (_is_int(value) and value >= 1):
            return value
        raise bad
    if name == "img_size":
        if _is_int(value) and 1 <= value <= MAX_IMG_SIZE:
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and 1 <= v <= MAX_IMG_SIZE
                                                                        for v in value):
            return tuple(value)
        raise bad
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ModelError(f"{where}: field {name!r} must be one of {', '.join(CHOICES[name])}, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if _is_int(default):
        if not _is_int(value) or value < 0:
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad
        if name in POSITIVE and value <= 0:
            raise ModelError(f"{where}: field {name!r} must be positive, got {value!r}")
        if name in RATES and value >= 1:
            raise ModelError(f"{where}: field {name!r} is a rate in [0, 1), got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v >= 1 for v in value):
            raise bad
        return tuple(value)
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Fields every family has. Subclasses add theirs and set ``family``."""

    family: ClassVar[str] = ""
    preset: str | None = None
    img_size: Any = 224  # an int (square) or (H, W)
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    cnn_expansion: float = 8 / 3  # gated-CNN layers (the ``none`` choice): hidden = expansion * dim
    cnn_kernel: int = 7

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "ModelConfig":
        if not isinstance(data, dict):
            raise ModelError(f"{where}: a model config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        family = data.pop("family", cls.family)
        if family != cls.family:
            raise ModelError(f"{where}: family {family!r} given to a {cls.family!r} config")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ModelError(f"{where}: unknown field(s) {', '.join(unknown)} for family {cls.family!r} "
                             f"(known: {', '.join(sorted(fields))})")
        values = {}
        for name, value in data.items():
            f = fields[name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            values[name] = _check_value(name, value, default, where)
        config = cls(**values)
        config.check(where)
        if config.num_layers > MAX_LAYERS:
            raise ModelError(f"{where}: {config.num_layers} layers; at most {MAX_LAYERS} are supported")
        return config

    def check(self, where: str) -> None:
        """Cross-field checks; subclasses extend."""
        if self.in_chans < 1:
            raise ModelError(f"{where}: in_chans must be >= 1")
        if self.cnn_kernel % 2 == 0:
            raise ModelError(f"{where}: cnn_kernel must be odd, got {self.cnn_kernel}")

    def check_width(self, where: str, name: str, ratio: float, dim: int) -> None:
        """A layer ``ratio * dim`` wide must have at least one channel."""
        if int(ratio * dim) < 1:
            raise ModelError(f"{where}: {name} = {ratio:g} gives int({ratio:g} * {dim}) = 0 channels; "
                             f"raise {name} or the width")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes) -> "ModelConfig":
        return type(self).from_dict({**self.to_dict(), **changes})

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.img_size
        return (size, size) if _is_int(size) else (int(size[0]), int(size[1]))

    @property
    def num_layers(self) -> int:
        raise NotImplementedError

    @property
    def token_stride(self) -> int:
        """Pixels per token side at the first mixer layer: the patch size (MambaOut: its stem's 4)."""
        return self.patch_size

    def grid_at(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The first mixer layer's token grid for ``hw`` images (a partial patch is a token)."""
        s = self.token_stride
        return -(-hw[0] // s), -(-hw[1] // s)

    @property
    def token_grid(self) -> tuple[int, int]:
        """The first mixer layer's token grid at the configured image size: the grid a genotype records."""
        return self.grid_at(self.image_hw)


class Staged:
    """For configs of hierarchical families (``depths`` and ``dims`` per stage: VMamba, MambaOut)."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]

    @property
    def num_layers(self) -> int:
        return sum(self.depths)

    def check(self, where: str) -> None:
        super().check(where)
        if len(self.depths) != len(self.dims):
            raise ModelError(f"{where}: depths {list(self.depths)} and dims {list(self.dims)} differ in length")
        if min(self.dims) >= 1:
            self.check_width(where, "cnn_expansion", self.cnn_expansion, min(self.dims))
            self.check_width(where, "ssm_ratio", self.ssm_ratio, min(self.dims))
