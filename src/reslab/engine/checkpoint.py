"""Checkpoints: plain dicts of tensors that ``torch.load(weights_only=True)`` reads,
written atomically so a crash at any moment never leaves a half-written file.

Layout (every key but ``model`` is optional for weights-only files)::

    {
      "format": "reslab-checkpoint", "version": 1,
      "model": state_dict,                 # torchvision-compatible names
      "model_args": {"name": "resnet20", "num_classes": 10, "in_chans": 1, ...},
      "classes": ["T-shirt/top", ...],     # index -> class name
      "preprocess": {"input_size": [1, 28, 28], "resize": 28, "mean": [...], "std": [...]},
      "config": {...},                     # the resolved run config, plain types
      "optimizer": ..., "scheduler": ..., "scaler": ..., "ema": ...,
      "epoch": int, "step": int, "rng": {...}, "sampler": {...}, "metrics": {...},
    }
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError

FORMAT = "reslab-checkpoint"


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for
    every thread) where Linux exposes it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, writer) -> None:
    """Calls ``writer(fileobj)`` on a temporary file beside ``path``, fsyncs, then renames.

    The rename is atomic on POSIX: readers see the old file or the new one, never half.
    Raises a clear ``OSError`` when the folder is not writable or the disk is full, and
    leaves any existing file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the final file the usual umask-based mode
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(
                e.errno, f"could not write {path}: {e.strerror}. The previous file, if any, is intact."
            ) from e
        raise


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically saves ``state`` (tensors and plain containers only) to ``path``."""
    state = {"format": FORMAT, "version": 1, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Loads a checkpoint without running any code from it.

    ``weights_only=True`` refuses pickled objects (the way a malicious file would run code);
    such a file gets a clear error instead of being trusted.
    """
    path = Path(path)
    if path.is_dir():
        for cand in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if cand.exists():
                path = cand
                break
        else:
            raise WeightsError(f"{path} is a folder with no checkpoints/best.pt or checkpoints/last.pt.")
    if not path.exists():
        raise WeightsError(f"checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} contains pickled Python objects, which could run arbitrary code when loaded, "
            "so reslab refuses it. Re-save only tensors (e.g. torch.save(model.state_dict(), f)) "
            f"or convert it to .safetensors. Details: {str(e).splitlines()[0]}"
        ) from e


def model_from_checkpoint(ckpt: dict | str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuilds the model recorded in a reslab checkpoint and loads its weights (strict).

    Uses the EMA weights when the checkpoint has them and ``config`` says EMA was evaluated.
    """
    from ..models import create_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt, map_location)
    if "model_args" not in ckpt:
        raise WeightsError(
            "this checkpoint has no 'model_args', so the architecture is unknown; "
            "build the model with reslab.create_model(...) and use reslab.load_pretrained."
        )
    args = dict(ckpt["model_args"])
    name = args.pop("name")
    model = create_model(name, **args)
    weights = ckpt["model"]
    ema_on = bool(((ckpt.get("config") or {}).get("ema") or {}).get("enabled"))
    if ema_on and isinstance(ckpt.get("ema"), dict) and "model" in ckpt["ema"]:
        weights = ckpt["ema"]["model"]  # last.pt of an EMA run: the evaluated weights
    model.load_state_dict(weights, strict=True)
    model.classes = list(ckpt.get("classes") or [])
    model.preprocess = dict(ckpt.get("preprocess") or {})
    return model
