"""The model table: every architecture is one row of data (``create_model`` builds them)."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .normalisation import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    Attributes:
        arch: keyword arguments for ``ResNet``.
        family: ``imagenet`` (224 px, torchvision-compatible names) or ``cifar`` (32 px).
        input_size: default (C, H, W) the model is designed for.
        paper: where it comes from.
    """

    arch: dict[str, Any]
    family: str
    paper: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    extra: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, ModelSpec] = {}

_HE2015 = "He et al. 2015, Deep Residual Learning for Image Recognition"
_HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks"
_XIE2017 = "Xie et al. 2017, Aggregated Residual Transformations (ResNeXt)"
_WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks"
_BOT = "He et al. 2019, Bag of Tricks for Image Classification (ResNet-D)"


def register(name: str, spec: ModelSpec) -> None:
    """Adds ``spec`` under ``name`` (scripts register extra architectures this way)."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = spec


def _imagenet(name, block, layers, paper=_HE2015, **arch):
    register(name, ModelSpec(dict(block=block, layers=layers, **arch), "imagenet", paper))


def _cifar(name, block, n, widths=(16, 32, 64), paper=_HE2015, **arch):
    arch = dict(block=block, layers=(n, n, n), widths=widths, stem="cifar", **arch)
    register(
        name,
        ModelSpec(arch, "cifar", paper, input_size=(3, 32, 32), num_classes=10, crop_pct=1.0),
    )


# ---- ImageNet family (torchvision parameter names) ------------------------------------
_imagenet("resnet18", "basic", (2, 2, 2, 2))
_imagenet("resnet34", "basic", (3, 4, 6, 3))
_imagenet("resnet50", "bottleneck", (3, 4, 6, 3))
_imagenet("resnet101", "bottleneck", (3, 4, 23, 3))
_imagenet("resnet152", "bottleneck", (3, 8, 36, 3))
_imagenet("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), _WRN, width_per_group=128)
_imagenet("wide_resnet101_2", "bottleneck", (3, 4, 23, 3), _WRN, width_per_group=128)
_imagenet("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), _XIE2017, groups=32, width_per_group=4)
_imagenet("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), _XIE2017, groups=32, width_per_group=8)
# ResNet-D: deep stem + average-pool shortcut (timm's layout).
_imagenet("resnet18d", "basic", (2, 2, 2, 2), _BOT, stem="deep", shortcut="D")
_imagenet("resnet34d", "basic", (3, 4, 6, 3), _BOT, stem="deep", shortcut="D")
_imagenet("resnet50d", "bottleneck", (3, 4, 6, 3), _BOT, stem="deep", shortcut="D")
_imagenet("resnet101d", "bottleneck", (3, 4, 23, 3), _BOT, stem="deep", shortcut="D")
_imagenet("preact_resnet18", "preact_basic", (2, 2, 2, 2), _HE2016)
_imagenet("preact_resnet50", "preact_bottleneck", (3, 4, 6, 3), _HE2016)

# ---- CIFAR family, He et al. 2015 section 4.2: 6n+2 layers, option A shortcuts ---------
for _n in (3, 5, 7, 9, 18, 200):
    _depth = 6 * _n + 2
    _cifar(f"resnet{_depth}", "basic", _n, shortcut="A")
    if _depth <= 110:
        _cifar(f"resnet{_depth}_b", "basic", _n, shortcut="B")
        _cifar(f"plain{_depth}", "basic", _n, residual=False)
_cifar("preact_resnet20", "preact_basic", 3, paper=_HE2016)
_cifar("preact_resnet56", "preact_basic", 9, paper=_HE2016)
_cifar("preact_resnet110", "preact_basic", 18, paper=_HE2016)
_cifar("preact_resnet164", "preact_bottleneck", 18, paper=_HE2016)

# ---- Wide ResNets WRN-d-k (pre-activation basic blocks, widths 16k/32k/64k) -------------
for _d, _k in ((16, 2), (16, 4), (16, 8), (28, 2), (28, 10), (40, 2), (40, 4)):
    _cifar(
        f"wrn{_d}_{_k}",
        "preact_basic",
        (_d - 4) // 6,
        widths=(16 * _k, 32 * _k, 64 * _k),
        paper=_WRN,
        stem_out=16,
    )


def model_names(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Names of registered architectures, optionally filtered by a glob and family."""
    names = [
        n
        for n, s in _MODELS.items()
        if (family is None or s.family == family)
        and (pattern is None or fnmatch.fnmatch(n, pattern))
    ]
    return names


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``; a clear error listing close names when unknown."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown model {name!r}.{hint} Run `reslab models` to see all {len(_MODELS)}."
        )
    return _MODELS[name]
