"""Reading a weights file without running code from it: safetensors, or a PyTorch file
through ``torch.load(weights_only=True)``; anything else is refused with what it looks like."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import WeightsError
from ..files import load_checkpoint
from .convert import is_state_dict, unwrap_state_dict


def sniff(path: Path) -> str:
    """``safetensors``, ``torch`` (zip or legacy pickle container) or ``unknown``, by content."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")  # safetensors: u64 header size, then JSON
        if 0 < n < path.stat().st_size:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads tensors from a file without running any code from it.

    Args:
        path: a ``.safetensors`` file, or a PyTorch file (``.pth``/``.pt``/``.bin``/``.ckpt``)
            holding a state dict, possibly wrapped (``{"model": ...}``, ``{"state_dict": ...}``).
    Returns:
        ``(state_dict, extras)``: extras holds ``model_args``/``classes``/``preprocess`` of a
        reslab checkpoint (empty otherwise).
    Raises:
        WeightsError: unreadable, pickle-carrying, or holding no state dict.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except SafetensorError as e:
            raise WeightsError(f"{path} is not a readable .safetensors file ({e}).") from e
    if kind == "unknown":
        raise WeightsError(
            f"{path} is neither a PyTorch file nor a .safetensors file (its first bytes are "
            "not either format's); it may be truncated, an HTML error page or another format."
        )
    try:
        obj = load_checkpoint(path)  # torch.load(weights_only=True), refusing pickled objects
    except (RuntimeError, EOFError, OSError) as e:
        raise WeightsError(f"could not read {path}: {type(e).__name__}: {e}. The file may be "
                           "truncated or corrupted; download it again.") from e
    extras = {}
    if isinstance(obj, Mapping) and "model" in obj:
        extras = {k: obj[k] for k in ("model_args", "classes", "preprocess") if k in obj}
        # An EMA run evaluates (and so picks its best epoch by) the averaged weights: use them,
        # as reslab.models.checkpoint.model_from_checkpoint does.
        ema = obj.get("ema")
        ema_on = bool(((obj.get("config") or {}).get("ema") or {}).get("enabled"))
        if ema_on and isinstance(ema, Mapping) and is_state_dict(ema.get("model")):
            extras["ema"] = True
            return unwrap_state_dict(ema["model"]), extras
    return unwrap_state_dict(obj), extras
