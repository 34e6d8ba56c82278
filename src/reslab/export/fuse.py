"""BatchNorm folding: conv -> BN at inference is one conv with a bias.

In eval mode BatchNorm is a fixed per-channel affine map,
``bn(z) = gamma * (z - mean) / sqrt(var + eps) + beta``. When ``z = conv(x) = W * x + b``
the two compose into a single convolution with

    W' = W * s            (s = gamma / sqrt(var + eps), one scale per output channel)
    b' = (b - mean) * s + beta

so the BatchNorm costs nothing at inference (Ioffe & Szegedy 2015, section 3.2 note that
the transform is linear at inference; Jacob et al. 2018 fold it before quantizing).

The pairs are found by tracing the model once with ``torch.fx``: a convolution whose only
consumer is a BatchNorm, each called exactly once. The folded conv keeps the conv's name
(``layer1.0.conv1.weight`` gains ``layer1.0.conv1.bias``) and the BatchNorm becomes an
``nn.Identity``, so the model keeps its class, its methods and torchvision's names.
BatchNorms with no convolution right before them (the pre-activation blocks' ``bn1``,
which follows an addition) stay as they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from ..models.layers import FrozenBatchNorm2d

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


@dataclass(frozen=True)
class FoldReport:
    """What ``fold_batchnorm`` did: the folded ``(conv, bn)`` names and the norms it kept."""

    folded: tuple[tuple[str, str], ...]
    kept: tuple[str, ...]

    def describe(self) -> str:
        kept = f"; {len(self.kept)} kept (no conv right before them)" if self.kept else ""
        return f"folded {len(self.folded)} BatchNorms into their convolutions{kept}"


def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """Returns a new ``Conv2d`` equal to ``bn(conv(x))`` for a BatchNorm in eval mode.

    Args:
        conv: a 2-D convolution, with or without bias, any groups/stride/dilation.
        bn: ``nn.BatchNorm2d`` (with running statistics) or ``FrozenBatchNorm2d``.
    Returns:
        A convolution with a bias, in the conv's dtype and device.
    """
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        raise ValueError(
            f"cannot fold {type(bn).__name__} without running statistics "
            "(track_running_stats=False); it normalises with batch statistics at inference."
        )
    # Compute in float64 so folding adds no rounding of its own (then cast back once).
    w = conv.weight.detach().double()  # (C_out, C_in / groups, kh, kw)
    b = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    )
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)  # (C_out,)

    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(w * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((b - mean) * scale + beta)
    fused.train(conv.training)
    return fused


def find_conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """Names of ``(conv, bn)`` pairs where the BatchNorm reads only that conv's output.

    Args:
        model: any module whose forward ``torch.fx`` can trace (every reslab ResNet can).
    Returns:
        ``(pairs, kept)``: foldable pairs in execution order, and the names of BatchNorms
        that cannot be folded.
    """
    tracer = _LeafOnShapeTracer()
    graph = tracer.trace(model)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    modules = dict(model.named_modules())
    pairs, kept = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _NORMS):
            continue
        src = node.args[0] if node.args else None
        ok = (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and isinstance(modules[src.target], nn.Conv2d)
            and len(src.users) == 1  # nothing else reads the un-normalised conv output
            and calls[src.target] == 1
            and calls[node.target] == 1
            and modules[src.target].out_channels == modules[node.target].num_features
        )
        if ok:
            pairs.append((src.target, node.target))
        else:
            kept.append(node.target)
    return pairs, kept


class _LeafOnShapeTracer(torch.fx.Tracer):
    """Keeps convs, norms and modules whose forward depends on shapes as opaque leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, *_NORMS)):
            return True
        if _is_shape_dependent(m):
            return True
        return super().is_leaf_module(m, qualname)


def _is_shape_dependent(m: nn.Module) -> bool:
    from ..models.layers import ZeroPadShortcut

    return isinstance(m, ZeroPadShortcut)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, FoldReport]:
    """Folds every BatchNorm that directly follows a convolution into that convolution.

    Args:
        model: a model in eval mode (folding a training model would freeze its statistics;
            it is put in eval mode here).
        inplace: modify ``model`` itself instead of a deep copy.
    Returns:
        ``(folded_model, report)``. The folded model computes the same function as
        ``model.eval()`` up to float rounding (<= 1e-5 relative in fp32).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs, kept = find_conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        fused = fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_submodule(model, conv_name, fused)
        _set_submodule(model, bn_name, nn.Identity())
    return model, FoldReport(tuple(pairs), tuple(kept))
