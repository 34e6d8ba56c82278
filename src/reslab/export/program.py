"""ExportedProgram: ``torch.export``'s whole-graph capture, saved with ``torch.export.save``.

The ``.pt2`` file holds the ATen graph and the weights; ``torch.export.load(path).module()``
gives back a callable with no reslab code, ready for ``torch.compile`` or AOTInductor.
The batch dimension is exported dynamic.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def export_program(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """Exports ``model`` with a dynamic batch and saves the program to ``path`` (``model.pt2``).

    Args:
        model: an eval-mode model with an fp32 interface (an int8 PT2E model works too).
        example_input: (B, C, H, W) fp32 with B >= 2.
        path: the file to write.
    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_input if len(example_input) >= 2 else example_input.repeat(2, 1, 1, 1)
    # No .eval() here: callers pass eval models, and PT2E int8 graphs refuse train()/eval().
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return path


def load_program(path: str | os.PathLike) -> nn.Module:
    """Loads a ``.pt2`` ExportedProgram and returns its callable module."""
    # int8 programs use the quantized_decomposed ops; importing this module registers them.
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    return torch.export.load(str(path)).module()
