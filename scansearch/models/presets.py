"""Every preset, timm style: a small registered function per model with its config in plain
sight and its published figures beside it (the tests check them against
``tests/fixtures/anchors/published.yaml``).

``layers`` in a preset is one of: a tuple of directions used by every layer, a shipped
genotype's name (LocalMamba's searched directions), or ``"none"`` (every layer a gated CNN).
``flops_convention`` names the counter a published FLOP figure was taken with
(see :mod:`scansearch.flops`): LocalMamba's paper counted Vim-style models with its own
formula, VMamba and MambaOut with fvcore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from scansearch.models.errors import ModelError

LOCAL_BASELINE = ("h", "h_flip", "w2", "w2_flip")  # LocalMamba's un-searched local model
CROSS4 = ("h", "v", "h_flip", "v_flip")  # VMamba's cross-scan
BIDIR = ("h", "h_flip")  # Vim's bidirectional scan


@dataclass(frozen=True)
class Published:
    params: float  # millions
    flops: float  # G, one multiply-add = one FLOP
    top1: float | None = None
    flops_convention: str = "fvcore"
    source: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any]  # family config fields, plus ``family``
    layers: Any  # tuple of directions | shipped genotype name | "none"
    space: str | None = None  # the search space the layers come from (for the saved genotype)
    published: Published | None = None
    description: str = field(default="", compare=False)

    @property
    def family(self) -> str:
        return self.config["family"]


PRESETS: dict[str, Preset] = {}


def register(published: Published | None = None, space: str | None = None) -> Callable:
    def wrap(fn: Callable[[], dict]) -> Callable[[], dict]:
        config = dict(fn())
        layers = config.pop("layers")
        PRESETS[fn.__name__] = Preset(fn.__name__, config, layers, space, published, (fn.__doc__ or "").strip())
        return fn
    return wrap


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None


def list_presets(family: str | None = None) -> list[str]:
    return sorted(n for n, p in PRESETS.items() if family is None or p.family == family)


# -- Vim ---------------------------------------------------------------------------------------
@register(Published(7, 1.5, 76.1, "localmamba", "hustvl/Vim README; FLOPs per LocalMamba paper"), space="bidir2")
def vim_tiny():
    """Vim-Ti: 24 layers of (h, h_flip), middle class token, directions averaged."""
    return dict(family="vim", dim=192, depth=24, d_state=16, expand=2.0, d_conv=4, patch_size=16,
                cls_token=True, pool="cls", merge="mean", layers=BIDIR)


@register(Published(26, 5.3, 80.5, "localmamba",
                    "hustvl/Vim README; FLOPs by VMamba's counter (25.80M, 5.30G); LocalMamba's formula gives 5.1G"),
          space="bidir2")
def vim_small():
    """Vim-S: Vim-Ti at width 384."""
    return dict(family="vim", dim=384, depth=24, d_state=16, expand=2.0, d_conv=4, patch_size=16,
                cls_token=True, pool="cls", merge="mean", layers=BIDIR)


@register(space="bidir2")
def vim_micro():
    """CPU-sized Vim: 16x16 images, patch 2 (8x8 tokens), width 32, 4 layers."""
    return dict(family="vim", img_size=16, patch_size=2, dim=32, depth=4, d_state=8, expand=2.0, d_conv=4,
                cls_token=True, pool="cls", merge="mean", layers=BIDIR)


# -- LocalVim ----------------------------------------------------------------------------------
@register(Published(8, 1.5, 76.2, "localmamba", "LocalMamba paper table"), space="local8")
def local_vim_tiny():
    """LocalVim-T: 20 layers of LocalMamba's searched directions, SCAttn, RoPE, mean pooling."""
    return dict(family="local_vim", dim=192, depth=20, d_state=16, expand=2.0, d_conv=4, patch_size=16,
                layers="local_vim_tiny")


@register(Published(28, 4.8, 81.2, "localmamba", "LocalMamba paper table (its code reuses the tiny genotype)"),
          space="local8")
def local_vim_small():
    """LocalVim-S: LocalVim-T at width 384, same directions."""
    return dict(family="local_vim", dim=384, depth=20, d_state=16, expand=2.0, d_conv=4, patch_size=16,
                layers="local_vim_tiny")


@register(space="local8")
def local_vim_micro():
    """CPU-sized LocalVim for searches on the 8x8 digits: patch 1 (8x8 tokens), width 32, 4 layers."""
    return dict(family="local_vim", img_size=8, patch_size=1, dim=32, depth=4, d_state=8, expand=2.0, d_conv=4,
                layers=LOCAL_BASELINE)


@register(space="local8")
def local_vim_tiny_search():
    """LocalMamba's LocalVim search supernet size: width 128, 20 layers, patch 16 at 224 (14x14 tokens)."""
    return dict(family="local_vim", dim=128, depth=20, d_state=16, expand=2.0, d_conv=4, patch_size=16,
                layers=LOCAL_BASELINE)


# -- VMamba ------------------------------------------------------------------------------------
@register(Published(22.9, 5.6, 82.2, "fvcore", "VMamba v0 (paper table 22M; repo performance table 23M)"),
          space="cross4")
def vmamba_tiny():
    """VMamba-T v0: depths 2-2-9-2, cross-scan in every block, no MLP."""
    return dict(family="vmamba", depths=(2, 2, 9, 2), dims=(96, 192, 384, 768), d_state=16, ssm_ratio=2.0,
                layers=CROSS4)


@register(Published(44, 11.2, 83.5, "fvcore", "VMamba v0"), space="cross4")
def vmamba_small():
    """VMamba-S v0: depths 2-2-27-2."""
    return dict(family="vmamba", depths=(2, 2, 27, 2), dims=(96, 192, 384, 768), d_state=16, ssm_ratio=2.0,
                layers=CROSS4)


@register(space="cross4")
def vmamba_micro():
    """CPU-sized VMamba: 32x32 images, patch 4 (8x8 tokens), three stages."""
    return dict(family="vmamba", img_size=32, patch_size=4, depths=(1, 2, 1), dims=(24, 48, 96), d_state=8,
                ssm_ratio=2.0, layers=CROSS4)


# -- LocalVMamba -------------------------------------------------------------------------------
@register(Published(26, 5.7, 82.7, "fvcore", "LocalMamba paper table"), space="local8")
def local_vmamba_tiny():
    """LocalVMamba-T: VMamba-T with LocalMamba's searched directions and SCAttn."""
    return dict(family="local_vmamba", depths=(2, 2, 9, 2), dims=(96, 192, 384, 768), d_state=16, ssm_ratio=2.0,
                layers="local_vmamba_tiny")


@register(Published(50, 11.4, 83.7, "fvcore", "LocalMamba paper table"), space="local8")
def local_vmamba_small():
    """LocalVMamba-S: depths 2-2-27-2 with LocalMamba's searched directions and SCAttn."""
    return dict(family="local_vmamba", depths=(2, 2, 27, 2), dims=(96, 192, 384, 768), d_state=16, ssm_ratio=2.0,
                layers="local_vmamba_small")


@register(space="local8")
def local_vmamba_micro():
    """CPU-sized LocalVMamba: vmamba_micro with local directions and SCAttn."""
    return dict(family="local_vmamba", img_size=32, patch_size=4, depths=(1, 2, 1), dims=(24, 48, 96), d_state=8,
                ssm_ratio=2.0, layers=LOCAL_BASELINE)


# -- MambaOut ----------------------------------------------------------------------------------
@register(Published(7.3, 1.2, 78.9, "fvcore", "yuweihao/MambaOut README (MACs)"))
def mambaout_femto():
    return dict(family="mambaout", depths=(3, 3, 9, 3), dims=(48, 96, 192, 288), layers="none")


@register(Published(9.1, 1.5, 80.0, "fvcore", "yuweihao/MambaOut README (MACs)"))
def mambaout_kobe():
    """Kobe Memorial: 24 gated-CNN blocks."""
    return dict(family="mambaout", depths=(3, 3, 15, 3), dims=(48, 96, 192, 288), layers="none")


@register(Published(26.5, 4.5, 82.7, "fvcore", "yuweihao/MambaOut README (MACs)"))
def mambaout_tiny():
    return dict(family="mambaout", depths=(3, 3, 9, 3), dims=(96, 192, 384, 576), layers="none")


@register(Published(48.5, 9.0, 84.1, "fvcore", "yuweihao/MambaOut README (MACs)"))
def mambaout_small():
    return dict(family="mambaout", depths=(3, 4, 27, 3), dims=(96, 192, 384, 576), layers="none")


@register()
def mambaout_micro():
    """CPU-sized MambaOut: 32x32 images (8x8 tokens after the stem), four small stages."""
    return dict(family="mambaout", img_size=32, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), layers="none")


# -- RAUM-Net ----------------------------------------------------------------------------------
@register(space="cross4")
def raum_small():
    """RAUM-Net on VMamba-S (the paper's backbone): 4x4 regions of the 7x7 last map, MC dropout 0.2."""
    return dict(family="raum", depths=(2, 2, 27, 2), dims=(96, 192, 384, 768), d_state=16, ssm_ratio=2.0,
                regions=4, mc_dropout=0.2, layers=CROSS4)


@register(space="cross4")
def raum_micro():
    """CPU-sized RAUM-Net: vmamba_micro's backbone (8x8 tokens at 32x32), 2x2 regions of its 2x2 last map."""
    return dict(family="raum", img_size=32, patch_size=4, depths=(1, 2, 1), dims=(24, 48, 96), d_state=8,
                ssm_ratio=2.0, regions=2, mc_dropout=0.2, layers=CROSS4)
