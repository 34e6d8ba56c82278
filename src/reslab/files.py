"""Files that survive a crash: atomic writes, JSON, checkpoints that never run code, hashes.

The bottom layer of reslab: everything that writes or reads a file the user keeps goes
through here, so a full disk or a kill at any moment never leaves a half-written file.

Checkpoint layout (every key but ``model`` is optional for weights-only files)::

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

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import WeightsError

CHECKPOINT_FORMAT = "reslab-checkpoint"


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


def atomic_write_bytes(path: str | os.PathLike, writer: Callable) -> None:
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


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically writes ``text`` (UTF-8)."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` as indented JSON; returns the path."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)


def hash_file(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20,
              digest_size: int | None = None) -> str:
    """Hex digest of a file's bytes, read in chunks (constant memory).

    Args:
        path: the file.
        algorithm: any ``hashlib`` name (``sha256``, ``md5``, ``blake2b``...).
        digest_size: for ``blake2b``/``blake2s`` only, the digest length in bytes.
    """
    h = hashlib.new(algorithm, digest_size=digest_size) if digest_size else hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically saves ``state`` (tensors and plain containers only) to ``path``."""
    import torch

    state = {"format": CHECKPOINT_FORMAT, "version": 1, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Loads a checkpoint file, or a run folder's best (else last) one, without running code.

    ``weights_only=True`` refuses pickled objects (the way a malicious file would run code);
    such a file gets a clear error instead of being trusted.

    Args:
        path: a ``.pt`` file or a run folder.
        map_location: where tensors land (``"cpu"`` by default).
    Raises:
        WeightsError: missing, unreadable or pickle-carrying file.
    """
    import torch

    from .run_folder import RunFolder

    path = RunFolder.resolve_checkpoint(path)[0]
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} contains pickled Python objects, which could run arbitrary code when loaded, "
            "so reslab refuses it. Re-save only tensors (e.g. torch.save(model.state_dict(), f)) "
            f"or convert it to .safetensors. Details: {str(e).splitlines()[0]}"
        ) from e
