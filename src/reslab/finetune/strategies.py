"""Which parameters train, and at which learning rate, for each fine-tuning strategy.

Everything here goes through the model interface: ``model.module_groups()`` lists the
groups from input to output (``stem``, ``layer1``.., ``head``), so no strategy ever looks
at parameter names.

- ``linear``: only the new head trains; the pretrained backbone is a fixed feature
  extractor (the "linear probe" of Kornblith et al. 2019, "Do Better ImageNet Models
  Transfer Better?").
- ``full``: every group trains at the same learning rate.
- ``gradual``: the head trains alone first, then one group is unfrozen from the top every
  ``unfreeze_every`` epochs (Howard & Ruder 2018, ULMFiT, "gradual unfreezing"): the new,
  random head cannot push large, noisy gradients into the pretrained stages. With frozen
  BatchNorm its SGD steps are also bounded per filter (``step_clip.py``).
- ``discriminative``: everything trains, the learning rate shrinks by ``lr_decay`` per
  group from head to stem (ULMFiT's "discriminative fine-tuning"; timm's layer-wise decay):
  early layers hold generic features (Yosinski et al. 2014) and should move least.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError

STRATEGIES = ("linear", "full", "gradual", "discriminative")
DEFAULT_LR_DECAY = 0.5  # per group, head -> stem; resnet20: stem trains at 0.5**4 = 1/16 of lr


def group_names(model: nn.Module) -> list[str]:
    """Group names from input to output, e.g. ``['stem', 'layer1', 'layer2', 'layer3', 'head']``."""
    return list(model.module_groups())


def check_strategy(strategy: str) -> None:
    """Raises ``ConfigError`` unless ``strategy`` is one of ``STRATEGIES``."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"finetune strategy={strategy!r} is not known; expected one of {', '.join(STRATEGIES)} "
            "(or auto to choose from the data)."
        )


def resolve_lr_decay(strategy: str, lr_decay: float | None) -> float:
    """The per-group learning-rate decay a strategy uses.

    Args:
        strategy: one of ``STRATEGIES``.
        lr_decay: the user's value, or None for the strategy's default (``DEFAULT_LR_DECAY``
            for ``discriminative``, 1.0 = no decay otherwise).
    Returns:
        A factor in (0, 1].
    """
    check_strategy(strategy)
    if lr_decay is None:
        return DEFAULT_LR_DECAY if strategy == "discriminative" else 1.0
    if not 0.0 < lr_decay <= 1.0:
        raise ConfigError(f"finetune lr_decay={lr_decay} must be in (0, 1]; 0.5 halves the lr per group.")
    if lr_decay < 1.0 and strategy in ("linear", "full"):
        raise ConfigError(
            f"finetune lr_decay={lr_decay} has no effect with strategy={strategy!r}: "
            "use strategy=discriminative (or gradual) for layer-wise learning rates, or drop lr_decay."
        )
    return float(lr_decay)


def trainable_groups(
    model: nn.Module, strategy: str, epoch: int = 0, unfreeze_every: int = 1
) -> list[str]:
    """Names of the groups that train at ``epoch`` (0-based) under ``strategy``.

    ``gradual``: epochs ``[0, unfreeze_every)`` train the head alone; every further
    ``unfreeze_every`` epochs add the next group from the top (last stage first, stem last).
    """
    check_strategy(strategy)
    names = group_names(model)
    if strategy == "linear":
        return ["head"]
    if strategy in ("full", "discriminative"):
        return names
    if unfreeze_every < 1:
        raise ConfigError(f"finetune unfreeze_every={unfreeze_every} must be >= 1 (epochs per group).")
    body = names[:-1]  # every group but the head, input to output
    n_open = min(epoch // unfreeze_every, len(body))
    return body[len(body) - n_open :] + ["head"]


def lr_scales(model: nn.Module, lr_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per group: ``lr_decay ** d``, d = distance from the head.

    For resnet20 and decay 0.5: head 1, layer3 0.5, layer2 0.25, layer1 0.125, stem 0.0625.
    """
    names = group_names(model)
    depth = len(names) - 1
    return {name: float(lr_decay ** (depth - i)) for i, name in enumerate(names)}


def set_trainable(model: nn.Module, groups: list[str] | set[str]) -> int:
    """Sets ``requires_grad`` so that exactly the parameters of ``groups`` train.

    Parameters of modules marked ``freeze_affine`` (BatchNorm under the ``frozen`` policy,
    see ``bn.py``) stay frozen whatever their group, so unfreezing never undoes the policy.

    Returns:
        The number of trainable parameter elements.
    """
    wanted = set(groups)
    unknown = wanted - set(group_names(model))
    if unknown:
        raise ConfigError(f"unknown parameter groups {sorted(unknown)}; the model has {group_names(model)}.")
    count = 0
    for name, mods in model.module_groups().items():
        for mod in mods:
            for sub in mod.modules():
                keep_frozen = getattr(sub, "freeze_affine", False)
                for p in sub.parameters(recurse=False):
                    p.requires_grad_(name in wanted and not keep_frozen)
                    count += p.numel() if p.requires_grad else 0
    return count


def build_param_groups(model: nn.Module, strategy: str, lr_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimizer groups for ``fit``: one per model group, with its ``lr_scale``.

    Every parameter is listed, frozen ones too: ``gradual`` flips ``requires_grad`` later
    and the optimizer must already hold those parameters (optimizers skip parameters
    whose ``.grad`` is None, so frozen ones are neither stepped nor decayed).

    Args:
        model: a reslab ``ResNet`` (anything with ``module_groups()``).
        strategy: one of ``STRATEGIES``.
        lr_decay: per-group decay; None for the strategy's default.
    Returns:
        ``[{"name": "stem", "params": [...], "lr_scale": 0.0625}, ..., {"name": "head", ...}]``
    """
    decay = resolve_lr_decay(strategy, lr_decay)
    scales = lr_scales(model, decay)
    groups = []
    for name, mods in model.module_groups().items():
        params = [p for m in mods for p in m.parameters()]
        if params:
            groups.append({"name": name, "params": params, "lr_scale": scales[name]})
    return groups


def describe(model: nn.Module, strategy: str, lr_decay: float, unfreeze_every: int) -> str:
    """One line saying what trains, for the start of a run."""
    names = group_names(model)
    if strategy == "linear":
        return "linear: backbone frozen, only the new head trains"
    if strategy == "full":
        return "full: every group trains at the same learning rate"
    if strategy == "gradual":
        order = " -> ".join(reversed(names[:-1]))
        return (
            f"gradual: head alone for {unfreeze_every} epoch(s), then one more group every "
            f"{unfreeze_every} epoch(s): {order}"
            + (f"; lr x{lr_decay} per group towards the stem" if lr_decay < 1 else "")
        )
    scales = lr_scales(model, lr_decay)
    return "discriminative: lr scale " + ", ".join(f"{n} {scales[n]:.3g}" for n in names)
