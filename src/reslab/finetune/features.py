"""Feature caching for the ``linear`` strategy: run the frozen backbone once, train the head
on the stored features through the engine's ``TrainStep``.

With a frozen backbone (and BatchNorm statistics fixed) the pooled features of an image
never change, so computing them every epoch wastes ~all the time of a linear probe.
Extracting them once with the eval transform and training ``fc`` on the cached
(N, num_features) matrix takes seconds on a CPU. The price: no data augmentation, since
the features are of the un-augmented images (the usual linear-probe protocol,
Kornblith et al. 2019).

The head trains with the same step, optimizer and schedule as ``reslab train`` (a head-only
model over the cached tensors), so the run's ``config.yaml`` describes what happened:
``optim.nesterov``, ``optim.decay_norm_bias``, ``schedule.*``, ``accum_steps`` and
``clip_grad`` all apply.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..config import TrainConfig
from ..device import resolve_precision
from ..engine.batch_size import batch_sizes
from ..engine.optim import build_optimizer
from ..engine.schedule import build_schedule
from ..engine.step import RunningStats, TrainStep, batch_generator, evaluate


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: Iterable, autocast: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-logit features of every image ``loader`` yields.

    Args:
        model: a reslab ``ResNet``; put in eval mode for the extraction.
        loader: yields ``(x, y)`` batches, x (B, C, H, W) already on the model's device.
        autocast: optional context-manager factory (``Precision.autocast``).
    Returns:
        ``(features, labels)``: float32 (N, num_features) and int64 (N,), on the CPU.
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            ctx = autocast() if autocast is not None else contextlib.nullcontext()
            with ctx:
                f = model.forward_head(model.forward_features(x), pre_logits=True)  # (B, F)
            feats.append(f.float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not feats:
        return torch.empty(0, getattr(model, "num_features", 0)), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


class FeatureBatches:
    """Mini-batches of cached ``(features, labels)``, shaped like a reslab loader
    (``set_epoch``, ``len``, iteration of ``(x, y)``) so the engine's step and evaluation
    run on them unchanged.

    Args:
        features, labels: (N, F) float32 and (N,) int64 tensors.
        batch_size: rows per batch (the last one may be smaller).
        shuffle: a fresh order every epoch, drawn from (seed, epoch) only, so a rerun
            sees the same batches.
        seed: seeds the order.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, seed: int = 0):  # fmt: skip
        self.features, self.labels = features, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=batch_generator(self.seed, self.epoch, 0))
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.features[idx], self.labels[idx]  # (b, F), (b,)


def head_step(cfg: TrainConfig, head: nn.Module, steps_per_epoch: int) -> TrainStep:
    """The training step of ``reslab train`` for a head alone: the optimizer from
    ``cfg.optim`` (Nesterov, no decay on the bias, as the config says) and the schedule from
    ``cfg.schedule``, in fp32 (the cached features are fp32)."""
    optimizer = build_optimizer(cfg.optim, head)
    schedule = build_schedule(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch, steps_per_epoch)
    precision = resolve_precision(next(head.parameters()).device, "fp32")
    return TrainStep(head, head, optimizer, schedule, precision=precision, num_classes=head.out_features,
                     label_smoothing=cfg.label_smoothing, accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad,
                     seed=cfg.seed)  # fmt: skip


def train_head(
    cfg: TrainConfig,
    head: nn.Linear,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Trains ``head`` in place on cached features, step by step as ``reslab train`` would.

    Args:
        cfg: the resolved config: epochs, data.batch_size, accum_steps, optim, schedule,
            label_smoothing, clip_grad and seed are used.
        head: the classifier (num_features -> num_classes), fp32, on the features' device.
        train, val: ``(features, labels)`` pairs; ``val`` may be None.
        on_epoch: called with each epoch's metrics row (e.g. to write metrics.jsonl).
    Returns:
        One row per epoch as ``fit`` writes them: epoch (1-based), train_loss, train_acc,
        val_loss, val_acc (None without ``val``), lr, seconds, images_per_s, step.
    """
    sizes = batch_sizes(cfg)  # the engine's one reading of data.batch_size and accum_steps
    batches = FeatureBatches(*train, sizes.micro, shuffle=True, seed=cfg.seed)
    if not len(batches):
        return []
    steps_per_epoch = sizes.steps_per_epoch(len(batches))
    step = head_step(cfg, head, steps_per_epoch)
    val_batches = FeatureBatches(*val, sizes.eval) if val is not None and len(val[1]) else None
    device = next(head.parameters()).device
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        stats = RunningStats(device)
        batches.set_epoch(epoch)
        head.train()
        for b, (x, y) in enumerate(batches):
            update = (b + 1) % cfg.accum_steps == 0 or b == len(batches) - 1
            step(x.to(device), y.to(device), epoch, b, update, stats)
        seconds = time.perf_counter() - t0
        train_stats = stats.read()
        group = step.optimizer.param_groups[0]
        row = {"epoch": epoch + 1, "train_loss": train_stats["loss"], "train_acc": train_stats["acc"],
               "val_loss": None, "val_acc": None, "lr": float(group["lr"]) / float(group.get("lr_scale", 1.0)),
               "seconds": round(seconds, 3), "images_per_s": round(train_stats["count"] / max(seconds, 1e-9), 1),
               "step": (epoch + 1) * steps_per_epoch}  # fmt: skip
        if val_batches is not None:
            ev = evaluate(head, val_batches, step.precision)
            row["val_loss"], row["val_acc"] = ev["loss"], ev["acc"]
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    head.eval()
    return history
