"""The callback that sets which groups train at the start of every epoch.

For ``gradual`` it unfreezes one group from the top every ``unfreeze_every`` epochs; for
the other strategies it applies the same fixed choice each epoch (cheap, and it survives
anything that touched ``requires_grad`` in between). What trains depends only on the
epoch, so a resumed run unfreezes exactly as an uninterrupted one; the state is still
checkpointed so that a resume can report it and check the schedule did not change.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Callback
from ..engine.distributed import unwrap
from ..errors import ConfigError
from .strategies import check_strategy, set_trainable, trainable_groups


class Unfreezer(Callback):
    """Sets ``requires_grad`` per group for the strategy at every epoch start.

    Args:
        strategy: ``linear``, ``full``, ``gradual`` or ``discriminative``.
        unfreeze_every: epochs per newly unfrozen group (``gradual`` only).
    """

    def __init__(self, strategy: str, unfreeze_every: int = 1):
        check_strategy(strategy)
        if unfreeze_every < 1:
            raise ConfigError(f"finetune unfreeze_every={unfreeze_every} must be >= 1 (epochs per group).")
        self.strategy = strategy
        self.unfreeze_every = unfreeze_every
        self.groups: list[str] = []
        self.epoch = -1
        self.history: list[tuple[int, list[str]]] = []  # (epoch, groups) at each change

    def apply(self, model: nn.Module, epoch: int) -> tuple[list[str], bool]:
        """Makes exactly the groups of ``epoch`` trainable; returns (groups, changed)."""
        model = unwrap(model)
        groups = trainable_groups(model, self.strategy, epoch, self.unfreeze_every)
        set_trainable(model, groups)
        changed = groups != self.groups
        self.groups, self.epoch = groups, epoch
        if changed:
            self.history.append((epoch, list(groups)))
        return groups, changed

    def on_fit_start(self, trainer) -> None:
        self.apply(trainer.model, trainer.epoch)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        groups, changed = self.apply(trainer.model, epoch)
        if changed and self.strategy == "gradual":
            trainer.log(f"epoch {epoch + 1}: training {', '.join(groups)}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "unfreeze_every": self.unfreeze_every,
            "epoch": self.epoch,
            "groups": list(self.groups),
            "history": [[e, list(g)] for e, g in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("strategy", self.strategy) != self.strategy or int(
            state.get("unfreeze_every", self.unfreeze_every)
        ) != self.unfreeze_every:
            raise ConfigError(
                f"cannot resume: the run was started with strategy={state.get('strategy')!r}, "
                f"unfreeze_every={state.get('unfreeze_every')}, but now strategy={self.strategy!r}, "
                f"unfreeze_every={self.unfreeze_every}. Resume with the original settings."
            )
        self.epoch = int(state.get("epoch", -1))
        self.groups = list(state.get("groups", []))
        self.history = [(int(e), list(g)) for e, g in state.get("history", [])]
