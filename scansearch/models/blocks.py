"""Building blocks shared by the families: the gated-CNN mixer (a layer's ``none``
choice), the pre-norm residual block, stochastic depth."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch.models.mixer import ScanMixer


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GatedCNN(nn.Module):
    """MambaOut's gated CNN as a mixer: ``fc1`` expands to two hidden halves, the gate ``g``
    and the value ``[i, c]``; a depthwise ``kernel_size`` conv runs over the ``c`` channels
    on the token grid; ``fc2(gelu(g) * [i, conv(c)])``. Norm and residual live in the block.

    A class token (``L == H*W + 1``, in the middle) is a 1x1 image of its own: its ``c``
    channels see only the kernel's centre tap.
    """

    def __init__(self, dim: int, expansion: float = 8 / 3, kernel_size: int = 7, conv_ratio: float = 1.0):
        super().__init__()
        hidden = int(expansion * dim)
        conv_channels = int(conv_ratio * dim)
        self.split_sizes = (hidden, hidden - conv_channels, conv_channels)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size, padding=kernel_size // 2,
                              groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], weights: torch.Tensor | None = None) -> torch.Tensor:
        g, i, c = torch.split(self.fc1(x), self.split_sizes, dim=-1)
        c = self._conv_tokens(c, hw)
        return self.fc2(F.gelu(g) * torch.cat((i, c), dim=-1))

    def _conv_tokens(self, c: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        batch, L, channels = c.shape
        H, W = hw
        grid_tokens = H * W
        cls = None
        if L == grid_tokens + 1:
            pos = grid_tokens // 2
            cls = c[:, pos:pos + 1]
            c = torch.cat((c[:, :pos], c[:, pos + 1:]), dim=1)
        grid = c.transpose(1, 2).reshape(batch, channels, H, W)
        out = self.conv(grid).flatten(2).transpose(1, 2)
        if cls is not None:
            k = self.conv.kernel_size[0] // 2
            centre = self.conv.weight[:, 0, k, k]
            cls = cls * centre + (self.conv.bias if self.conv.bias is not None else 0)
            out = torch.cat((out[:, :pos], cls, out[:, pos:]), dim=1)
        return out


class Block(nn.Module):
    """Pre-norm residual block: ``x + drop_path(mixer(norm(x), hw, weights))``, channel-last (B, L, C)."""

    def __init__(self, norm: nn.Module, mixer: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.norm = norm
        self.mixer = mixer
        self.drop_path = DropPath(drop_path)

    @property
    def directions(self) -> tuple[str, ...]:
        """This layer's scan directions; () for a gated-CNN layer."""
        return self.mixer.directions if isinstance(self.mixer, ScanMixer) else ()

    def forward(self, x: torch.Tensor, hw: tuple[int, int], weights: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x), hw, weights))


def init_trunc_normal(model: nn.Module, types: tuple[type, ...] = (nn.Linear,), std: float = 0.02) -> None:
    """Truncated normal (``std``) weights and zero biases for every module of ``types``."""
    for module in model.modules():
        if isinstance(module, types):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic depth growing linearly from 0 to ``rate`` over ``n`` blocks."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
