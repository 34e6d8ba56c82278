"""The training state a checkpoint holds, and putting it back.

``last.pt`` holds everything an exact resume needs: weights, optimizer/schedule/scaler/EMA
state, callback state, RNG states, the position inside the epoch and the running epoch
totals. ``best.pt`` holds the weights evaluated (EMA's when on) and that epoch's metrics.
Both carry the classes, preprocessing, config and model record, so either one alone can be
loaded for prediction (``reslab.models.model_from_checkpoint``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .state import capture_rng_state


def _callback_key(i: int, cb: Any) -> str:
    return f"{i}:{type(cb).__name__}"


def _record(trainer) -> dict[str, Any]:
    """What every checkpoint of the run carries besides weights."""
    meta = trainer.meta
    record: dict[str, Any] = {"classes": list(meta["classes"]), "preprocess": meta["preprocess"],
                              "config": trainer.cfg.to_dict()}  # fmt: skip
    if meta.get("model_args") is not None:
        record["model_args"] = meta["model_args"]
    return record


def training_state(trainer, next_epoch: int, next_batch: int) -> dict[str, Any]:
    """The full state of ``trainer``; the run continues at batch ``next_batch`` of ``next_epoch``.

    Args:
        trainer: the ``Trainer``.
        next_epoch, next_batch: where a resume starts (0-based).
    Returns:
        A dict of tensors and plain types (loads with ``weights_only=True``).
    """
    t = trainer
    state: dict[str, Any] = {
        "model": t.model.state_dict(),
        **_record(t),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "epoch": int(next_epoch),
        "step": int(t.step),
        "sampler": {"epoch": int(next_epoch), "batch": int(next_batch), "batches": t.batches,
                    "seed": int(t.cfg.seed), "world_size": t.dist.world_size},
        "rng": capture_rng_state(),
        "callbacks": {_callback_key(i, cb): cb.state_dict() for i, cb in enumerate(t.callbacks)},
        "metrics": {
            "history": t.history,
            "best_metric": t.best_metric,
            "best_epoch": t.best_epoch,
            "running": t.stats.state_dict(),
            "epoch_seconds": t.epoch_seconds,
            "train_seconds": t.train_seconds,
            "images": t.images,
            "wall_seconds": t.wall_offset + (time.perf_counter() - t.started),
        },
        "split_info": json.loads(json.dumps(t.meta.get("split_info") or {}, default=str)),
    }
    if t.scaler is not None:
        state["scaler"] = t.scaler.state_dict()
    if t.ema is not None:
        state["ema"] = t.ema.state_dict()
    return state


def best_state(trainer, metrics: dict[str, Any]) -> dict[str, Any]:
    """``best.pt``'s content: the evaluated weights and this epoch's numeric metrics."""
    return {
        "model": trainer.eval_model().state_dict(),
        **_record(trainer),
        "epoch": metrics["epoch"],
        "step": trainer.step,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def restore_training_state(trainer, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Puts back everything ``training_state`` saved, except the RNG states.

    Args:
        trainer: the freshly built ``Trainer``.
        ckpt: a loaded ``last.pt``.
    Returns:
        The RNG states, to restore right before training resumes (building the loaders
        and callbacks in between may draw random numbers).
    """
    t = trainer
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    if t.scaler is not None and "scaler" in ckpt:
        t.scaler.load_state_dict(ckpt["scaler"])
    if t.ema is not None and "ema" in ckpt:
        t.ema.load_state_dict(ckpt["ema"])
    saved = ckpt.get("callbacks", {})
    for i, cb in enumerate(t.callbacks):
        key = _callback_key(i, cb)
        if key in saved:
            cb.load_state_dict(saved[key])
    m = ckpt["metrics"]
    t.history = list(m["history"])
    t.best_metric, t.best_epoch = m["best_metric"], m["best_epoch"]
    t.stats.load_state_dict(m["running"])
    t.epoch_seconds = float(m["epoch_seconds"])
    t.train_seconds = float(m["train_seconds"])
    t.images, t.wall_offset = int(m["images"]), float(m["wall_seconds"])
    t.step = int(ckpt["step"])
    t.epoch, t.start_batch = int(ckpt["sampler"]["epoch"]), int(ckpt["sampler"]["batch"])
    if int(ckpt["sampler"].get("batches", t.batches)) != t.batches:
        t.log(f"warning: the epoch now has {t.batches} batches, the checkpoint "
              f"{ckpt['sampler']['batches']}; the resume is not exact.")  # fmt: skip
    return ckpt["rng"]
