"""Small, fast helpers that the tutorial (docs/tutorial.md) runs to show an idea with numbers.

Each one does a single thing a learner can also do by hand: the output size of a
convolution, a convolution computed with loops, a toy stack of layers with or without
shortcuts, the gradient that reaches every residual block, the derivative of an
activation, the share of dead ReLU units. Everything runs on a CPU in well under a second.
The heavy experiment (training plain and residual nets) is ``reslab experiment degradation``
in ``degradation.py``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01 (PyTorch's default)
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"activation={name!r} is not supported; expected one of {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution or pooling along one spatial axis.

    ``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``, the formula
    in the ``torch.nn.Conv2d`` documentation (Dumoulin & Visin 2016, "A guide to
    convolution arithmetic").

    Args:
        size: input length (height or width), in pixels.
        kernel: kernel length.
        stride: step between two windows.
        padding: zeros added on each side.
        dilation: spacing between kernel taps (1 = a dense kernel).
    Returns:
        The output length.
    """
    limits = {"size": (size, 1), "kernel": (kernel, 1), "stride": (stride, 1),
              "padding": (padding, 0), "dilation": (dilation, 1)}  # fmt: skip
    for name, (value, low) in limits.items():
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, received {value!r}.")
    span = dilation * (kernel - 1) + 1  # how many input pixels one window covers
    if size + 2 * padding < span:
        raise ConfigError(
            f"a kernel spanning {span} pixels does not fit an input of {size} pixels with "
            f"padding {padding}; use a smaller kernel or more padding."
        )
    return (size + 2 * padding - span) // stride + 1


def cross_correlate2d(
    image: torch.Tensor, kernel: torch.Tensor, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """What ``F.conv2d`` computes for one channel, written as two loops.

    ``out[i, j] = sum_m sum_n kernel[m, n] * image[i * stride + m, j * stride + n]``.
    The kernel is *not* flipped: deep-learning "convolution" is cross-correlation.
    Flip the kernel (``kernel.flip(0, 1)``) to get the convolution of signal processing.

    Args:
        image: (H, W) tensor.
        kernel: (kh, kw) tensor.
        stride: step between windows.
        padding: zeros added on each side of the image.
    Returns:
        (H_out, W_out) tensor, sizes given by ``conv_output_size``.
    """
    if image.ndim != 2 or kernel.ndim != 2:
        raise ConfigError(
            f"expected a 2-D image and a 2-D kernel, received shapes {tuple(image.shape)} "
            f"and {tuple(kernel.shape)}; take one channel, e.g. image[0, 0]."
        )
    kh, kw = kernel.shape
    h_out = conv_output_size(image.shape[0], kh, stride, padding)
    w_out = conv_output_size(image.shape[1], kw, stride, padding)
    padded = F.pad(image, (padding, padding, padding, padding))
    out = image.new_zeros(h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            window = padded[i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[i, j] = (window * kernel).sum()
    return out


class ToyBlock(nn.Module):
    """One fully connected layer and an activation, with or without a shortcut.

    ``residual=True``: y = x + act(W x + b), so dy/dx = I + dact/dx (the identity term).
    ``residual=False``: y = act(W x + b), so dy/dx is a product of small factors.
    """

    def __init__(self, width: int, activation: str = "tanh", residual: bool = True):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = _activation(activation)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.fc(x))  # (B, width)
        return x + out if self.residual else out


def toy_stack(
    depth: int, width: int = 64, activation: str = "tanh", residual: bool = True, seed: int = 0
) -> nn.Sequential:
    """``depth`` ``ToyBlock``s in a row, initialised from ``seed`` (PyTorch's default init).

    Two stacks built with the same seed and ``residual=True`` / ``False`` hold identical
    weights, so any difference in their gradients comes from the shortcuts alone.

    Args:
        depth: number of blocks (>= 1).
        width: features per layer.
        activation: a name from ``ACTIVATIONS``.
        residual: add the shortcut in every block.
        seed: seed of the weight initialisation.
    Returns:
        An ``nn.Sequential`` mapping (B, width) -> (B, width).
    """
    if depth < 1 or width < 1:
        raise ConfigError(f"depth and width must be >= 1, received depth={depth}, width={width}.")
    _activation(activation)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream untouched
        torch.manual_seed(seed)
        return nn.Sequential(*(ToyBlock(width, activation, residual) for _ in range(depth)))


def input_gradient_norm(model: nn.Module, x: torch.Tensor) -> float:
    """Norm of d(sum of outputs)/d(input): how much gradient reaches the first layer.

    Args:
        model: any module.
        x: an input batch; it is not modified.
    Returns:
        ``||d model(x).sum() / dx||``.
    """
    x = x.detach().clone().requires_grad_(True)
    model(x).sum().backward()
    return x.grad.norm().item()


def block_gradient_norms(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[tuple[str, float]]:
    """Gradient norm of the cross-entropy loss at the input of every block of a reslab ResNet.

    The model is left in its current train/eval mode (train mode: BatchNorm uses batch
    statistics, as at the first training step). Parameter gradients are cleared after.

    Args:
        model: a ``reslab.models.ResNet`` (anything with ``stage_names`` of ``nn.Sequential``
            stages of blocks).
        x: (B, C, H, W) input batch.
        y: (B,) int64 labels.
    Returns:
        ``[("layer1.0", norm), ("layer1.1", norm), ...]`` from the input side to the output.
    """
    if not hasattr(model, "stage_names"):
        raise ConfigError(
            f"block_gradient_norms needs a reslab ResNet (with stage_names), received "
            f"{type(model).__name__}; build one with reslab.create_model."
        )
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for stage_name in model.stage_names:
        for i, block in enumerate(getattr(model, stage_name)):
            def grab(_module, args, name=f"{stage_name}.{i}"):
                args[0].retain_grad()
                seen.append((name, args[0]))

            hooks.append(block.register_forward_pre_hook(grab))
    try:
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    model.zero_grad(set_to_none=True)
    return [(name, t.grad.norm().item()) for name, t in seen]


def activation_derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    """Element-wise derivative of an activation at ``x``, computed by autograd.

    Args:
        name: a name from ``ACTIVATIONS``: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``,
            ``gelu``.
        x: points to evaluate at.
    Returns:
        d act(x) / dx, same shape as ``x``. (At exactly 0 PyTorch defines ReLU's slope as 0.)
    """
    act = _activation(name)
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(act(x).sum(), x)
    return grad


def dead_unit_fraction(pre_activation: torch.Tensor) -> float:
    """Share of units whose ReLU output is 0 for every sample of the batch ("dead" units).

    A dead unit passes no gradient, so its incoming weights never change again: the
    dying-ReLU problem (Maas et al. 2013; Lu et al. 2019, "Dying ReLU and Initialization").

    Args:
        pre_activation: (B, units) values before the ReLU.
    Returns:
        A fraction in [0, 1].
    """
    if pre_activation.ndim != 2:
        raise ConfigError(
            f"expected (batch, units) pre-activations, received shape "
            f"{tuple(pre_activation.shape)}; flatten the other axes first."
        )
    return (pre_activation <= 0).all(dim=0).float().mean().item()


__all__ = [
    "ACTIVATIONS",
    "ToyBlock",
    "activation_derivative",
    "block_gradient_norms",
    "conv_output_size",
    "cross_correlate2d",
    "dead_unit_fraction",
    "input_gradient_norm",
    "toy_stack",
]
