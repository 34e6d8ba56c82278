"""Learning-rate schedules evaluated per optimizer step: linear warmup (Goyal et al. 2017),
then cosine (Loshchilov & Hutter 2017, SGDR without restarts), step decay (He et al. 2015)
or one-cycle (Smith & Topin 2018). Per-step rather than per-epoch so short runs and
gradient accumulation get a smooth curve.

Each is a ``torch.optim.lr_scheduler.LambdaLR`` around a picklable factor object, so the
scheduler's ``state_dict`` is plain numbers and a group's rate is
``initial_lr * factor(step)`` with ``initial_lr = optim.lr * lr_scale``.
"""

from __future__ import annotations

import math

import torch

from ..config import ScheduleConfig


class LRFactor:
    """Multiplier of the peak learning rate at optimizer step ``t`` (0-based).

    Args:
        cfg: the ``schedule`` section.
        total_steps: optimizer steps in the whole run.
        steps_per_epoch: optimizer steps per epoch (converts ``warmup_epochs``).
    """

    def __init__(self, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int):
        self.name = cfg.name
        self.total = max(int(total_steps), 1)
        self.warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), self.total - 1)
        self.warmup_start = cfg.warmup_start
        self.min_lr = cfg.min_lr
        self.milestones = [int(round(m * self.total)) for m in cfg.milestones]
        self.gamma = cfg.gamma
        # one-cycle, as torch.optim.lr_scheduler.OneCycleLR with anneal_strategy="cos"
        self.up = max(float(cfg.pct_start * self.total) - 1, 1.0)
        self.down = max(float(self.total - 1) - self.up, 1.0)
        self.start = 1.0 / cfg.div_factor
        self.end = self.start / cfg.final_div_factor

    @staticmethod
    def _cos(a: float, b: float, frac: float) -> float:
        return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))

    def __call__(self, step: int) -> float:
        if self.name == "onecycle":
            if step <= self.up:
                return self._cos(self.start, 1.0, step / self.up)
            return self._cos(1.0, self.end, (step - self.up) / self.down)
        if step < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        # cosine from 1 at the end of warmup to min_lr at the last step
        frac = (step - self.warmup) / max(self.total - 1 - self.warmup, 1)
        return self._cos(1.0, self.min_lr, frac)


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler; call ``.step()`` after every ``optimizer.step()``.

    Args:
        optimizer: its groups' current ``lr`` are taken as the peak rates.
        cfg: the ``schedule`` section.
        total_steps: optimizer steps in the run (epochs x steps per epoch).
        steps_per_epoch: optimizer steps per epoch.
    Returns:
        A ``LambdaLR`` whose state_dict holds only numbers.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg, total_steps, steps_per_epoch))


class ExponentialRamp:
    """lr-find's schedule: the rate grows from ``start_lr`` to ``end_lr`` exponentially over
    ``num_steps`` steps (Smith 2017), as a multiplier of the optimizer's ``base_lr``."""

    def __init__(self, base_lr: float, start_lr: float, end_lr: float, num_steps: int):
        self.start = start_lr / base_lr
        self.ratio = (end_lr / start_lr) ** (1.0 / max(num_steps - 1, 1))

    def __call__(self, step: int) -> float:
        return self.start * self.ratio**step


def range_test_schedule(optimizer: torch.optim.Optimizer, base_lr: float, start_lr: float,
                        end_lr: float, num_steps: int) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    """The learning-rate range test as a per-step scheduler (see ``ExponentialRamp``).

    Args:
        optimizer: built with peak rate ``base_lr`` (each group ``base_lr * lr_scale``).
        base_lr: the optimizer's configured rate (``optim.lr``).
        start_lr, end_lr: the sweep's first and last rate.
        num_steps: steps in the sweep.
    """
    ramp = ExponentialRamp(base_lr, start_lr, end_lr, num_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, ramp)
