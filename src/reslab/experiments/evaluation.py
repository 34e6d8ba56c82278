"""Test-set accuracy during training: the engine's ``evaluate``, timed, and a callback for it."""

from __future__ import annotations

import json
import time

import torch

from ..engine.step import evaluate


def accuracy_on(model: torch.nn.Module, loader, precision=None, tta_flip: bool = False) -> dict:
    """``reslab.engine.step.evaluate`` (the one accuracy-over-a-loader function), timed.

    Args:
        model: the network; evaluated in eval mode, its mode restored afterwards.
        loader: yields ``(x (B, C, H, W), y (B,))`` already on the model's device.
        precision: a ``reslab.device.Precision`` (autocast + memory layout), or
            None for fp32.
        tta_flip: average the softmax of the image and its mirror (test-time augmentation).
    Returns:
        ``{"acc": 0..1, "acc_plain": 0..1, "loss": float, "n": int, "seconds": float}``;
        ``acc_plain`` is the accuracy without TTA (the same forward pass gives both).
    """
    t0 = time.perf_counter()
    r = evaluate(model, loader, precision, tta_flip=tta_flip)
    return {"acc": r["acc"], "acc_plain": r.get("acc_plain", r["acc"]), "loss": r["loss"], "n": int(r["count"]),
            "seconds": time.perf_counter() - t0}  # fmt: skip


def test_eval_callback(loader, *, tta_flip: bool = False, every: int = 1, records_path=None):
    """A ``reslab.engine.Callback`` recording test accuracy at the end of every epoch.

    The test set is never used for any decision inside ``fit`` (that is val's job); this
    only records the curve the results pages plot. Its evaluation time is kept apart from
    the training time so both can be reported.

    Args:
        loader: the test loader (``make_loader(bundle.test, train=False, ...)``).
        tta_flip: ``test_acc`` is the accuracy with flip test-time augmentation (the mean
            softmax of each image and its mirror); the plain accuracy is kept as
            ``test_acc_plain``.
        every: evaluate every ``every`` epochs (and always after the last one).
        records_path: also append each record to this JSONL file as it is made, so a run
            stopped early (a time limit) still leaves its curve.
    Returns:
        The callback; its ``records`` list holds one dict per evaluated epoch:
        ``{"epoch", "test_acc", "test_loss", "train_acc", "train_loss", "val_acc",
        "train_seconds", "eval_seconds"}`` (``train_seconds`` cumulative, evaluation excluded).
    """
    from ..engine import Callback

    class TestEval(Callback):
        def __init__(self):
            self.records: list[dict] = []
            self.model = None
            self._train_seconds = 0.0

        def on_fit_start(self, trainer):
            self.model = trainer.model

        def on_epoch_end(self, trainer, epoch, metrics):
            # Evaluate what the run would ship: the EMA weights when EMA is on.
            ema = getattr(trainer, "ema", None)
            self.model = ema.module if ema is not None else trainer.model
            self._train_seconds += float(metrics.get("seconds") or 0.0)  # training only
            last = epoch + 1 >= int(trainer.cfg.epochs)
            if (epoch + 1) % every and not last:
                return
            r = accuracy_on(self.model, loader, trainer.precision, tta_flip=tta_flip)
            self.records.append({
                "epoch": epoch + 1,
                "test_acc": r["acc"],
                "test_acc_plain": r["acc_plain"],
                "test_loss": r["loss"],
                "train_acc": metrics.get("train_acc"),
                "train_loss": metrics.get("train_loss"),
                "val_acc": metrics.get("val_acc"),
                "train_seconds": self._train_seconds,
                "eval_seconds": r["seconds"],
            })  # fmt: skip
            if records_path is not None:
                with open(records_path, "a") as f:
                    f.write(json.dumps(self.records[-1]) + "\n")
            tta = f" with flip TTA ({100 * r['acc_plain']:.2f}% without)" if tta_flip else ""
            trainer.log(f"epoch {epoch + 1}: test acc {100 * r['acc']:.2f}%{tta} ({r['n']} images, {r['seconds']:.1f} s)")

        def state_dict(self):
            return {"records": list(self.records), "train_seconds": self._train_seconds}

        def load_state_dict(self, d):
            self.records = list(d.get("records", []))
            self._train_seconds = float(d.get("train_seconds", 0.0))

    return TestEval()
