"""What a person watching sees: live rich progress bars, readable in an 80-column terminal.

- ``EpochProgress``: one bar per training epoch, with loss, accuracy, learning rate and
  images/s on a second line (one line of all of them truncated at 80 columns).
- ``TaskProgress``: one bar for any other long piece of work (evaluate, predict, export's
  parity check, lr-find), drawn on stderr so stdout stays machine-readable for ``--json``.

Nothing is drawn when the stream is not a terminal (logs and CI get the plain lines the
trainer and the verbs print) or when the ``reslab`` logger is quieter than INFO (``--quiet``).
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _wanted(stream, enabled: bool) -> bool:
    quiet = logging.getLogger("reslab").getEffectiveLevel() > logging.INFO
    return enabled and not quiet and stream.isatty()


def _progress(label: str, console=None, transient: bool = True):
    """A rich ``Progress`` whose bar row stays under ~60 columns; each task's ``stats``
    field, when set, is drawn on its own line below the bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class TwoLineProgress(Progress):
        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            for task in self.tasks:
                if task.fields.get("stats"):
                    yield Text("  " + task.fields["stats"], overflow="ellipsis", no_wrap=True)

    return TwoLineProgress(
        TextColumn(label),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


class _Bar:
    """What both bars share: start and stop the rich bar, when one is drawn."""

    _progress = None

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


class EpochProgress(_Bar):
    """A rich progress bar for one epoch, or a silent stand-in.

    Args:
        total: batches in the epoch.
        epoch: 0-based epoch index; ``epochs``: how many in the run.
        enabled: draw at all (rank 0 only).
        start: batch the epoch starts at (resume).
        console: a ``rich.console.Console`` to draw on (default: stdout, when a terminal).
    """

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool = True, start: int = 0,
                 console=None):  # fmt: skip
        self._progress = None
        self._task = None
        if console is None and not _wanted(sys.stdout, enabled):
            return
        self._progress = _progress(f"epoch {epoch + 1}/{epochs}", console)
        self._task = self._progress.add_task("train", total=total, completed=start, stats="")

    @property
    def active(self) -> bool:
        return self._progress is not None

    def update(self, completed: int, loss: float, acc: float, lr: float, images_per_s: float):
        """Moves the bar to ``completed`` batches and shows the running figures."""
        if self._progress is None:
            return
        stats = f"loss {loss:.4f}  acc {100 * acc:.2f}%  lr {lr:.3g}  {images_per_s:,.0f} img/s"
        self._progress.update(self._task, completed=completed, stats=stats)


class TaskProgress(_Bar):
    """A bar for one long task, drawn on stderr; a silent stand-in when not wanted.

    Args:
        label: what runs, e.g. ``evaluate`` or ``parity``.
        total: steps expected (None: unknown, the bar pulses).
        enabled: draw at all.
        console: a ``rich.console.Console`` to draw on (default: stderr, when a terminal).
    """

    def __init__(self, label: str, total: int | None = None, enabled: bool = True, console=None):
        self._progress = None
        if console is None and not _wanted(sys.stderr, enabled):
            return
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self._progress = _progress(label, console)
        self._task = self._progress.add_task(label, total=total)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yields ``items``, advancing the bar by one after each."""
        for item in items:
            yield item
            self.advance()


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """``for x in track(batches, "evaluate", len(batches))``: a bar on stderr while it runs."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with TaskProgress(label, total) as bar:
        yield from bar.track(items)
