"""Per-unit step clipping: no filter of a pretrained layer takes a gradient step larger than
a small fraction of its own size.

Why it is needed. Under the ``frozen`` (or ``eval``) BatchNorm policy the normalisation
layers are fixed per-channel affine maps, so the pretrained stages are no longer
normalised: making a filter larger makes its output larger, and nothing pulls it back. In
train-mode BatchNorm a filter's scale cancels out (its gradient shrinks as it grows); with
fixed statistics it does not, and the loop "larger features -> larger gradients -> larger
steps -> larger features" can run away. Measured on the shipped resnet20 fine-tuned on
20 digits per class (``gradual``, SGD lr 0.01, batch 32): the pooled features grow from 7 to
10 in 6 steps while layer2 and layer3 train, the sharpness of the loss (top Hessian
eigenvalue) from 40 to 120, close to the limit beyond which SGD with Nesterov momentum m
diverges (lr x sharpness < 2(1 + m) / (1 + 2m): 140 at lr 0.0097); two steps after layer1
opens it is 313, then 664, the loss jumps to 10 and the network ends at chance (99% of
layer3's ReLU outputs are zero; with fixed BatchNorm nothing re-centres them). Keeping
layer1 frozen does not help (layer2 + layer3 alone diverge as well), nor does warming the
rate of a newly unfrozen group up over one to five epochs: the trouble is not the moment a
group opens but the steps at the full rate afterwards.

Normaliser-free ResNets have the same problem, and Brock et al. 2021 ("High-Performance
Large-Scale Image Recognition Without Normalization", NFNets) solve it with adaptive
gradient clipping (AGC): each output unit's gradient ``g_i`` is rescaled so that
``|g_i| / max(|w_i|, eps) <= lambda``. Here ``lambda = max_ratio / lr`` (the group's current
rate), so the bound reads directly as a step size: ``lr * |g_i| <= max_ratio * |w_i|``, the
same at any learning rate or batch size. It bounds the gradient step before momentum and
weight decay (SGD with momentum 0.9 then moves a filter by up to ~10x that over many steps in
one direction), and it only bites on the units about to jump: 5-7% of the filter updates at 5
labels per class, where the run was stable anyway.

Only weights with an output-unit axis (conv filters, linear rows: ``ndim >= 2``) of the
pretrained groups are clipped; the new head, biases and norm scales/shifts are left alone
(AGC also skips the classifier).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..engine import Callback
from ..errors import ConfigError

# Largest gradient step (lr x grad) of a pretrained filter, as a fraction of its norm.
# Measured on reslab:resnet20_fashion_mnist -> digits with frozen BatchNorm, gradual, 2 seeds
# each: 0.0025 trains stably from 5 to 90 images per class (lr 0.0025 to 0.04); 0.01 is
# unstable at 90 per class (lr 0.04, batch 128: loss spikes above 3, 50% and 80% test
# accuracy), so this leaves a 4x margin. At 5 per class it costs nothing measurable: 75.2%
# mean test accuracy over 6 seeds with it, 76.4% without (single seeds range from 66 to 84%).
DEFAULT_STEP_CLIP = 0.0025
EPS = 1e-3  # floor of a unit's weight norm (Brock et al. 2021), so tiny filters can still move


def resolve_step_clip(
    value: float | str, strategy: str, bn: str, optimizer: str
) -> tuple[float, str | None]:
    """The step clip a run uses, and the line that explains it (None when off by default).

    ``auto`` turns it on (``DEFAULT_STEP_CLIP``) for ``gradual`` with SGD when the BatchNorm
    statistics are fixed (``frozen``/``eval``): the plan that was measured to diverge
    without it. ``full`` and ``discriminative`` give the backbone at most half the rate
    ``gradual`` gives it, and stay off unless asked.

    Args:
        value: ``finetune.step_clip``: ``"auto"``, 0 (off) or a fraction in (0, 1).
        strategy: the resolved strategy.
        bn: the resolved BatchNorm policy.
        optimizer: ``sgd`` or ``adamw``.
    Returns:
        ``(max_ratio, reason)``; ``max_ratio`` 0.0 means off.
    Raises:
        ConfigError for a clip that would do nothing (``linear``, or AdamW).
    """
    if value == "auto":
        if strategy == "gradual" and bn in ("frozen", "eval") and optimizer == "sgd":
            pct = f"{100 * DEFAULT_STEP_CLIP:g}%"
            return DEFAULT_STEP_CLIP, (
                f"step_clip={DEFAULT_STEP_CLIP:g} (bn={bn} leaves the pretrained stages "
                f"unnormalised: no filter's gradient step lr x grad may exceed {pct} of its norm)"
            )
        return 0.0, None
    ratio = float(value)
    if ratio == 0:
        return 0.0, "step_clip=off (your choice)"
    if strategy == "linear":
        raise ConfigError(
            f"finetune.step_clip={ratio:g} does nothing with strategy=linear (only the new head "
            "trains, and the head is never clipped); drop it or use another strategy."
        )
    if optimizer != "sgd":
        raise ConfigError(
            f"finetune.step_clip={ratio:g} bounds SGD steps (lr x gradient); with "
            f"optim.name={optimizer} the step does not grow with the gradient, so clipping does "
            "nothing useful. Set finetune.step_clip=0 or use optim.name=sgd."
        )
    return ratio, f"step_clip={ratio:g} (your choice)"


@torch.no_grad()
def clip_unit_steps_(
    params: Iterable[torch.Tensor],
    lr: float,
    max_ratio: float,
    grad_scale: torch.Tensor | None = None,
) -> None:
    """Rescales ``p.grad`` in place so that ``lr * |g_i| <= max_ratio * max(|w_i|, EPS)``.

    ``i`` runs over output units: ``w_i = p[i]`` (a conv filter (C_in, k, k), a linear row).
    Tensors without a gradient, or with fewer than 2 dimensions, are left alone. No host
    synchronisation: everything stays on the device.

    Args:
        params: the tensors to clip.
        lr: the learning rate their next step uses (> 0).
        max_ratio: the largest step as a fraction of the unit's norm.
        grad_scale: the loss scale still inside the gradients (fp16 with a fused optimizer
            under ``GradScaler``), or None.
    """
    for p in params:
        if p.grad is None or p.ndim < 2:
            continue
        dims = tuple(range(1, p.ndim))
        w = torch.linalg.vector_norm(p, dim=dims, keepdim=True, dtype=torch.float32)  # (C_out, 1..)
        g = torch.linalg.vector_norm(p.grad, dim=dims, keepdim=True, dtype=torch.float32)
        if grad_scale is not None:
            g = g / grad_scale
        allowed = max_ratio * w.clamp_min(EPS)
        factor = (allowed / (lr * g).clamp_min(1e-30)).clamp_max(1.0)
        p.grad.mul_(factor.to(p.grad.dtype))


class StepClip(Callback):
    """Clips the steps of every pretrained group before each optimizer step.

    Registers an optimizer step pre-hook at the start of ``fit`` (and again after a resume,
    on the new optimizer). Stateless: what is clipped depends only on the current weights,
    gradients and rates, so a resumed run clips exactly as an uninterrupted one.

    Args:
        model: the reslab model (``module_groups()``); every group but ``head`` is clipped.
        max_ratio: the largest step of a unit as a fraction of its norm (> 0).
    """

    def __init__(self, model: nn.Module, max_ratio: float):
        if not 0 < max_ratio < 1:
            raise ConfigError(
                f"step clip max_ratio={max_ratio} must be in (0, 1), e.g. {DEFAULT_STEP_CLIP}."
            )
        self.max_ratio = float(max_ratio)
        self._ids = {
            id(p) for name, mods in model.module_groups().items() if name != "head"
            for m in mods for p in m.parameters()
        }  # fmt: skip
        self._handle = None

    def on_fit_start(self, trainer) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = trainer.optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # GradScaler hands fused optimizers still-scaled gradients plus this attribute.
        scale = getattr(optimizer, "grad_scale", None)
        for group in optimizer.param_groups:
            lr = float(group["lr"])
            if lr <= 0:
                continue  # no step at all (the last step of a cosine schedule)
            params = [p for p in group["params"] if p.grad is not None and id(p) in self._ids]
            clip_unit_steps_(params, lr, self.max_ratio, scale)
