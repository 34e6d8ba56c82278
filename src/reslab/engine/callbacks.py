"""Hooks into the training loop (the Keras/Lightning idea, kept small), and early stopping
written as one of them.

A callback subclasses ``Callback`` and overrides any of::

    on_fit_start(trainer)                    # after a resume is loaded, before the first step
    on_epoch_start(trainer, epoch)           # epoch: 0-based index (as loader.set_epoch)
    on_batch_end(trainer, epoch, batch, metrics)  # after each micro-batch (batch: 0-based);
        # metrics: {"loss": 0-d tensor on the device (float() of it waits for the device),
        #           "images": int, "step": optimizer steps so far, "update": bool (a step ran)}
    on_epoch_end(trainer, epoch, metrics)    # metrics: this epoch's metrics.jsonl row
    state_dict() -> dict / load_state_dict(d)  # saved in every checkpoint (plain types)

``trainer`` exposes ``.model`` (the bare model), ``.optimizer``, ``.cfg``, ``.epoch``,
``.step``, ``.precision``, ``.run_dir``, ``.history``, ``.log(msg)``, and
``.should_stop`` (set it to True to end the run after this epoch).
"""

from __future__ import annotations

import math
from typing import Any


class Callback:
    """Base class: every hook is optional and does nothing by default."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer, epoch: int, batch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stops the run when ``metric`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
        patience: epochs without improvement before stopping (>= 1).
        metric: ``val_acc`` (higher is better) or ``val_loss`` (lower is better).
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(self, patience: int, metric: str = "val_acc", min_delta: float = 0.0):
        self.patience, self.metric, self.min_delta = int(patience), metric, float(min_delta)
        self.best = -math.inf if metric.endswith("acc") else math.inf
        self.bad_epochs = 0

    def _improved(self, value: float) -> bool:
        if self.metric.endswith("acc"):
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            trainer.should_stop = True
            trainer.log(f"early stop: {self.metric} has not improved for {self.bad_epochs} epochs "
                        f"(best {self.best:.4f}).")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
