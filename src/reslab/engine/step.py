"""The hot path: one training micro-step (``TrainStep``, the one step every optimizer loop
runs: training, fine-tuning and lr-find) and the evaluation pass (``evaluate``, the one
accuracy-over-a-loader function).

Running totals (loss, correct predictions, images) stay on the device as tensors; reading
them (``.item()``) forces the host to wait for the device, so the trainer does that only
every ``log_every`` steps, not every step.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..device import Precision
from .distributed import all_reduce_sum


def batch_generator(seed: int, epoch: int, batch: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, batch, rank): mixup/cutmix draws
    are then identical in an uninterrupted and a resumed run."""
    digest = hashlib.blake2b(struct.pack("<4q", seed, epoch, batch, rank), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class RunningStats:
    """Sums of loss, correct predictions and images, kept on the device (no host sync)."""

    def __init__(self, device: torch.device):
        # float64 so 10^6 summed losses lose nothing; (loss_sum, correct, count)
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        self.totals[0] += loss_sum.detach().double()
        self.totals[1] += correct.double()
        self.totals[2] += count

    def read(self, reduce: bool = False) -> dict[str, float]:
        """Host values: mean ``loss``, ``acc`` and ``count`` (summed over ranks if ``reduce``)."""
        t = self.totals.clone()
        if reduce:
            all_reduce_sum(t)
        loss_sum, correct, n = t.tolist()
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "count": n}

    def finite(self) -> bool:
        """False when a NaN or inf loss has entered the sum (a sync point)."""
        return bool(torch.isfinite(self.totals[0]))

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.totals.copy_(state["totals"].to(self.totals.device))


class TrainStep:
    """Forward + backward of one micro-batch, and the optimizer update at the end of an
    accumulation window.

    Args:
        model: what runs forward (possibly DDP- and/or compile-wrapped).
        raw_model: the bare model (EMA source, gradient clipping).
        optimizer, scheduler: stepped together once per window.
        precision: autocast dtype and memory layout.
        num_classes: for mixup/cutmix's soft targets.
        label_smoothing: Szegedy et al. 2016.
        class_weight: optional (num_classes,) loss weights on the device.
        accum_steps: micro-batches per optimizer step.
        clip_grad: max global gradient norm, or None.
        scaler: a ``GradScaler`` for fp16, else None.
        ema: a ``ModelEma`` or None.
        mixup, cutmix: Beta alphas (0: off); ``mix_fn`` is ``reslab.data.mixup_cutmix``.
        seed, rank: seed the per-batch mixing generator.
        loss_fn: ``loss_fn(logits (B, num_classes) float32, targets) -> scalar loss``
            replacing the cross-entropy (then ``label_smoothing`` and ``class_weight`` are
            not applied); targets are class indices (B,), or (B, num_classes)
            probabilities under mixup/cutmix.
    """

    def __init__(
        self,
        model: nn.Module,
        raw_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        *,
        precision: Precision,
        num_classes: int,
        label_smoothing: float = 0.0,
        class_weight: torch.Tensor | None = None,
        accum_steps: int = 1,
        clip_grad: float | None = None,
        scaler=None,
        ema=None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mix_fn: Callable | None = None,
        seed: int = 0,
        rank: int = 0,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model, self.raw_model = model, raw_model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.precision = precision
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self.accum_steps = accum_steps
        self.clip_grad = clip_grad
        self.scaler = scaler
        self.ema = ema
        self.mix = (mixup, cutmix) if (mixup > 0 or cutmix > 0) else None
        self.mix_fn = mix_fn
        self.seed, self.rank = seed, rank
        self.loss_fn = loss_fn if loss_fn is not None else self.cross_entropy
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The default loss: cross-entropy with the class weights and label smoothing."""
        return F.cross_entropy(logits, target, weight=self.class_weight,
                               label_smoothing=self.label_smoothing)  # fmt: skip

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int, update: bool,
                 stats: RunningStats) -> torch.Tensor:  # fmt: skip
        """Runs one micro-batch; steps the optimizer when ``update`` (end of a window).

        Returns:
            The micro-batch's mean loss, detached, on the device (reading it syncs).
        """
        if self.precision.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        target: torch.Tensor = y
        if self.mix is not None:
            gen = batch_generator(self.seed, epoch, batch, self.rank)
            x, target = self.mix_fn(x, y, self.num_classes, mixup_alpha=self.mix[0],
                                    cutmix_alpha=self.mix[1], generator=gen)  # fmt: skip
        # DDP averages gradients during backward; skip that all-reduce inside a window.
        no_sync = getattr(self.model, "no_sync", None)
        ctx = no_sync() if (no_sync is not None and not update) else contextlib.nullcontext()
        with ctx:
            with self.precision.autocast():
                logits = self.model(x)  # (B, num_classes)
            loss = self.loss_fn(logits.float(), target)
            scaled = loss / self.accum_steps if self.accum_steps > 1 else loss
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        with torch.no_grad():
            hard = target if target.dim() == 1 else target.argmax(1)
            stats.add(loss.detach() * len(y), (logits.argmax(1) == hard).sum(), len(y))
        if update:
            self.update()
        return loss.detach()

    def update(self) -> None:
        """Clips, steps the optimizer and the schedule, clears gradients, updates the EMA."""
        if self.clip_grad is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grads = [p for p in self._params if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.clip_grad, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    precision: Precision | None = None,
    *,
    total: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    tta_flip: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy (no smoothing) and accuracy of ``model`` over ``loader``: the one
    accuracy-over-a-loader function (validation, test, fine-tuning, experiments).

    Args:
        model: evaluated in eval mode (its mode is restored afterwards).
        loader: yields ``(x (B, C, H, W), y (B,))`` on the model's device, e.g. a
            ``make_loader(..., train=False)`` loader (this rank's shard) or a list of batches.
        precision: autocast dtype and memory layout; None: fp32.
        total: the split's true size; under DDP the sharded loader pads the last batches
            with repeated images (as ``DistributedSampler`` does), and global positions
            ``>= total`` are masked out so every image counts exactly once.
        rank, world_size: this process's shard (local sample j is global j*world+rank).
        tta_flip: test-time augmentation: the prediction is the mean softmax of each image
            and its mirror; ``acc_plain`` then holds the accuracy without it.
    Returns:
        ``{"loss", "acc", "count"}`` summed over all processes (and ``acc_plain`` with
        ``tta_flip``).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stats = RunningStats(device)
    plain_correct = torch.zeros((), dtype=torch.float64, device=device)
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    seen = 0
    try:
        if hasattr(loader, "set_epoch"):  # a reslab loader; a plain list of batches has none
            loader.set_epoch(0)
        for x, y in loader:
            if precision is not None and precision.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(x).float()  # (B, num_classes)
                plain = logits
                if tta_flip:
                    logits = (plain.softmax(1) + model(x.flip(3)).float().softmax(1)).log()
            losses = F.cross_entropy(logits, y, reduction="none")  # (B,)
            correct = logits.argmax(1) == y
            plain_hits = plain.argmax(1) == y
            n = len(y)
            if world_size > 1 and total is not None:
                keep = (torch.arange(seen, seen + n) * world_size + rank) < total  # host-side
                if not bool(keep.all()):
                    keep_d = keep.to(y.device)
                    losses, correct, n = losses[keep_d], correct[keep_d], int(keep.sum())
                    plain_hits = plain_hits[keep_d]
            seen += len(y)
            stats.add(losses.sum(), correct.sum(), n)
            plain_correct += plain_hits.sum()
    finally:
        model.train(was_training)
    out = stats.read(reduce=world_size > 1)
    if tta_flip:
        if world_size > 1:
            all_reduce_sum(plain_correct)
        out["acc_plain"] = float(plain_correct) / max(out["count"], 1)
    return out
