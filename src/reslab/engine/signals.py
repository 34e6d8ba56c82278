"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (``kill``, schedulers, torchrun)
ask the loop to save a checkpoint at the next step boundary and exit; a second Ctrl-C
stops at once. Also the errors that end a run early.
"""

from __future__ import annotations

import signal
import threading

from ..errors import ReslabError


class TrainingInterrupted(Exception):
    """Raised by ``fit`` after a signal, once the checkpoint is written.

    Attributes:
        signum: the signal received; ``exit_code`` is the shell convention 128 + signum
            (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class NonFiniteLossError(ReslabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointWriteError(ReslabError):
    """A checkpoint or metrics file could not be written (disk full, permissions); the
    previous file is intact because every write is atomic."""


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM into a flag the training loop polls.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user wants out now
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name
