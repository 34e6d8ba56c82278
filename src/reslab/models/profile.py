"""Parameter and multiply-accumulate (MAC) counts, per layer and in total; and a check that
a channels_last backward pass keeps one memory layout.

MACs count convolutions and matrix products (linear layers), the convention behind the
published figures (resnet50: 4.09 GMACs at 224 px); norms, activations, pooling and
additions are ignored. ``count_macs`` uses PyTorch's own FLOP formulas
(``torch.utils.flop_counter``, those of ``FlopCounterMode``) at the dispatcher, so it works
on the ``meta`` device, where a model has shapes but no memory; ``profile_model`` gives the
same total split per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerStat:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


@torch.no_grad()
def profile_model(model: nn.Module, input_size: tuple[int, ...]) -> list[LayerStat]:
    """Runs one forward pass on zeros of shape (1, *input_size) and records every leaf layer.

    Args:
        model: any module.
        input_size: (C, H, W).
    Returns:
        One ``LayerStat`` per leaf module that ran, in execution order.
    """
    stats: list[LayerStat] = []
    hooks = []
    for name, m in model.named_modules():
        if len(list(m.children())) == 0:
            def hook(mod, _inp, out, name=name):
                if isinstance(out, torch.Tensor):
                    stats.append(
                        LayerStat(
                            name,
                            type(mod).__name__,
                            tuple(out.shape),
                            sum(p.numel() for p in mod.parameters(recurse=False)),
                            _layer_macs(mod, out),
                        )
                    )
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
        model(torch.zeros((1, *input_size), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return stats


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Total multiply-accumulates of one forward pass for a single image.

    Runs the model once (eval mode, no grad) on zeros of shape (1, *input_size) on the
    model's device; on the ``meta`` device this propagates shapes only and costs no
    arithmetic. Equal to ``FlopCounterMode``'s total / 2 and to the sum of
    ``profile_model``'s per-layer counts (tests/test_models_counts.py).

    Args:
        model: any module.
        input_size: (C, H, W).
    Returns:
        The MAC count (one multiply-add = one MAC = two FLOPs).
    """
    p = next(model.parameters(), None)
    device = p.device if p is not None else "cpu"
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    counter = _flop_counter()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return counter.flops // 2


def _flop_counter():
    """A dispatcher mode adding up ``torch.utils.flop_counter``'s FLOPs for every op run.

    ``FlopCounterMode`` itself decomposes each op it has no formula for (BatchNorm, ReLU...)
    to look for matrix products inside; a ResNet has none there, and on the meta device
    those decompositions cost more than the whole count.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class FlopCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += formula(*args, **kwargs, out_val=out)
            return out

    return FlopCounter()



def mixed_layout_ops(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = None) -> list[str]:
    """Ops of a training step's backward pass that receive both memory layouts at once.

    A contiguous gradient meeting a channels_last one makes each such op 5-20x slower on
    CPU (``benchmarks/bench_layouts.py``). Use it to check a custom block: an empty list
    means the whole backward pass stays channels_last.

    Args:
        model: put in channels_last and train mode here.
        x: a (B, C, H, W) batch on the model's device.
        amp_dtype: run the forward pass under autocast to this dtype (e.g. bfloat16).
    Returns:
        The names of the offending ops, one entry per call (empty when none).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    def layout(t: torch.Tensor) -> str | None:
        if t.dim() != 4 or t.shape[1] == 1 or t.shape[2] * t.shape[3] == 1:
            return None  # both layouts at once: no mix possible
        if t.is_contiguous(memory_format=torch.channels_last):
            return "channels_last"
        return "contiguous" if t.is_contiguous() else None

    found: list[str] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kinds = {layout(a) for a in args if isinstance(a, torch.Tensor)} - {None}
            if len(kinds) > 1:
                found.append(str(func))
            return func(*args, **(kwargs or {}))

    model = model.to(memory_format=torch.channels_last).train()
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss = model(x).float().logsumexp(1).sum()
    with Spy():
        loss.backward()
    return found
