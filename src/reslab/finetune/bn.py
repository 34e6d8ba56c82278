"""The BatchNorm policy of a fine-tuning run: ``train``, ``frozen`` or ``eval``.

A BatchNorm layer holds two kinds of state: running statistics (buffers, updated by every
forward pass in train mode) and an affine scale/shift (parameters, updated by the
optimizer). Freezing a layer's parameters does *not* stop the statistics moving, and a
layer in train mode normalises with the statistics of the current batch, not the
pretrained ones. That is the classic fine-tuning trap: the backbone "frozen" with
``requires_grad=False`` still drifts, and with small batches of new images it drifts badly.
Keras's transfer-learning guide gives the remedy: keep BatchNorm in inference mode while
fine-tuning, even after unfreezing the base model.

- ``train``: ordinary BatchNorm (batch statistics in training, running averages updated).
- ``frozen``: the pretrained running statistics are used in every forward pass and never
  updated, and the affine scale/shift do not train either: the layer is the fixed
  per-channel function it was after pretraining (Keras's ``trainable = False``).
- ``eval``: statistics used and never updated as in ``frozen``, but the affine scale/shift
  train with their group (the "freeze BN statistics" of detection fine-tuning).

Why affine parameters stay fixed under ``frozen``: with few images, gamma/beta of every
layer are many extra degrees of freedom that can re-scale features the head relies on;
``eval`` is there for when there is enough data to adapt them.

The policy must survive ``model.train()``, which the engine calls every epoch. Each
``BatchNorm2d`` is therefore replaced by ``FixedStatsBatchNorm2d``, a subclass that always
normalises with its running statistics and keeps ``training`` False. It has exactly the
same state-dict keys as ``BatchNorm2d`` (``num_batches_tracked`` included), so a
fine-tuned checkpoint loads into a freshly built model like any ``reslab train``
checkpoint. (``reslab.models.FrozenBatchNorm2d`` would turn the affine parameters into
buffers and drop ``num_batches_tracked``, which breaks strict loading and rules out ``eval``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

BN_POLICIES = ("train", "frozen", "eval")


class FixedStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them.

    Args:
        freeze_affine: also keep ``weight`` and ``bias`` fixed (the ``frozen`` policy);
            ``set_trainable`` honours this flag when strategies unfreeze groups.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, freeze_affine: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats=True)
        self.freeze_affine = freeze_affine
        self.training = False

    def train(self, mode: bool = True) -> "FixedStatsBatchNorm2d":
        # Whatever the caller asks, stay in inference mode: this is the whole point.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=False: normalise with running_mean/var and leave them (and
        # num_batches_tracked) untouched, even if someone set self.training by hand.
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fixed_stats=True, freeze_affine={self.freeze_affine}"


def _fixed_copy(bn: nn.BatchNorm2d, freeze_affine: bool) -> FixedStatsBatchNorm2d:
    if not bn.track_running_stats or bn.running_mean is None:
        raise ConfigError(
            f"a BatchNorm2d({bn.num_features}) without running statistics cannot be frozen; "
            "use --bn train."
        )
    new = FixedStatsBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, freeze_affine)
    new.to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    new.load_state_dict(bn.state_dict())
    if bn.affine:
        for p in (new.weight, new.bias):
            p.requires_grad_(not freeze_affine and bn.weight.requires_grad)
    return new


def _replace(module: nn.Module, policy: str) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, FixedStatsBatchNorm2d):
            child.freeze_affine = policy == "frozen"
            if child.affine:
                for p in (child.weight, child.bias):
                    p.requires_grad_(not child.freeze_affine)
            count += 1
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _fixed_copy(child, freeze_affine=policy == "frozen"))
            count += 1
        else:
            count += _replace(child, policy)
    return count


def _restore(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, FixedStatsBatchNorm2d):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            bn.to(device=child.running_mean.device, dtype=child.running_mean.dtype)
            bn.load_state_dict(child.state_dict())
            bn.train(module.training)
            setattr(module, name, bn)
            count += 1
        else:
            count += _restore(child)
    return count


def apply_bn_policy(model: nn.Module, policy: str) -> int:
    """Applies a BatchNorm policy to every ``BatchNorm2d`` of ``model``, in place.

    Call it before the optimizer is built (it replaces modules, hence parameters).
    Applying a second policy replaces the first; ``train`` restores plain BatchNorm2d.

    Args:
        model: any module.
        policy: ``train``, ``frozen`` or ``eval`` (see the module docstring).
    Returns:
        The number of BatchNorm layers the policy now governs (0 for ``train``, or for a
        model without BatchNorm, e.g. ``norm_layer=groupnorm``).
    """
    if policy not in BN_POLICIES:
        raise ConfigError(
            f"bn policy={policy!r} is not known; expected one of {', '.join(BN_POLICIES)} (or auto)."
        )
    if policy == "train":
        _restore(model)
        return 0
    return _replace(model, policy)


def describe_bn(policy: str, count: int) -> str:
    """One line for the start of a run."""
    if policy == "train":
        return "BatchNorm: train (batch statistics, running averages updated)"
    if count == 0:
        return f"BatchNorm: {policy} requested, but the model has no BatchNorm2d layer; nothing to fix"
    what = "statistics and scale/shift fixed" if policy == "frozen" else "statistics fixed, scale/shift train"
    return f"BatchNorm: {policy} ({count} layers; pretrained {what}, in every phase)"
