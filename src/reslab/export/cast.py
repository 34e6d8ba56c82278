"""A wrapper that keeps a model's fp32 interface while it runs in another number format.

Exported artifacts take the fp32 NCHW batch the preprocessing produces and return fp32
logits, whatever runs inside; the casts are part of the saved graph.
"""

from __future__ import annotations

import torch
from torch import nn


class CastedModel(nn.Module):
    """fp32 (B, C, H, W) -> ``net`` in ``dtype`` (channels_last) -> fp32 (B, K).

    Args:
        net: the model, already converted to ``dtype`` and channels_last.
        dtype: ``torch.bfloat16``, ``torch.float16`` or ``torch.float32``.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.net(x).float()


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Returns ``model`` (modified) in ``dtype`` + channels_last behind an fp32 interface."""
    if dtype == torch.float32:
        return model
    return CastedModel(model.to(dtype=dtype, memory_format=torch.channels_last), dtype).eval()
