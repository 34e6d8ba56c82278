"""Optimizers with parameter groups and the no-weight-decay split.

Weight decay on BatchNorm scales/shifts and on biases only fights the normalisation and
costs accuracy (Goyal et al. 2017 "no bias decay"; He et al. 2019 "Bag of Tricks"
section 3.1), so every group is split in two: tensors with ``ndim <= 1`` (norm weights,
biases) get ``weight_decay=0``. Groups carry an ``lr_scale`` the schedule multiplies the
scheduled rate by (layer-wise rates for fine-tuning) and a ``name`` for logs.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import ConfigError


def split_decay(
    groups: Sequence[dict[str, Any]], weight_decay: float, decay_norm_bias: bool = False
) -> list[dict[str, Any]]:
    """Splits each group into a decayed part and a no-decay part (norms and biases).

    Args:
        groups: dicts with ``params`` and optional ``lr_scale`` (default 1) and ``name``.
        weight_decay: decay of the decayed part.
        decay_norm_bias: keep everything decayed (no split).
    Returns:
        Optimizer groups with ``params``, ``weight_decay``, ``lr_scale`` and ``name``;
        empty parts are dropped.
    """
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, g in enumerate(groups):
        if "params" not in g:
            raise ConfigError(f"param_groups[{i}] has no 'params' key; each group is a dict "
                              "{'params': [...], 'lr_scale': 1.0, 'name': '...'}.")  # fmt: skip
        params = [p for p in g["params"]]
        dup = [p for p in params if id(p) in seen]
        if dup:
            raise ConfigError(
                f"param_groups[{i}] ({g.get('name', i)}) repeats {len(dup)} parameter(s) of an "
                "earlier group; each parameter may appear once."
            )
        seen.update(id(p) for p in params)
        own = ("params", "lr_scale", "name", "weight_decay")
        extra = {k: v for k, v in g.items() if k not in own}
        name = str(g.get("name", f"group{i}"))
        scale = float(g.get("lr_scale", 1.0))
        wd = float(g.get("weight_decay", weight_decay))
        decay = params if decay_norm_bias else [p for p in params if p.ndim > 1]
        no_decay = [] if decay_norm_bias else [p for p in params if p.ndim <= 1]
        if decay:
            out.append({"params": decay, "weight_decay": wd, "lr_scale": scale, "name": name,
                        **extra})  # fmt: skip
        if no_decay:
            out.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": scale,
                        "name": f"{name}/no_decay", **extra})  # fmt: skip
    return out


def default_groups(model: nn.Module) -> list[dict[str, Any]]:
    """One group holding every parameter of ``model`` (frozen ones get no gradient and so
    no update, and can be unfrozen later without rebuilding the optimizer)."""
    return [{"params": list(model.parameters()), "lr_scale": 1.0, "name": "all"}]


def _fast_kwargs(params: Iterable[torch.Tensor]) -> dict[str, Any]:
    # fused kernels update every tensor in one pass; on CPU the fused SGD/AdamW are
    # implemented since PyTorch 2.4 and beat the per-tensor loop for many small tensors.
    devices = {p.device.type for p in params}
    if devices <= {"cuda", "cpu"} and len(devices) == 1:
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, param_groups: Sequence[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """Builds the optimizer named in ``cfg`` over ``param_groups`` (default: every parameter).

    Args:
        cfg: the ``optim`` section (name, lr, momentum, nesterov, weight_decay, betas, eps).
        model: the model (used when ``param_groups`` is None).
        param_groups: ``[{"params": [...], "lr_scale": 0.1, "name": "layer1"}, ...]``.
    Returns:
        A ``torch.optim.SGD`` or ``torch.optim.AdamW``; each group's ``lr`` starts at
        ``cfg.lr * lr_scale`` and the schedule rescales it every step.
    """
    groups = param_groups or default_groups(model)
    groups = split_decay(groups, cfg.weight_decay, cfg.decay_norm_bias)
    if not groups:
        raise ConfigError("there are no parameters to optimise (param_groups is empty).")
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    fast = _fast_kwargs(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay, **fast,
        )  # fmt: skip
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, **fast)  # fmt: skip
