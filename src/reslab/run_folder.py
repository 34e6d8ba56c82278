"""The run folder's layout: the one place that knows where a run keeps each file.

    runs/resnet20-20261204-170000/
      config.yaml  classes.json  metrics.jsonl  metrics.csv  log.txt  summary.json
      checkpoints/last.pt  checkpoints/best.pt  model.safetensors

Every command that takes a run (evaluate, report, predict, export, resume...) turns a path
into a checkpoint through :meth:`RunFolder.resolve_checkpoint`, so they all agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError


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

    def looks_like_run(self) -> bool:
        """True when the folder holds a run's record (config or metrics) or checkpoints."""
        return any(p.exists() for p in (self.config, self.metrics_jsonl, self.last, self.best))

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
