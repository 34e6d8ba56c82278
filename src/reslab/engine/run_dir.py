"""The run folder: checked writable (and roomy enough) before any training, then holding
``config.yaml``, ``classes.json``, ``metrics.*``, ``checkpoints/``, ``model.safetensors``,
``summary.json`` and ``log.txt``.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_write_bytes


def default_run_dir(model_name: str) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model_name}-{stamp}"


def prepare_run_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Creates the run folder and proves it is writable with a real (atomic) write.

    Args:
        path: the folder.
        resume: continuing a run (the folder must hold ``checkpoints/last.pt``).
        overwrite: allow a fresh run in a folder that already holds one.
    Returns:
        The folder as a ``Path``.
    Raises:
        ConfigError when the folder cannot be written, or it already holds a run and
        neither ``resume`` nor ``overwrite`` was asked for.
    """
    path = Path(path)
    last = path / "checkpoints" / "last.pt"
    if resume and not last.exists():
        raise ConfigError(
            f"cannot resume: {last} does not exist. Start a new run with --out {path} "
            "(without --resume), or point --resume at a folder holding a run."
        )
    if not resume and last.exists() and not overwrite:
        raise ConfigError(
            f"{path} already holds a run ({last}). Continue it with --resume {path}, choose "
            "another --out, or pass overwrite=true to start over in the same folder."
        )
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        atomic_write_bytes(probe, lambda f: f.write(b"ok"))
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"the output folder {path} is not writable ({e.strerror or e}). Choose another folder "
            "with --out, or fix its permissions."
        ) from None
    return path


def check_free_space(path: str | os.PathLike, need_bytes: int) -> None:
    """Refuses to start when the disk cannot hold a few checkpoints of ``need_bytes``.

    Raises:
        ConfigError saying how much is free and how much is needed.
    """
    free = shutil.disk_usage(path).free
    if need_bytes and free < 3 * need_bytes:
        raise ConfigError(
            f"only {free / 1e6:.0f} MB free on the disk of {path}; a checkpoint needs about "
            f"{need_bytes / 1e6:.0f} MB and a run keeps up to three (last, best, the one being "
            "written). Free some space or choose another --out."
        )


class RunLog:
    """Prints a message (rank 0) and appends it to ``log.txt``."""

    def __init__(self, path: str | os.PathLike | None, enabled: bool = True, echo: bool = True):
        self.path = Path(path) if path else None
        self.enabled = enabled
        self.echo = echo

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.echo:
            print(msg, flush=True)
        if self.path is not None:
            try:
                with open(self.path, "a") as f:
                    f.write(msg + "\n")
            except OSError:
                pass  # the log file is a convenience; a full disk is reported by checkpoints
