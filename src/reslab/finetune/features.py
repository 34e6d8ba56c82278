"""Feature caching for the ``linear`` strategy: run the frozen backbone once, train the head
on the stored features.

With a frozen backbone (and BatchNorm statistics fixed) the pooled features of an image
never change, so computing them every epoch wastes ~all the time of a linear probe.
Extracting them once with the eval transform and training ``fc`` on the cached
(N, num_features) matrix takes seconds on a CPU. The price: no data augmentation, since
the features are of the un-augmented images (the usual linear-probe protocol,
Kornblith et al. 2019).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


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


@torch.no_grad()
def evaluate_head(
    head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch: int = 4096
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in 0..1) of ``head`` on cached features."""
    loss, correct = 0.0, 0
    for i in range(0, len(labels), batch):
        logits = head(feats[i : i + batch])
        loss += F.cross_entropy(logits, labels[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == labels[i : i + batch]).sum().item()
    n = max(len(labels), 1)
    return loss / n, correct / n


def train_head(
    head: nn.Linear,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    warmup_epochs: float = 0.0,
    seed: int = 0,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Trains ``head`` in place on cached features with a cosine schedule.

    Args:
        head: the classifier, (num_features -> num_classes).
        train, val: ``(features, labels)`` pairs; ``val`` may be None.
        epochs, lr, batch_size: as for ``reslab train``; lr follows warmup then cosine to 0.
        optimizer: ``sgd`` (with ``momentum``, Nesterov off) or ``adamw``.
        weight_decay, label_smoothing: as for ``reslab train``.
        seed: fixes the order of the mini-batches.
        on_epoch: called with each epoch's metrics dict (e.g. to write metrics.jsonl).
    Returns:
        One dict per epoch: epoch (1-based), train_loss, train_acc, val_loss, val_acc,
        lr, seconds, images_per_s; ``val_*`` are None without ``val``.
    """
    x, y = train
    n = len(y)
    if n == 0:
        return []
    params = list(head.parameters())
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    warm = int(warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    history, step = [], 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        head.train()
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            # Linear warmup, then cosine decay to 0 (Loshchilov & Hutter 2017), per step.
            if step < warm:
                cur = lr * (step + 1) / warm
            else:
                cur = lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
            for g in opt.param_groups:
                g["lr"] = cur
            logits = head(x[idx])  # (b, num_classes)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            step += 1
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "val_loss": None,
            "val_acc": None,
            "lr": cur,
            "seconds": seconds,
            "images_per_s": n / max(seconds, 1e-9),
        }
        if val is not None and len(val[1]):
            head.eval()
            row["val_loss"], row["val_acc"] = evaluate_head(head, *val)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    head.eval()
    return history
