"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; as
popularised by fastai's ``lr_find``): train for a few hundred steps while the rate grows
exponentially from tiny to huge, record the (smoothed) loss, and pick a rate where the loss
falls fastest. The model's weights are put back afterwards.

The sweep is training's own ``TrainStep`` under an exponential schedule
(``schedule.range_test_schedule``), so it sees the same loss, precision and clipping.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..device import resolve_device, resolve_precision, set_cpu_threads
from ..errors import ConfigError
from .batch_size import batch_sizes
from .optim import build_optimizer
from .progress import track
from .schedule import range_test_schedule
from .state import seed_everything
from .step import RunningStats, TrainStep


@dataclass
class LRFindResult:
    """The sweep and its suggestions.

    Attributes:
        lrs: learning rate at each step.
        losses: bias-corrected exponentially smoothed loss at each step.
        raw_losses: the loss of each step's batch.
        steepest: rate where the smoothed loss falls fastest per log-unit of rate.
        min_div10: the rate of the lowest smoothed loss divided by 10.
        suggestion: the recommended rate (``steepest``, capped at ``min_div10 * 10 / 3``
            so it stays clear of the divergence edge).
        stopped_early: the sweep ended because the loss diverged.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    steepest: float | None = None
    min_div10: float | None = None
    suggestion: float | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def plot(self, path: str | Path) -> Path:
        """Saves loss against learning rate (log axis) with the suggestions marked, as PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        ax.plot(self.lrs, self.losses, color="C0", label="smoothed loss")
        ax.plot(self.lrs, self.raw_losses, color="C0", alpha=0.25, lw=0.8, label="batch loss")
        marks = (("steepest", self.steepest, "C3"), ("min / 10", self.min_div10, "C2"))
        for name, lr, color in marks:
            if lr:
                ax.axvline(lr, color=color, ls="--", lw=1, label=f"{name}: {lr:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        lo = min(self.losses) if self.losses else 0
        hi = self.losses[0] if self.losses else 1
        ax.set_ylim(lo - 0.1 * abs(hi - lo), hi + 0.5 * abs(hi - lo) + 1e-6)
        title = "LR range test" + (f": suggestion {self.suggestion:.2g}" if self.suggestion else "")
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float | None, float | None]:
    """(steepest descent, min / 10) from a smoothed loss curve.

    The slope is taken against log10(lr) up to the minimum of the loss, skipping the first
    tenth of the sweep where the loss is still at its plateau and smoothing warms up.
    """
    lrs_a, losses_a = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs_a) < 5:
        return None, None
    i_min = int(np.argmin(losses_a))
    min_div10 = float(lrs_a[i_min] / 10)
    lo = max(1, len(lrs_a) // 10)
    if i_min - lo < 2:
        return None, min_div10
    slope = np.gradient(losses_a[: i_min + 1], np.log10(lrs_a[: i_min + 1]))
    steepest = float(lrs_a[lo + int(np.argmin(slope[lo:]))])
    return steepest, min_div10


def lr_find(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
    data=None,
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    log=print,
) -> LRFindResult:
    """Sweeps the learning rate exponentially and suggests one.

    The sweep runs training's own ``TrainStep`` (precision, GradScaler, label smoothing,
    gradient clipping, the ``loss_fn`` contract) with the range test as its schedule; only
    mixup/cutmix are left off, so each loss is the loss of real labels.

    Args:
        cfg: the run config (data, model, optimizer, precision are used; the schedule is not).
        model: a prebuilt model (weights are restored afterwards); default: from ``cfg.model``.
        param_groups: optimizer groups as for ``fit`` (``lr_scale`` is kept).
        data: a prebuilt ``DataBundle``; default: ``cfg.data.source``.
        start_lr, end_lr: the sweep's range.
        num_steps: optimizer steps (batches) in the sweep.
        beta: smoothing of the loss (0.98: about the last 50 batches).
        diverge: stop once the smoothed loss exceeds ``diverge`` x its minimum.
        log: where progress goes.
    Returns:
        An ``LRFindResult`` (``.plot(path)`` draws it).
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find needs 0 < start_lr < end_lr, received start_lr={start_lr}, "
                          f"end_lr={end_lr}.")  # fmt: skip
    if num_steps < 10:
        raise ConfigError(f"lr-find num_steps={num_steps} is too few for a curve; use 50-300.")
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    prev_threads = torch.get_num_threads()
    set_cpu_threads(cfg.threads)
    log(f"precision: {precision.describe()}")
    try:
        model, loader, saved = _model_and_loader(cfg, model, data, device, precision, log)
        optimizer = build_optimizer(cfg.optim, model, param_groups)
        schedule = range_test_schedule(optimizer, cfg.optim.lr, start_lr, end_lr, num_steps)
        step = TrainStep(
            model, model, optimizer, schedule, precision=precision, num_classes=getattr(model, "num_classes", 0),
            label_smoothing=cfg.label_smoothing, clip_grad=cfg.clip_grad,
            scaler=torch.amp.GradScaler(device.type) if precision.needs_scaler else None,
        )  # fmt: skip
        lrs = [start_lr * schedule.lr_lambdas[0].ratio**i for i in range(num_steps)]
        result = _sweep(step, loader, lrs, beta, diverge)
        if saved is not None:
            model.load_state_dict(saved)
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _model_and_loader(cfg: TrainConfig, model, data, device, precision, log):
    """(model in train mode on ``device``, the training loader, a copy of a given model's
    weights to put back or None)."""
    from ..data import make_loader
    from ..data.splits import limit_split
    from .build import build_model, load_data

    in_chans = getattr(model, "in_chans", None) if model is not None else None
    bundle = load_data(cfg, data, in_chans or cfg.model.in_chans or cfg.data.in_chans, log)
    split = limit_split(bundle.train, cfg.data.limit_train, cfg.seed)
    seed_everything(cfg.seed)
    saved = None
    if model is None:
        model = build_model(cfg, len(bundle.classes), bundle.in_chans)
    else:
        saved = copy.deepcopy(model.state_dict())
    model.to(device).train()
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(
        # one process, no accumulation: each sweep step is one optimizer step of the global batch
        split, batch_size=batch_sizes(cfg).global_batch, train=True, augment=cfg.data.augment,
        preprocess=bundle.preprocess, seed=cfg.seed, device=device,
        workers=cfg.data.workers, log=log,
    )  # fmt: skip
    return model, loader, saved


def _batches(loader):
    """The loader's batches, epoch after epoch, forever."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _sweep(step: TrainStep, loader, lrs: list[float], beta: float, diverge: float) -> LRFindResult:
    """One ``TrainStep`` per rate of ``lrs``; stops when the smoothed loss diverges."""
    result = LRFindResult()
    stats = RunningStats(next(step.raw_model.parameters()).device)
    avg, best = 0.0, math.inf
    batches = _batches(loader)
    for i, lr in enumerate(track(lrs, "lr-find")):
        x, y = next(batches)
        value = float(step(x, y, 0, i, True, stats))  # one sync per step: the sweep needs the value
        if not math.isfinite(value):
            result.stopped_early = True
            break
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (i + 1))  # bias correction, as in Adam
        result.lrs.append(lr)
        result.raw_losses.append(value)
        result.losses.append(smoothed)
        best = min(best, smoothed)
        if i > len(lrs) // 10 and smoothed > diverge * best:
            result.stopped_early = True
            break
    result.steepest, result.min_div10 = suggest(result.lrs, result.losses)
    if result.steepest is not None and result.min_div10 is not None:
        result.suggestion = min(result.steepest, result.min_div10 * 10 / 3)
    else:
        result.suggestion = result.steepest or result.min_div10
    return result
