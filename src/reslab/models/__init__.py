"""ResNets written from scratch: blocks, one configurable network, the registry, weights.

    model = create_model("resnet50", num_classes=5)     # torchvision-compatible names

Names are imported lazily (PEP 562) so ``import reslab.models`` (and ``reslab models``,
which reads the table and its shipped counts) does not import torch until a name needs it.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "BasicBlock": "blocks",
    "Bottleneck": "blocks",
    "PreActBasicBlock": "blocks",
    "PreActBottleneck": "blocks",
    "Conv1x1": "layers",
    "DropPath": "layers",
    "FrozenBatchNorm2d": "layers",
    "GlobalAvgPool": "layers",
    "ZeroPadShortcut": "layers",
    "count_macs": "profile",
    "count_params": "profile",
    "mixed_layout_ops": "profile",
    "profile_model": "profile",
    "create_model": "registry",
    "get_spec": "table",
    "list_models": "registry",
    "ResNet": "resnet",
    "freeze_batchnorm": "resnet",
    "model_from_checkpoint": "checkpoint",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
