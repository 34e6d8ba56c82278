"""ResNets written from scratch: blocks, one configurable network, the registry, weights."""

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .layers import Conv1x1, DropPath, FrozenBatchNorm2d, GlobalAvgPool, ZeroPadShortcut
from .profile import count_macs, count_params, mixed_layout_ops, profile_model
from .registry import create_model, get_spec, list_models
from .resnet import ResNet, freeze_batchnorm

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Conv1x1",
    "DropPath",
    "FrozenBatchNorm2d",
    "GlobalAvgPool",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ZeroPadShortcut",
    "count_macs",
    "count_params",
    "create_model",
    "freeze_batchnorm",
    "get_spec",
    "list_models",
    "mixed_layout_ops",
    "profile_model",
]
