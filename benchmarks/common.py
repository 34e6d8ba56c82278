"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn.functional as F
from torch import nn


def write_json(out: str | Path, record: dict) -> None:
    """Writes ``record`` as indented JSON to ``out`` (folders made) and says where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


class PlainPadShortcut(nn.Module):
    """The option-A shortcut as PyTorch users write it, ``pad(x[:, :, ::s, ::s])`` over the
    channels: autograd's own backward returns a contiguous gradient (reslab's
    ``ZeroPadShortcut`` keeps the input's layout)."""

    def __init__(self, stride: int, out_channels: int):
        super().__init__()
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x):
        pad = self.out_channels - x.shape[1]
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, pad // 2, pad - pad // 2))
