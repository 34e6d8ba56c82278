"""Residual blocks: the one idea of ResNet, y = F(x) + shortcut(x).

Because the shortcut is (close to) the identity, dy/dx = I + dF/dx: the gradient reaches
earlier layers through the shortcut unchanged, however small dF/dx becomes
(He et al. 2015, "Deep Residual Learning"; He et al. 2016, "Identity Mappings").

Every block takes ``residual=False`` to drop the shortcut: that turns a ResNet into the
"plain" network of the paper's degradation experiment with no other change.

``bn_act(bn, relu, x, shortcut)`` is ``relu(bn(x) + shortcut)``; in bf16 channels_last
training on CPU it runs as one fused kernel (``fused.py``), everywhere else as these ops.
"""

from __future__ import annotations

import torch
from torch import nn

from .fused import bn_act
from .layers import DropPath, NormFactory, conv1x1, conv3x3


def _merge(block: nn.Module, bn: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The end of a post-activation block: ``relu(bn(out) + shortcut(x))``.

    No shortcut when ``block.residual`` is False (the plain twin); with stochastic depth
    the branch is dropped before the addition.
    """
    if not block.residual:
        return bn_act(bn, block.relu, out)
    shortcut = x if block.downsample is None else block.downsample(x)
    if isinstance(block.drop_path, DropPath):
        return block.relu(block.drop_path(bn(out)) + shortcut)
    return bn_act(bn, block.relu, out, shortcut)


class BasicBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, then ReLU.

    Used by resnet18/34 and the CIFAR family. Output channels = ``planes`` (expansion 1).
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm: NormFactory = nn.BatchNorm2d,
        drop_path: float = 0.0,
        residual: bool = True,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64.")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = bn_act(self.bn1, self.relu, self.conv1(x))
        return _merge(self, self.bn2, self.conv2(out), x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus the shortcut, then ReLU.

    The stride sits on the 3x3 conv ("ResNet v1.5", as torchvision), which is about
    0.5 points more accurate on ImageNet than striding the first 1x1.
    Width of the 3x3 = planes * width_per_group / 64 * groups (ResNeXt, Wide ResNet).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm: NormFactory = nn.BatchNorm2d,
        drop_path: float = 0.0,
        residual: bool = True,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = bn_act(self.bn1, self.relu, self.conv1(x))  # (B, width, H, W)
        out = bn_act(self.bn2, self.relu, self.conv2(out))  # (B, width, H/s, W/s)
        return _merge(self, self.bn3, self.conv3(out), x)  # (B, 4 * planes, H/s, W/s)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus a clean identity shortcut.

    He et al. 2016: with nothing after the addition, the signal and its gradient pass
    from any block to any other unchanged. Optional dropout between the convs is the
    Wide ResNet block (Zagoruyko & Komodakis 2016).
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm: NormFactory = nn.BatchNorm2d,
        drop_path: float = 0.0,
        residual: bool = True,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.bn1 = norm(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = norm(planes)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = bn_act(self.bn1, self.relu, x)
        # The projection sees the pre-activated input (He et al. 2016, fig. 2e).
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(bn_act(self.bn2, self.relu, out)))
        if not self.residual:
            return out
        return self.drop_path(out) + shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4), identity shortcut."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm: NormFactory = nn.BatchNorm2d,
        drop_path: float = 0.0,
        residual: bool = True,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.bn1 = norm(inplanes)
        self.conv1 = conv1x1(inplanes, width)
        self.bn2 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = norm(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = bn_act(self.bn1, self.relu, x)
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(bn_act(self.bn2, self.relu, out))
        out = self.conv3(bn_act(self.bn3, self.relu, out))
        if not self.residual:
            return out
        return self.drop_path(out) + shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}
