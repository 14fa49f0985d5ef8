"""LocalVMamba (LocalMamba, hunto/LocalMamba): VMamba with searched per-block directions
and SCAttn on each direction's output before the sum (shared by the directions of a block)."""
from __future__ import annotations

from dataclasses import dataclass

from scansearch.models.vmamba import VMamba, VMambaConfig


@dataclass(frozen=True)
class LocalVMambaConfig(VMambaConfig):
    family = "local_vmamba"
    scattn: bool = True


class LocalVMamba(VMamba):
    config_cls = LocalVMambaConfig
