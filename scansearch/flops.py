"""Parameters and FLOPs in the published convention: one multiply-add is one FLOP.

``count_flops(model, img_size)`` runs one forward pass (batch 1) under
``torch.utils.flop_counter.FlopCounterMode`` and reads it the way fvcore-based
counters (VMamba's, MambaOut's, LocalVMamba's) do:

* matmuls and convolutions: FlopCounterMode counts 2 per multiply-add; halved here;
* the ``scansearch::multi_scan`` op: taken as registered, ``K * (9*B*L*D*N + B*L*D)``
  (mamba's selective-scan count that VMamba's tables use), already one per multiply-add;
* layer norms: fvcore counts 5 per element (4 without an affine transform); added here
  because FlopCounterMode ignores them. Everything else fvcore ignores (activations,
  elementwise products, means, RMSNorm's elementwise ops) is ignored here too.

This is the default ``convention="fvcore"``: every model, every family, one rule.

LocalMamba's paper counted Vim-style models with its own formula instead
(``VisionMamba.flops`` in hunto/LocalMamba ``local_vim.py``), and its Vim-Ti, LocalVim-T
and LocalVim-S figures (1.5G, 1.5G, 4.8G) follow from it only: per layer the in/out
projections, the causal conv1d, x_proj and dt_proj of *one* direction, and per
direction ``5*L*D*N + 2*L*D`` for the scan; patch embedding and head once; ``L`` the
patch count (no class token). ``convention="localmamba"`` reproduces that formula for
``vim``/``local_vim`` models, so that the presets can be checked against the published
table; ``fvcore`` counts the same models 15-40% higher, because it counts every
direction's projections and the scan at ``9*L*D*N``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scansearch import kernels  # noqa: F401 registers the scan op's FLOP formula before the counter copies the table
from scansearch.models import ScanModel
from scansearch.models.blocks import GatedCNN
from scansearch.models.mixer import ScanMixer
from scansearch.models.vim import VimConfig

CONVENTIONS = ("fvcore", "localmamba")
_aten = torch.ops.aten


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _layer_norm_flops(input_shape, normalized_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    return math.prod(input_shape) * (5 if weight_shape is not None else 4)


def _hw(img_size) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    return int(img_size[0]), int(img_size[1])


def _meta_copy(model: nn.Module) -> nn.Module | None:
    """The same architecture on the meta device (no memory, no arithmetic), or None for a
    module that is not a built scansearch model."""

    if not isinstance(model, ScanModel):
        return None
    with torch.device("meta"):
        meta = type(model)(model.cfg, model.layer_choices)
    return meta.set_backend(None)  # on meta tensors the dispatcher runs the op's shape function


def count_flops(model: nn.Module, img_size, in_chans: int = 3, *, convention: str = "fvcore") -> int:
    """Forward FLOPs for one ``in_chans x img_size`` image, one multiply-add = one FLOP.

    A scansearch model is counted on a meta-device copy (instant, no memory). Any other
    module runs one real forward pass; scans it runs on the ``reference`` backend (Python
    loops, not the custom op) are then not counted.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r} (known: {', '.join(CONVENTIONS)})")
    H, W = _hw(img_size)
    if convention == "localmamba":
        return localmamba_flops(model, (H, W), in_chans)
    subject = _meta_copy(model)
    device = "meta"
    if subject is None:  # a foreign module: run it for real on its own device
        subject = model
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    images = torch.zeros(1, in_chans, H, W, device=device)

    counter = FlopCounterMode(display=False, custom_mapping={_aten.native_layer_norm: _layer_norm_flops})
    was_training = subject.training
    subject.eval()
    try:
        with torch.no_grad(), counter:
            subject(images)
    finally:
        subject.train(was_training)
    total = 0
    for op, n in counter.get_flop_counts()["Global"].items():
        name = str(op)
        if name.startswith("scansearch.") or "layer_norm" in name:
            total += n
        else:  # aten matmul/conv formulas count a multiply-add as 2
            total += n // 2
    return int(total)


def localmamba_flops(model: nn.Module, hw: tuple[int, int], in_chans: int = 3) -> int:
    """LocalMamba's analytic count for Vim-style models (see the module docstring).

    Gated-CNN layers (the ``none`` choice), which LocalMamba's formula does not know, are
    counted fvcore style: fc1, the depthwise conv, fc2.
    """

    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, VimConfig):
        raise ValueError("the 'localmamba' FLOP convention is defined for vim/local_vim models only")
    p, dim = cfg.patch_size, cfg.dim
    h, w = cfg.grid_at(hw)
    L = h * w
    flops = in_chans * p * p * dim * L  # patch embedding
    for block in model.layers:
        mixer = block.mixer
        if isinstance(mixer, ScanMixer):
            Di, N, R, K = mixer.d_inner, mixer.d_state, mixer.dt_rank, mixer.num_directions
            flops += L * dim * 2 * Di  # in_proj
            flops += (L + mixer.d_conv - 1) * Di * mixer.d_conv  # one direction's causal conv1d
            flops += L * Di * (R + 2 * N) + L * R * Di  # one direction's x_proj and dt_proj
            flops += K * (5 * L * Di * N + 2 * Di * L)  # the scans
            if mixer.attn is not None:
                attn = mixer.attn
                flops += 2 * attn.global_reduce.in_features * attn.global_reduce.out_features
            flops += L * Di * dim + L * dim  # out_proj, norm
        elif isinstance(mixer, GatedCNN):
            hidden, _, conv_channels = mixer.split_sizes
            k = mixer.conv.kernel_size[0]
            flops += L * dim * 2 * hidden + L * conv_channels * k * k + L * hidden * dim + L * dim
    if cfg.num_classes > 0:
        flops += dim * cfg.num_classes
    return int(flops)


__all__ = ["CONVENTIONS", "count_flops", "count_params", "localmamba_flops"]
