"""The run folder: the one place that knows where a run keeps each file, and who may write it.

    runs/resnet20-20261204-170000/
      .reslab-run  .reslab-lock
      config.yaml  classes.json  metrics.jsonl  metrics.csv  log.txt  summary.json
      checkpoints/last.pt  checkpoints/best.pt  model.safetensors

The marker ``.reslab-run`` makes a folder a run folder: a non-empty folder without it is
somebody else's, and training refuses to write there rather than overwrite their
``config.yaml`` or ``summary.json`` (issue 17). The lock ``.reslab-lock`` (an exclusive
``flock``, holding the writer's pid) refuses a second training into the same folder.

Every command that takes a run (evaluate, report, predict, export, resume...) turns a path
into a checkpoint through :meth:`RunFolder.resolve_checkpoint`, so they all agree.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, WeightsError

MARKER = ".reslab-run"
LOCK = ".reslab-lock"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder (nothing is created or read by constructing it)."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    # -- the layout -------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.path / "classes.json"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def safetensors(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def temperature(self) -> Path:
        return self.path / "temperature.json"

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @classmethod
    def default(cls, model_name: str) -> "RunFolder":
        """``runs/<model>-<YYYYmmdd-HHMMSS>``."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return cls(Path("runs") / f"{model_name}-{stamp}")

    def is_run(self) -> bool:
        """True when the folder carries the marker, or checkpoints of a run made before
        the marker existed."""
        return self.marker.exists() or self.last.exists() or self.best.exists()

    # -- before a run writes -------------------------------------------------------------
    def check_writable(self, *, resume: bool, overwrite: bool) -> None:
        """Refuses, without writing anything, a folder a new run (or a resume) must not use.

        Args:
            resume: continuing the run (the folder must hold ``checkpoints/last.pt``).
            overwrite: allow a fresh run in a folder that already holds a run.
        Raises:
            ConfigError when resuming a folder without ``last.pt``; when a fresh run would
            replace a run and ``overwrite`` is off; when the folder holds files that are not
            a run's (the user's own, never overwritten); when it is a file.
        """
        path = self.path
        if resume and not self.last.exists():
            raise ConfigError(
                f"cannot resume: {self.last} does not exist. Start a new run with --out {path} "
                "(without --resume), or point --resume at a folder holding a run."
            )
        if path.exists() and not path.is_dir():
            raise ConfigError(f"the output folder {path} is a file; choose another --out.")
        if not resume and self.last.exists() and not overwrite:
            raise ConfigError(
                f"{path} already holds a run ({self.last}). Continue it with --resume {path}, "
                "choose another --out, or pass overwrite=true to start over in the same folder."
            )
        if path.is_dir() and not self.is_run():
            entries = sorted(p.name for p in path.iterdir())
            if entries:
                shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
                raise ConfigError(
                    f"the output folder {path} is not empty and is not a reslab run folder (it "
                    f"holds {shown}; a run folder has a {MARKER} file). reslab does not write "
                    "into it, so none of these files is overwritten. Choose a new or empty "
                    "folder with --out."
                )

    def create(self) -> None:
        """Creates the folder, marks it as a run, and proves it writable with a real write.

        Raises:
            ConfigError when the folder cannot be created or written.
        """
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            if not self.marker.exists():
                self.marker.write_text("reslab run folder\n")
            # a write, then a rename, as every checkpoint write does (plain calls here:
            # reslab.files imports this module)
            probe = self.path / ".write_probe"
            probe.write_bytes(b"ok")
            os.replace(probe, self.checkpoints / ".write_probe")
            (self.checkpoints / ".write_probe").unlink()
        except OSError as e:
            raise ConfigError(
                f"the output folder {self.path} is not writable ({e.strerror or e}). Choose "
                "another folder with --out, or fix its permissions."
            ) from None

    def prepare(self, *, resume: bool, overwrite: bool) -> "RunFolder":
        """``check_writable`` then ``create``; returns the folder."""
        self.check_writable(resume=resume, overwrite=overwrite)
        self.create()
        return self

    def lock(self) -> "RunLock":
        """Takes the folder's exclusive writer lock (``with folder.lock(): ...``).

        Raises:
            ConfigError naming the pid of the process that holds it.
        """
        return RunLock(self.lock_file).acquire()

    def check_free_space(self, need_bytes: int) -> None:
        """Refuses to start when the disk cannot hold a few checkpoints of ``need_bytes``.

        Raises:
            ConfigError saying how much is free and how much is needed.
        """
        free = shutil.disk_usage(self.path).free
        if need_bytes and free < 3 * need_bytes:
            raise ConfigError(
                f"only {free / 1e6:.0f} MB free on the disk of {self.path}; a checkpoint needs about "
                f"{need_bytes / 1e6:.0f} MB and a run keeps up to three (last, best, the one being "
                "written). Free some space or choose another --out."
            )

    # -- from a path to a checkpoint ----------------------------------------------------
    @classmethod
    def resolve_checkpoint(cls, path: str | os.PathLike) -> tuple[Path, "RunFolder | None"]:
        """``(checkpoint file, its run folder or None)`` for a checkpoint file or a run folder.

        A folder gives its ``checkpoints/best.pt``, else ``checkpoints/last.pt``. A file inside
        a run's ``checkpoints/`` also names its run, so its config and classes can be found.

        Raises:
            WeightsError: the path does not exist, or is a folder holding no checkpoint.
        """
        path = Path(path)
        if path.is_dir():
            run = cls(path)
            for cand in (run.best, run.last):
                if cand.is_file():
                    return cand, run
            raise WeightsError(
                f"{path} is a folder without checkpoints/best.pt or checkpoints/last.pt; pass a run "
                "folder made by `reslab train`/`reslab finetune`, or a checkpoint file."
            )
        if not path.exists():
            raise WeightsError(f"checkpoint {path} does not exist; pass a .pt file or a run folder.")
        if path.parent.name == "checkpoints":
            run = cls(path.parent.parent)
            if run.config.exists() or run.metrics_jsonl.exists():
                return path, run
        return path, None


class RunLock:
    """An exclusive ``flock`` on the run's lock file, which holds the writer's pid.

    The kernel drops the lock when the process ends, however it ends (SIGKILL included),
    so a stale file never blocks a later run. Platforms without ``fcntl`` get no lock.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is being written by another reslab process (pid {holder}). "
                "Two trainings in one folder would mix their files: wait for it to finish, stop "
                f"it (kill {holder}), or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Releases the lock (the file stays; only a held lock blocks)."""
        if self.fd is None:
            return
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunLog:
    """Prints a message (rank 0) and appends it to the run's ``log.txt``."""

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
