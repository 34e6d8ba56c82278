"""``create_model`` and ``list_models``: the model table (``table.py``) turned into networks,
with their default weights (``catalog.py``) on request."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..errors import ConfigError
from .catalog import default_weights, parse_source
from .fetch import resolve_named
from .normalisation import stats_for_channels
from .pretrained import load_pretrained, weights_info
from .resnet import ResNet
from .table import ModelSpec, get_spec, model_names

__all__ = ["create_model", "get_spec", "list_models"]
logger = logging.getLogger("reslab.models")


def list_models(
    pattern: str | None = None, family: str | None = None, pretrained: bool = False
) -> list[str]:
    """Names of registered architectures.

    Args:
        pattern: a glob such as ``"resnet5*"``.
        family: ``imagenet`` or ``cifar``.
        pretrained: only names with default weights (what ``create_model(name,
            pretrained=True)`` loads), as ``timm.list_models(pretrained=True)``.
    Returns:
        The names in table order.
    """
    names = model_names(pattern, family)
    return [n for n in names if default_weights(n)] if pretrained else names


def _default_cfg(name: str, spec: ModelSpec, in_chans: int) -> dict[str, Any]:
    """The model's input and normalisation, with one mean/std value per input channel."""
    mean, std = stats_for_channels(spec.mean, spec.std, in_chans)
    return {
        "architecture": name,
        "family": spec.family,
        "input_size": (in_chans,) + spec.input_size[1:],
        "mean": mean,
        "std": std,
        "crop_pct": spec.crop_pct,
        "paper": spec.paper,
    }


def _resolve_pretrained(name: str, pretrained: str | bool | None) -> str | None:
    """``True`` -> the name's default weights; a source passes through; falsy -> ``None``."""
    if pretrained is True:
        source = default_weights(name)
        if source is None:
            raise ConfigError(
                f"create_model({name!r}, pretrained=True): {name!r} has no default weights. "
                f"Names with default weights: {', '.join(list_models(pretrained=True))}. "
                "Or pass a source: pretrained='path/to/weights.safetensors' or a run folder."
            )
        return source
    return pretrained or None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: str | bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a registered ResNet.

    Args:
        name: a name from ``list_models()``, e.g. ``"resnet50"`` or ``"resnet20"``.
        num_classes: classifier size (default: the weights' when ``pretrained``, else the
            spec's, 1000 or 10).
        in_chans: input channels; 1 for grayscale (default: the weights' when ``pretrained``,
            else 3).
        pretrained: ``True`` loads the name's default weights (``list_models(pretrained=True)``);
            or a weights source for ``load_pretrained`` (a file, a run folder,
            ``torchvision:resnet50.IMAGENET1K_V2``, ``timm:...``, ``hf:...``, ``reslab:...``).
        **kwargs: any other ``ResNet`` argument (``zero_init_residual``, ``drop_path_rate``,
            ``norm_layer``, ``grad_checkpointing``...).
    Returns:
        The model, with ``model.default_cfg`` describing its input and normalisation (the
        loaded weights' mean and std, when they record them).
    """
    spec = get_spec(name)
    source = _resolve_pretrained(name, pretrained)
    if source is not None and parse_source(source) is not None:
        # Find (or download) named weights before building: an offline error comes at once.
        resolve_named(source, log=logger.info)
    if source is not None and pretrained is True and (num_classes is None or in_chans is None):
        # The default weights decide the shape a user did not ask for (timm does the same).
        args = (weights_info(source) or {}).get("model_args") or {}
        num_classes = args.get("num_classes", num_classes) if num_classes is None else num_classes
        in_chans = args.get("in_chans", in_chans) if in_chans is None else in_chans
    in_chans = 3 if in_chans is None else in_chans
    arch = {**spec.arch, **kwargs}
    n = spec.num_classes if num_classes is None else num_classes
    model = ResNet(num_classes=n, in_chans=in_chans, **arch)
    model.default_cfg = _default_cfg(name, spec, in_chans)
    model.model_args = {"name": name, "num_classes": n, "in_chans": in_chans, **kwargs}
    if source is not None:
        load_pretrained(model, source, log=logger.info)
    return model
