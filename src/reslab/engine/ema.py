"""Exponential moving average of the weights (Polyak & Juditsky 1992; as in timm's
``ModelEmaV2`` and the EfficientNet recipes). Evaluating the average instead of the live
weights usually adds accuracy for free late in training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of a model whose tensors track ``decay * ema + (1 - decay) * live``.

    Float parameters and buffers (BatchNorm running statistics) are averaged; integer
    buffers (``num_batches_tracked``) are copied.

    Args:
        model: the live model (unwrapped from DDP/compile).
        decay: per-update decay, e.g. 0.999 (an average over roughly 1 / (1 - decay) steps).
        warmup: use ``min(decay, (1 + t) / (10 + t))`` at update ``t`` so early averages
            are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self._cache: tuple[int, tuple] | None = None  # (id(model), tensor lists)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.updates) / (10 + self.updates))
        return self.decay

    def _tensors(self, model: nn.Module):
        # Built once per live model: state_dict() every step would cost more than the update.
        if self._cache is not None and self._cache[0] == id(model):
            return self._cache[1]
        ema = self.module.state_dict(keep_vars=True)
        live = model.state_dict(keep_vars=True)
        floats = ([], [])
        others = ([], [])
        for k, e in ema.items():
            dst = floats if e.dtype.is_floating_point else others
            dst[0].append(e.detach())
            dst[1].append(live[k].detach())
        self._cache = (id(model), (floats, others))
        return floats, others

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average one step towards ``model``'s current tensors."""
        d = self.current_decay()
        (ema_f, live_f), (ema_o, live_o) = self._tensors(model)
        # lerp: ema + (1 - d) * (live - ema) == d * ema + (1 - d) * live, one fused op per list
        torch._foreach_lerp_(ema_f, live_f, 1.0 - d)
        for e, v in zip(ema_o, live_o):
            e.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self._cache = None
        self.updates = int(state.get("updates", 0))
