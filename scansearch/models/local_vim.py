"""LocalVim (LocalMamba, hunto/LocalMamba): Vim with searched per-layer directions.

The same model as :mod:`.vim` with LocalMamba's choices: no class token, mean pooling,
SCAttn on each direction's output before the sum, rotary position embedding on the
residual stream besides the absolute one, directions summed (not averaged), 20 layers.
"""
from __future__ import annotations

from dataclasses import dataclass

from scansearch.models.vim import VimConfig, VisionMamba


@dataclass(frozen=True)
class LocalVimConfig(VimConfig):
    family = "local_vim"
    depth: int = 20
    cls_token: bool = False
    pool: str = "mean"
    rope: bool = True
    merge: str = "sum"
    scattn: bool = True


class LocalVisionMamba(VisionMamba):
    config_cls = LocalVimConfig
