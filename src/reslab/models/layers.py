"""Small building blocks shared by every ResNet: norm layers, shortcuts, stochastic depth."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (no gradients, no updates).

    Holds the same buffers as ``nn.BatchNorm2d`` (minus ``num_batches_tracked``) so
    BatchNorm checkpoints load into it unchanged. Used by detection backbones and by
    fine-tuning with tiny batches, where batch statistics are noise.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_norm(kind: str, groups: int = 32) -> NormFactory:
    """Returns a factory ``channels -> norm module`` for ``batchnorm``, ``groupnorm`` or ``frozen_batchnorm``."""
    if kind == "batchnorm":
        return nn.BatchNorm2d
    if kind == "frozen_batchnorm":
        return FrozenBatchNorm2d
    if kind == "groupnorm":
        # Wu & He 2018: 32 groups; fall back to fewer for narrow CIFAR layers (16 channels).
        return lambda c: nn.GroupNorm(min(groups, c // 4) if c >= 8 else 1, c)
    raise ValueError(
        f"norm_layer={kind!r} is not supported; expected one of "
        "'batchnorm', 'groupnorm', 'frozen_batchnorm'."
    )


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops the whole residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        # Rescale survivors so the expectation is unchanged; p = 1 drops every sample (no 0/0).
        return x * mask / keep if keep > 0 else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _tracing() -> bool:
    """TorchScript or FX symbolic tracing (export), where only plain ops may appear."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def _needs_grad_fn(x: torch.Tensor) -> bool:
    """Whether a layout-keeping autograd Function should run: training with a gradient to
    keep; inference, tracing and export see the plain ops."""
    return torch.is_grad_enabled() and not _tracing() and x.requires_grad


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored that way (and is not also plain contiguous)."""
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _SubsamplePad(torch.autograd.Function):
    """``pad(x[:, :, ::s, ::s])`` over channels, whose gradient keeps ``x``'s memory layout.

    Autograd's own backward of slicing and padding returns a contiguous gradient even for a
    channels_last ``x``. On the shortcut that gradient then meets the channels_last one of
    the residual branch, and every later op of the backward pass (the add at each block
    input, ReLU's backward) runs on mixed layouts, 5-17x slower on CPU. Measured by
    ``benchmarks/bench_layouts.py``: with this and ``GlobalAvgPool``, a bf16 + channels_last
    resnet20 step runs 1.14x faster.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: int, before: int, after: int) -> torch.Tensor:
        ctx.shape, ctx.stride, ctx.before, ctx.layout = x.shape, stride, before, _layout(x)
        out = F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, before, after))
        return out.contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, c = ctx.stride, ctx.shape[1]
        gx = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        gx[:, :, ::s, ::s] = grad[:, ctx.before : ctx.before + c]
        return gx, None, None, None


class _MeanHW(torch.autograd.Function):
    """Mean over H and W, keeping dims, whose gradient keeps ``x``'s memory layout.

    The backward of ``adaptive_avg_pool2d`` returns a contiguous gradient, so on a
    channels_last net the last ReLU's backward would mix layouts (see ``_SubsamplePad``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.layout = x.shape, _layout(x)
        return F.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gx = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        return gx.copy_((grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape))


class GlobalAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` whose gradient keeps the input's memory layout.
    (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _needs_grad_fn(x):
            return _MeanHW.apply(x)
        return F.adaptive_avg_pool2d(x, 1)


class ZeroPadShortcut(nn.Module):
    """Option A of He et al. 2015 (section 4.2): a parameter-free shortcut.

    Subsamples space by ``stride`` and pads the new channels with zeros, so the shortcut
    stays an identity on the channels that exist. (B, C, H, W) -> (B, C_out, H/s, W/s).
    """

    def __init__(self, stride: int, out_channels: int):
        super().__init__()
        self.stride = stride
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.out_channels - x.shape[1]
        if _needs_grad_fn(x):
            return _SubsamplePad.apply(x, self.stride, pad // 2, pad - pad // 2)
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2)) if pad > 0 else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, out_channels={self.out_channels}"


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution that trains as a matrix product on channels_last CPU tensors.

    In NHWC memory a stride-1 1x1 convolution is exactly ``X @ W.T`` with X the
    (N*H*W, C_in) matrix the tensor already is: no copy. oneDNN's convolution backward is
    slower than its matrix products for this shape: over the 1x1 convolutions of resnet50
    (bf16, batch 32, 2 cores) forward plus backward took 1.20x longer as convolutions than
    as matrix products, and a whole resnet50 training step ran 1.03x faster
    (``benchmarks/bench_layouts.py``). Parameters and ``state_dict`` are ``nn.Conv2d``'s;
    eval mode, tracing, export, NCHW inputs and GPUs run the convolution.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            and self.stride == (1, 1)
            and torch.is_grad_enabled()
            and not _tracing()
            and x.device.type == "cpu"
            and _layout(x) == torch.channels_last
        ):
            out = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return out.permute(0, 3, 1, 2)
        return super().forward(x)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return Conv1x1(cin, cout, stride)


def make_shortcut(
    kind: str, cin: int, cout: int, stride: int, norm: NormFactory, preact: bool = False
) -> nn.Module | None:
    """The shortcut branch for a block whose input and output shapes differ.

    Args:
        kind: ``A`` zero-pad identity, ``B`` 1x1 projection (torchvision's ``downsample``),
            ``D`` average-pool then 1x1 projection (Bag of Tricks, He et al. 2019).
        preact: pre-activation blocks project the already normalised input, so no norm.
    Returns:
        A module, or ``None`` when shapes already match (pure identity).
    """
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return ZeroPadShortcut(stride, cout)
    if kind == "B":
        if preact:
            return nn.Sequential(conv1x1(cin, cout, stride))
        return nn.Sequential(conv1x1(cin, cout, stride), norm(cout))
    if kind == "D":
        # Keys downsample.1 / downsample.2 match timm's ResNet-D layout.
        pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        return nn.Sequential(pool, conv1x1(cin, cout), norm(cout))
    raise ValueError(f"shortcut={kind!r} is not supported; expected 'A', 'B' or 'D'.")
