"""The scan mixer: one Mamba mixer generalised to a layer's tuple of scan directions.

Shared across directions: ``in_proj``, ``out_proj`` and, VMamba style, the 3x3
depthwise convolution in image space. Per direction, stacked along a leading K
axis so that one batched einsum serves every direction (and a DARTS supernet can
hold all candidates of a space in one module): ``x_proj_weight (K, R+2N, Di)``,
``dt_proj_weight (K, Di, R)``, ``dt_proj_bias (K, Di)``, ``A_log (K, Di, N)``,
``D (K, Di)`` and, Vim style, the causal 1-D convolution ``conv1d_weight (K, Di, d_conv)``.

Two placements of the convolution:

* ``conv="sequence"`` (Vim): the causal conv1d runs per direction in scan order, so the
  inputs are gathered into each direction's order once and the scan takes them in
  scan order (``multi_scan(..., scan_order=True)``).
* ``conv="image"`` (VMamba's SS2D): the depthwise 2-D conv runs once in image order;
  projections are token-wise, so everything stays in image order and the scan reads
  its inputs through the order tables (no permuted copy).

Either way one ``multi_scan`` call scans all K directions and merges them in image
order, weighted by ``weights`` (ones for a derived model, ``softmax(alpha)`` for a
supernet). With SCAttn (LocalMamba) each direction's output is needed on its own
before the sum, because the attention normalises it per token: that path asks
``multi_scan(merge=False)`` for the per-direction outputs (one kernel call, a
(B, L, K, Di) buffer) and merges them itself; the arithmetic (and the counted FLOPs)
are the same.

A class token, when the sequence has one (``L == H*W + 1``), sits in the middle of
the sequence (index ``H*W // 2``, Vim's ``use_middle_cls_token``) and at the middle
step (``H*W // 2``) of every direction's scan.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scansearch import kernels, spaces
from scansearch.models.errors import ModelError, ShapeError

CONV_PLACEMENTS = ("sequence", "image")
MERGES = ("sum", "mean")
# Parameters with one slice per direction (leading K axis); select() slices these.
PER_DIRECTION = ("conv1d_weight", "conv1d_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D")


def multi_scan(*args, **kwargs):
    """``scansearch.kernels.multi_scan``, looked up at call time (the kernels package is optional
    at import time of the models)."""

    return kernels.multi_scan(*args, **kwargs)


def sequence_orders(directions: Sequence[str], H: int, W: int, n_tokens: int,
                    device: torch.device | str) -> torch.Tensor:
    """The (K, n_tokens) order table; with a middle class token, it is visited at step H*W // 2."""
    base = spaces.orders(directions, H, W, device)
    grid = H * W
    if n_tokens == grid:
        return base
    if n_tokens != grid + 1:
        raise ShapeError(f"a sequence of {n_tokens} tokens does not fit a {H}x{W} grid "
                         f"(expected {grid}, or {grid + 1} with a class token)")
    pos = grid // 2
    shifted = base + (base >= pos).long()  # grid token i sits at sequence index i, or i+1 after the class token
    cls = torch.full((base.shape[0], 1), pos, dtype=base.dtype, device=base.device)
    return torch.cat([shifted[:, :pos], cls, shifted[:, pos:]], dim=1)


class DirectionSubset(NamedTuple):
    """Scan only some of a mixer's directions: ``indices`` (long, into the mixer's directions)
    and their merge ``weights`` (same length). A supernet passes one in place of a (K,)
    weight vector to sample a path (Gumbel top-k): the other directions cost nothing."""

    indices: torch.Tensor
    weights: torch.Tensor


class SCAttn(nn.Module):
    """LocalMamba's attention on one direction's output (``BiAttn``): a channel gate from the
    token mean of the normalised output; optionally a per-token spatial gate.

    Works batched over directions: input (B, K, L, C), one gate per (batch, direction).
    """

    def __init__(self, channels: int, ratio: float = 0.125, spatial: bool = False):
        super().__init__()
        reduced = int(channels * ratio)
        self.norm = nn.LayerNorm(channels)
        self.global_reduce = nn.Linear(channels, reduced)
        self.channel_select = nn.Linear(reduced, channels)
        self.spatial = spatial
        if spatial:
            self.local_reduce = nn.Linear(channels, reduced)
            self.spatial_select = nn.Linear(2 * reduced, 1)

    def forward(self, ys: torch.Tensor) -> torch.Tensor:
        xn = self.norm(ys)
        pooled = F.gelu(self.global_reduce(xn.mean(dim=-2, keepdim=True)))  # (B, K, 1, r)
        attn = torch.sigmoid(self.channel_select(pooled))  # (B, K, 1, C)
        if self.spatial:
            local = F.gelu(self.local_reduce(xn))
            both = torch.cat([local, pooled.expand_as(local)], dim=-1)
            attn = attn * torch.sigmoid(self.spatial_select(both))  # (B, K, L, C)
        return ys * attn


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


class ScanMixer(nn.Module):
    """Mamba mixer over ``directions`` (pattern names); forward ``(x, hw, weights=None)`` with
    x channel-last (B, L, dim) in image order, returns (B, L, dim)."""

    def __init__(self, dim: int, directions: Sequence[str], *, d_state: int = 16, expand: float = 2.0,
                 dt_rank: int | str = "auto", conv: str = "sequence", d_conv: int = 4,
                 out_norm: bool = False, scattn: bool = False, scattn_spatial: bool = False,
                 merge: str = "sum", bias: bool = False, conv_bias: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0):
        super().__init__()
        directions = tuple(directions)
        if not directions:
            raise ModelError("a scan mixer needs at least one direction")
        for name in directions:
            if name == spaces.NONE or not spaces.is_pattern_name(name):
                raise ModelError(f"unknown scan direction {name!r}")
        if len(set(directions)) != len(directions):
            raise ModelError(f"duplicate scan direction in {list(directions)}")
        if conv not in CONV_PLACEMENTS:
            raise ModelError(f"conv must be one of {CONV_PLACEMENTS}, got {conv!r}")
        if merge not in MERGES:
            raise ModelError(f"merge must be one of {MERGES}, got {merge!r}")
        self.directions = directions
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.conv, self.merge = conv, merge
        self.dt_range = (dt_min, dt_max, dt_init_floor, dt_scale)
        self.backend: str | None = None  # scan backend for multi_scan; None = the dispatcher's choice
        K, Di, N, R = len(directions), self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(dim, 2 * Di, bias=bias)
        if conv == "sequence":
            self.conv1d_weight = nn.Parameter(torch.empty(K, Di, d_conv))
            self.conv1d_bias = nn.Parameter(torch.empty(K, Di)) if conv_bias else None
        else:
            self.conv2d = nn.Conv2d(Di, Di, d_conv, padding=(d_conv - 1) // 2, groups=Di, bias=conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, Di))
        self.dt_proj_weight = nn.Parameter(torch.empty(K, Di, R))
        self.dt_proj_bias = nn.Parameter(torch.empty(K, Di))
        self.A_log = nn.Parameter(torch.empty(K, Di, N))
        self.D = nn.Parameter(torch.empty(K, Di))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.out_norm = nn.LayerNorm(Di) if out_norm else None
        self.attn = SCAttn(Di, spatial=scattn_spatial) if scattn else None
        self.out_proj = nn.Linear(Di, dim, bias=bias)
        self._orders: dict[tuple, torch.Tensor] = {}
        # A search supernet normalises each direction's output (affine-free LayerNorm, after
        # SCAttn) before the weighted merge, as LocalMamba's MultiScan does; models do not.
        self.candidate_norm = False
        self.reset_ssm_parameters()

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def reset_ssm_parameters(self) -> None:
        """mamba's initialisation: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor, scale = self.dt_range
        K, Di, N, R = self.num_directions, self.d_inner, self.d_state, self.dt_rank
        self.dt_proj_bias._no_reinit = True  # model-level inits leave it alone (mamba's marker)
        if self.A_log.is_meta:
            return
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(K, Di, N))
            self.D.fill_(1.0)
            std = R ** -0.5 * scale  # preserves the variance of delta at initialisation
            self.dt_proj_weight.uniform_(-std, std)
            dt = torch.exp(torch.rand(K, Di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=floor)
            self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            bound = Di ** -0.5  # nn.Linear's default
            self.x_proj_weight.uniform_(-bound, bound)
            if self.conv == "sequence":
                bound = self.d_conv ** -0.5  # nn.Conv1d's default for a depthwise kernel
                self.conv1d_weight.uniform_(-bound, bound)
                if self.conv1d_bias is not None:
                    self.conv1d_bias.uniform_(-bound, bound)

    # -- orders ------------------------------------------------------------------------------
    def orders(self, H: int, W: int, n_tokens: int, device: torch.device,
               subset: torch.Tensor | None = None) -> torch.Tensor:
        """The (K, L) order table of these directions (or of the ``subset`` rows), cached: the
        kernels check a table once, so every forward must hand them the same tensor."""
        key = (H, W, n_tokens, str(device))
        table = self._orders.get(key)
        if table is None:
            table = sequence_orders(self.directions, H, W, n_tokens, device)
            self._orders[key] = table
        if subset is None:
            return table
        key = (*key, tuple(subset.tolist()))
        rows = self._orders.get(key)
        if rows is None:
            rows = self._orders[key] = table.index_select(0, subset.to(table.device))
        return rows

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                weights: torch.Tensor | DirectionSubset | None = None) -> torch.Tensor:
        """``weights``: None (sum, or mean under ``merge="mean"``), a (K,) vector, or a
        :class:`DirectionSubset` to scan only those directions."""
        batch, L, _ = x.shape
        H, W = hw
        subset = weights.indices if isinstance(weights, DirectionSubset) else None
        params = self._direction_params(subset)  # checks the subset's indices
        orders = self.orders(H, W, L, x.device, subset)
        if isinstance(weights, DirectionSubset):
            weights = weights.weights
        x_in, z = self.in_proj(x).chunk(2, dim=-1)
        scan_order = self.conv == "sequence"
        u = self._sequence_conv(x_in, orders, params) if scan_order else self._image_conv(x_in, hw)
        delta, B, C = self._project(u, params)
        fp = _at_least_fp32  # mamba keeps the SSM parameters in fp32; fp64 models stay fp64
        A = -torch.exp(fp(params["A_log"]))
        weights = self._merge_weights(weights, x, orders.shape[0])
        gate_in_scan = self.out_norm is None  # VMamba normalises the merged output before the gate
        scan_args = dict(delta_bias=fp(params["dt_proj_bias"]), delta_softplus=True, scan_order=scan_order,
                         backend=self.backend)
        gate = z if gate_in_scan else None
        D = fp(params["D"])
        if self.attn is None and not self.candidate_norm:
            y = multi_scan(u, delta, A, B, C, D, orders, weights=weights, z=gate, **scan_args)
        else:  # LocalVim gates each direction before its attention, LocalVMamba after the merge
            ys = self.scan_each(u, delta, A, B, C, D, orders, gate, scan_args)
            if self.attn is not None:
                ys = self.attn(ys)
            if self.candidate_norm:  # a search supernet: no candidate can rescale itself to absorb its weight
                ys = F.layer_norm(ys, ys.shape[-1:])
            y = ys.sum(1) if weights is None else torch.einsum("bkld,k->bld", ys, weights.to(ys.dtype))
        if self.out_norm is not None:
            y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)

    def _direction_params(self, indices: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
        """The per-direction parameters, all of them or the slices at ``indices``."""
        params = {name: getattr(self, name, None) for name in PER_DIRECTION}
        if indices is None:
            return params
        if indices.dim() != 1 or len(indices) == 0 or int(indices.min()) < 0 \
                or int(indices.max()) >= self.num_directions:
            raise ShapeError(f"a direction subset must index [0, {self.num_directions}), got {indices.tolist()}")
        return {name: None if p is None else p.index_select(0, indices) for name, p in params.items()}

    def scan_each(self, u, delta, A, B, C, D, orders, z, scan_args) -> torch.Tensor:
        """Each direction's output on its own, in image order, gated by ``silu(z)`` when z is
        given: (B, K, L, Di), from one ``multi_scan(merge=False)`` call."""
        ys = multi_scan(u, delta, A, B, C, D, orders, z=z, merge=False, **scan_args)  # (B, L, K, Di)
        return ys.transpose(1, 2)

    def _merge_weights(self, weights: torch.Tensor | None, x: torch.Tensor, K: int) -> torch.Tensor | None:
        if weights is not None and weights.shape != (K,):
            raise ShapeError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
        if self.merge == "mean":  # Vim's if_devide_out: the directions are averaged, not summed
            return (weights if weights is not None else x.new_ones(K)) / K
        return weights

    def _sequence_conv(self, x_in: torch.Tensor, orders: torch.Tensor, params: dict) -> torch.Tensor:
        """Gather into each direction's scan order, causal depthwise conv1d, SiLU: (B, L, K, Di)."""
        batch, L, Di = x_in.shape
        K = orders.shape[0]
        xs = torch.index_select(x_in, 1, orders.reshape(-1)).view(batch, K, L, Di)
        xs = xs.permute(0, 1, 3, 2).reshape(batch, K * Di, L)
        bias = None if params["conv1d_bias"] is None else params["conv1d_bias"].reshape(-1)
        xs = F.conv1d(xs, params["conv1d_weight"].reshape(K * Di, 1, self.d_conv), bias,
                      padding=self.d_conv - 1, groups=K * Di)[..., :L]
        # contiguous: the scan op's gradients come back contiguous, and compiled graphs check strides
        return F.silu(xs).view(batch, K, Di, L).permute(0, 3, 1, 2).contiguous()

    def _image_conv(self, x_in: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Depthwise 2-D conv over the token grid, SiLU: (B, L, Di) in image order."""
        batch, L, Di = x_in.shape
        H, W = hw
        if L != H * W:
            raise ShapeError(f"the image-space convolution needs {H}x{W}={H * W} tokens, got {L}")
        grid = x_in.transpose(1, 2).reshape(batch, Di, H, W)
        return F.silu(self.conv2d(grid)).flatten(2).transpose(1, 2)

    def _project(self, u: torch.Tensor, params: dict):
        """delta (B, L, K, Di), B and C (B, L, K, N) from the per-direction x_proj and dt_proj."""
        x_proj, dt_proj = params["x_proj_weight"], params["dt_proj_weight"]
        K, N, R = x_proj.shape[0], self.d_state, self.dt_rank
        if u.dim() == 4:  # scan order: each direction projects its own sequence
            x_dbl = torch.einsum("blkd,kcd->blkc", u, x_proj)
        else:  # image order: one matmul covers every direction
            x_dbl = F.linear(u, x_proj.reshape(K * (R + 2 * N), -1)).unflatten(-1, (K, R + 2 * N))
        dt, B, C = torch.split(x_dbl, [R, N, N], dim=-1)
        delta = torch.einsum("blkr,kdr->blkd", dt, dt_proj)
        return delta.contiguous(), B.contiguous(), C.contiguous()

    # -- derivation ----------------------------------------------------------------------------
    def select(self, indices: Sequence[int]) -> "ScanMixer":
        """A new mixer that keeps the chosen directions (their own parameters copied, shared ones too)."""
        indices = [int(i) for i in indices]
        if not indices or any(i < 0 or i >= self.num_directions for i in indices) or len(set(indices)) != len(indices):
            raise ShapeError(f"select: indices must be distinct and in [0, {self.num_directions}), got {indices}")
        child = copy.deepcopy(self)
        child.directions = tuple(self.directions[i] for i in indices)
        child._orders = {}
        child.candidate_norm = False  # the selected mixer is a model's, not a supernet's
        index = torch.tensor(indices, device=self.A_log.device)
        for name in PER_DIRECTION:
            param = getattr(self, name, None)
            if param is not None:
                setattr(child, name, nn.Parameter(param.detach().index_select(0, index).clone(),
                                                  requires_grad=param.requires_grad))
        child.A_log._no_weight_decay = True
        child.D._no_weight_decay = True
        return child

    def extra_repr(self) -> str:
        return (f"directions={list(self.directions)}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"dt_rank={self.dt_rank}, conv={self.conv}, merge={self.merge}")
