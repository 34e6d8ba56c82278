"""Reading a weights file without running code from it: safetensors, or a PyTorch file
through ``torch.load(weights_only=True)``; anything else is refused with what it looks like."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..files import load_checkpoint
from .convert import is_state_dict, unwrap_state_dict

_FORMATS = ("a .safetensors file or a PyTorch file (.pt/.pth/.bin/.ckpt: a zip archive, or "
            "an older pickle container)")


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


def _looks_like(head: bytes) -> str:
    """What a file that is no weights format seems to be, from its first bytes."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<")):
        return ("an HTML or XML page (a download that saved an error or login page instead "
                "of the file)")
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "a text file"
    return "an unknown binary format"


def check_weights_file(path: str | os.PathLike) -> str:
    """Says what is wrong with a file before any reader sees it (empty, HTML, truncated...).

    Args:
        path: the file.
    Returns:
        ``safetensors`` or ``torch``: the format its bytes are in.
    Raises:
        WeightsError: naming what the file is, what was expected and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist or is not a file; expected {_FORMATS}.")
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(f"{path} is empty (0 bytes): the save or download did not finish. "
                           f"Expected {_FORMATS}; save or download it again.")
    with open(path, "rb") as f:
        head = f.read(64)
    kind = sniff(path)
    if kind == "unknown" and len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        raise WeightsError(
            f"{path} is a truncated .safetensors file: its header alone should take {n} bytes "
            f"after the first 8, the file has {size}. Download or save it again."
        )
    if kind == "unknown":
        raise WeightsError(
            f"{path} is neither a PyTorch file nor a .safetensors file: it looks like "
            f"{_looks_like(head)} (first bytes {head[:16]!r}, {size} bytes). Expected "
            f"{_FORMATS}; download or save it again."
        )
    if kind == "safetensors":
        _check_safetensors(path, size)
    elif head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise WeightsError(
            f"{path} is a truncated or corrupted PyTorch file: its zip archive has no end "
            f"(central directory) after {size} bytes. Download or save it again."
        )
    elif path.suffix == ".safetensors":
        raise WeightsError(
            f"{path} is named .safetensors but holds a PyTorch pickle file, which "
            "safetensors cannot read. Rename it to .pt (reslab reads PyTorch files with "
            "torch.load(weights_only=True), which runs no code) or convert it to safetensors."
        )
    return kind


def _check_safetensors(path: Path, size: int) -> None:
    """A safetensors header that is valid JSON and a file long enough for its tensors."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise WeightsError(f"{path} has a damaged .safetensors header ({type(e).__name__}); "
                           "download or save it again.") from e
    if size < 8 + n + end:
        raise WeightsError(
            f"{path} is a truncated .safetensors file: its header lists {8 + n + end} bytes, "
            f"the file has {size}. Download or save it again."
        )


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a checked file, every failure a ``WeightsError``.

    Args:
        path: a PyTorch file.
        map_location: where tensors land.
    Returns:
        What the file holds (tensors, dicts, lists, numbers and strings only).
    Raises:
        WeightsError: for a damaged file (see ``check_weights_file``) or pickled objects.
    """
    path = Path(path)
    if check_weights_file(path) != "torch":
        raise WeightsError(f"{path} is a .safetensors file (tensors only, no model_args); "
                           "build the model with reslab.create_model(...) and load it with "
                           "reslab.load_pretrained(model, path).")
    try:
        # torch.load(weights_only=True), refusing pickled objects
        return load_checkpoint(path, map_location)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        if isinstance(e, WeightsError):  # already says what to do (pickled objects)
            raise
        raise WeightsError(f"could not read {path}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}. The file may be "
                           "truncated or corrupted; download or save it again.") from e


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads tensors from a file without running any code from it.

    Args:
        path: a ``.safetensors`` file, or a PyTorch file (``.pth``/``.pt``/``.bin``/``.ckpt``)
            holding a state dict, possibly wrapped (``{"model": ...}``, ``{"state_dict": ...}``).
    Returns:
        ``(state_dict, extras)``: extras holds ``model_args``/``classes``/``preprocess`` of a
        reslab checkpoint (empty otherwise).
    Raises:
        WeightsError: empty, truncated, wrongly named or unreadable, pickle-carrying, or
            holding no state dict; the message says which.
    """
    path = Path(path)
    if check_weights_file(path) == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except SafetensorError as e:
            raise WeightsError(f"{path} is not a readable .safetensors file ({e}); download "
                               "or save it again.") from e
    obj = load_torch_file(path)
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
