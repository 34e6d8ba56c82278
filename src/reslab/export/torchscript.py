"""TorchScript: a traced, frozen graph that ``torch.jit.load`` runs with no Python model code.

TorchScript is in maintenance in PyTorch (``torch.export`` is its successor) but still the
format most C++ (libtorch) deployments load, so reslab keeps writing it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn


def export_torchscript(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike
) -> Path:
    """Traces ``model`` on ``example_input``, freezes it and saves it to ``path`` (``model.pt``).

    Args:
        model: an eval model with an fp32 interface (see ``cast.CastedModel`` for bf16).
        example_input: (B, C, H, W) fp32. Convolutions generalise to any batch size.
        path: the file to write.
    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # jit.trace/freeze are deprecated in favour of torch.export; the warnings say only that.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example_input, check_trace=False)
        frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(path))
    return path


def load_torchscript(path: str | os.PathLike, device: str = "cpu") -> torch.jit.ScriptModule:
    """Loads a TorchScript file (code and weights; no pickle of Python objects)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device).eval()
