"""``evaluate``: every number worth knowing about a trained classifier on one split.

Top-1/top-5, per-class precision/recall/F1, the confusion matrix and its most-confused
pairs, and calibration (ECE over 15 bins with a reliability diagram, before and after
temperature scaling when a temperature is given).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from . import calibration as cal
from . import metrics as M
from .inference import collect_logits, inference_fn, model_device


@dataclass
class EvalResult:
    """What ``evaluate`` measured. ``logits`` and ``labels`` are kept for further analysis
    (top-loss images, refitting a temperature); ``to_dict`` gives the JSON-ready metrics."""

    classes: list[str]
    logits: torch.Tensor  # (N, C) float32, raw (no temperature)
    labels: torch.Tensor  # (N,) int64
    top1: float
    top5: float
    top5_k: int  # min(5, C)
    loss: float  # mean cross-entropy (NLL) of the raw model
    confusion: np.ndarray  # (C, C) rows true, columns predicted
    scores: M.ClassScores
    confused_pairs: list[dict]
    ece: float
    reliability: list[dict]
    temperature: float | None = None
    ece_calibrated: float | None = None
    loss_calibrated: float | None = None
    reliability_calibrated: list[dict] | None = None
    tta: bool = False
    inference: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.labels.numel())

    def probs(self, calibrated: bool = True) -> torch.Tensor:
        """(N, C) softmax probabilities, divided by the temperature when there is one."""
        t = self.temperature if (calibrated and self.temperature) else 1.0
        return F.softmax(self.logits.double() / t, dim=1).float()

    def sample_losses(self) -> torch.Tensor:
        """(N,) cross-entropy of each sample: the largest are the "top losses"."""
        return F.cross_entropy(self.logits.double(), self.labels, reduction="none").float()

    def to_dict(self) -> dict:
        """Plain, JSON-ready metrics (fractions in 0..1)."""
        s = self.scores
        d = {
            "num_samples": self.num_samples,
            "num_classes": len(self.classes),
            "top1": self.top1,
            "top5": self.top5,
            "top5_k": self.top5_k,
            "loss": self.loss,
            "macro": s.average("macro"),
            "weighted": s.average("weighted"),
            "per_class": [
                {
                    "class": name,
                    "precision": float(s.precision[i]),
                    "recall": float(s.recall[i]),
                    "f1": float(s.f1[i]),
                    "support": int(s.support[i]),
                }
                for i, name in enumerate(self.classes)
            ],
            "most_confused": self.confused_pairs,
            "confusion_matrix": self.confusion.tolist(),
            "classes": list(self.classes),
            "ece": self.ece,
            "ece_bins": len(self.reliability),
            "reliability": self.reliability,
            "temperature": self.temperature,
            "ece_calibrated": self.ece_calibrated,
            "loss_calibrated": self.loss_calibrated,
            "reliability_calibrated": self.reliability_calibrated,
            "tta": self.tta,
            "inference": self.inference,
        }
        d.update(self.extra)
        return d

    def save(self, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
        """Writes ``metrics.json`` and the PNG plots into ``out_dir``.

        Returns:
            ``{"metrics": path, "confusion_matrix": path, "reliability": path, "per_class": path}``.
        """
        from . import plots as P

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"metrics": out / "metrics.json"}
        text = json.dumps(_finite(self.to_dict()), indent=2, ensure_ascii=False)
        paths["metrics"].write_text(text)
        if plots and self.num_samples:
            s = self.scores
            paths["confusion_matrix"] = P.save_png(
                P.plot_confusion_matrix(self.confusion, self.classes), out / "confusion_matrix.png"
            )
            paths["reliability"] = P.save_png(
                P.plot_reliability(self.reliability, self.ece, self.reliability_calibrated,
                                   self.ece_calibrated, self.temperature),
                out / "reliability.png",
            )
            paths["per_class"] = P.save_png(
                P.plot_per_class(self.classes, s.precision, s.recall, s.f1, s.support),
                out / "per_class.png",
            )
        return paths

    def summary(self) -> str:
        """A few human lines: accuracy, calibration and the worst confusions."""
        lines = [
            f"{self.num_samples} images, {len(self.classes)} classes"
            + (" (TTA: + horizontal flip)" if self.tta else ""),
            f"top-1 {100 * self.top1:.2f}%   top-{self.top5_k} {100 * self.top5:.2f}%   "
            f"loss {self.loss:.4f}   macro F1 {100 * self.scores.average('macro')['f1']:.2f}%",
            f"calibration: ECE {100 * self.ece:.2f}%"
            + (
                f" -> {100 * self.ece_calibrated:.2f}% with temperature {self.temperature:.3f}"
                if self.temperature
                else ""
            ),
        ]
        if self.confused_pairs:
            worst = ", ".join(
                f"{p['true']} -> {p['predicted']} ({p['count']})" for p in self.confused_pairs[:3]
            )
            lines.append(f"most confused (true -> predicted): {worst}")
        return "\n".join(lines)


def _finite(obj):
    """NaN/inf are not JSON; write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def metrics_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    *,
    temperature: float | None = None,
    tta: bool = False,
    inference: str = "",
) -> EvalResult:
    """Computes every metric of ``EvalResult`` from logits and labels (no model needed).

    Args:
        logits: (N, C) raw logits.
        labels: (N,) int64 true classes in 0..C-1.
        classes: the C class names.
        temperature: optional temperature; calibrated ECE and loss are added when given.
    Returns:
        The ``EvalResult``.
    """
    c = len(classes)
    if logits.ndim != 2 or logits.shape[1] != c:
        raise DataError(
            f"the model outputs {tuple(logits.shape)} logits but {c} classes were given; "
            "the classes must be the model's own (checkpoint 'classes')."
        )
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"temperature must be > 0, received {temperature}.")
    logits = logits.float().cpu()
    labels = labels.long().cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= c):
        raise DataError(
            f"labels range {int(labels.min())}..{int(labels.max())} but there are {c} classes."
        )
    k5 = min(5, c)
    acc = M.topk_accuracy(logits, labels, ks=(1, 5))
    preds = logits.argmax(dim=1) if labels.numel() else labels
    cm = M.confusion_matrix(labels.numpy(), preds.numpy(), c)
    probs = F.softmax(logits.double(), dim=1)
    res = EvalResult(
        classes=list(classes),
        logits=logits,
        labels=labels,
        # argmax (the first class on a tie), as training's accuracy and the confusion matrix
        # count: topk breaks ties in bf16 logits arbitrarily, so it may differ by an image
        top1=int((preds == labels).sum()) / len(labels) if labels.numel() else acc[1],
        top5=acc[5],
        top5_k=k5,
        loss=cal.nll(logits, labels),
        confusion=cm,
        scores=M.per_class_scores(cm),
        confused_pairs=M.most_confused(cm, list(classes), k=10),
        ece=cal.expected_calibration_error(probs, labels),
        reliability=cal.reliability_bins(probs, labels),
        tta=tta,
        inference=inference,
    )
    if temperature is not None:
        cprobs = F.softmax(logits.double() / temperature, dim=1)
        res.temperature = float(temperature)
        res.ece_calibrated = cal.expected_calibration_error(cprobs, labels)
        res.reliability_calibrated = cal.reliability_bins(cprobs, labels)
        res.loss_calibrated = cal.nll(logits, labels, temperature)
    return res


def _as_batches(loader_or_split, model: nn.Module, batch_size: int, preprocess: dict | None):
    """A data split becomes an evaluation loader; anything else is taken as ``(x, y)`` batches."""
    is_split = hasattr(loader_or_split, "labels") and not hasattr(loader_or_split, "set_epoch")
    if not is_split:
        return loader_or_split
    from ..data import make_loader
    from .loading import preprocess_of

    return make_loader(
        loader_or_split,
        batch_size=batch_size,
        train=False,
        preprocess=preprocess or preprocess_of(model),
        device=str(model_device(model)),
    )


def evaluate(
    model: nn.Module,
    loader_or_split,
    classes: list[str],
    *,
    tta: bool = False,
    temperature: float | None = None,
    precision: str = "auto",
    batch_size: int = 256,
    preprocess: dict | None = None,
    label_map: torch.Tensor | None = None,
    log=None,
    eager: bool = False,
) -> EvalResult:
    """Evaluates ``model`` on a split or loader.

    Args:
        model: a trained classifier whose outputs index ``classes``.
        loader_or_split: an iterable of ``(x, y)`` batches (e.g. ``make_loader(...)``), or a
            ``reslab.data`` split, which gets an evaluation loader with ``preprocess``.
        classes: class names, index -> name (the checkpoint's).
        tta: average the logits of each image with those of its horizontal mirror.
        temperature: a fitted temperature (``fit_temperature``); adds calibrated metrics.
        precision: ``auto`` (the fast path: bf16 where the CPU has it natively), ``bf16`` or
            ``fp32`` (exact eager reference).
        batch_size: batch size when a split is given.
        preprocess: the checkpoint's preprocessing (default: ``model.preprocess``).
        label_map: maps the data's label indices to the model's (same classes, other order).
        log: optional ``print``-like callable.
        eager: run the eager model under ``precision``'s autocast, the path training
            evaluates with (give the run's precision and eval batch size to reproduce the
            training log's number exactly), instead of the optimised inference path.
    Returns:
        An ``EvalResult``.
    """
    batches = _as_batches(loader_or_split, model, batch_size, preprocess)
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise DataError("the evaluation data is empty: no batches to evaluate.")
    try:
        num_images = len(batches) * len(first[0])  # an estimate: the compile-or-not decision
    except TypeError:
        num_images = None
    fn, how = inference_fn(model, first[0], precision, eager=eager, log=log, num_images=num_images)

    def chain():
        yield first
        yield from it

    total = len(batches) if hasattr(batches, "__len__") else None
    logits, labels = collect_logits(fn, chain(), tta=tta, label_map=label_map, total=total)
    return metrics_from_logits(
        logits, labels, classes, temperature=temperature, tta=tta, inference=how
    )
