"""What a person watching sees: a live bar per epoch (rich) with loss, accuracy, learning
rate, images/s and ETA when stdout is a terminal; nothing during the epoch otherwise (logs
and CI get one plain line per epoch from the trainer).
"""

from __future__ import annotations

import sys


class EpochProgress:
    """A rich progress bar for one epoch, or a silent stand-in.

    Args:
        total: batches in the epoch.
        epoch: 0-based epoch index; ``epochs``: how many in the run.
        enabled: draw at all (rank 0 only).
        start: batch the epoch starts at (resume).
    """

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool = True, start: int = 0):
        self._progress = None
        self._task = None
        if not (enabled and sys.stdout.isatty()):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, stats="")

    def __enter__(self) -> "EpochProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def active(self) -> bool:
        return self._progress is not None

    def update(self, completed: int, loss: float, acc: float, lr: float, images_per_s: float):
        """Moves the bar to ``completed`` batches and shows the running figures."""
        if self._progress is None:
            return
        stats = f"loss {loss:.4f}  acc {100 * acc:.2f}%  lr {lr:.3g}  {images_per_s:,.0f} img/s"
        self._progress.update(self._task, completed=completed, stats=stats)
