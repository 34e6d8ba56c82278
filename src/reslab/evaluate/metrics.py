"""Classification metrics from logits and labels: top-k accuracy, the confusion matrix,
per-class precision / recall / F1 and the most-confused class pairs.

Conventions follow scikit-learn so its functions can serve as an oracle: confusion
matrix rows are the true class, columns the predicted class; a class that is never
predicted (or never present) gets precision (or recall) 0 rather than NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Fraction of samples whose true label is among the ``k`` highest logits.

    Args:
        logits: (N, C) scores (logits or probabilities: only their order matters).
        labels: (N,) int64 true classes.
        ks: the values of ``k``; each is capped at ``C`` (top-5 of a 3-class problem is 1.0).
    Returns:
        ``{k: accuracy in 0..1}`` keyed by the requested (uncapped) ``k``.
    """
    n, c = logits.shape
    if n == 0:
        return {k: float("nan") for k in ks}
    top = logits.topk(min(max(ks), c), dim=1).indices  # (N, kmax)
    hit = top == labels.view(-1, 1)  # (N, kmax)
    return {k: hit[:, : min(k, c)].any(dim=1).double().mean().item() for k in ks}


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: ``cm[i, j]`` = samples of true class ``i`` predicted as ``j``."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


@dataclass
class ClassScores:
    """Per-class scores, each an array of length C, plus macro and weighted averages."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    def average(self, kind: str = "macro") -> dict[str, float]:
        """``macro``: plain mean over classes; ``weighted``: mean weighted by support."""
        if kind == "macro":
            w = np.ones_like(self.support, dtype=np.float64)
        elif kind == "weighted":
            w = self.support.astype(np.float64)
        else:
            raise ValueError(f"kind={kind!r}; expected 'macro' or 'weighted'.")
        w = w / w.sum() if w.sum() > 0 else w
        return {
            "precision": float((self.precision * w).sum()),
            "recall": float((self.recall * w).sum()),
            "f1": float((self.f1 * w).sum()),
        }


def per_class_scores(cm: np.ndarray) -> ClassScores:
    """Precision, recall and F1 of every class from a confusion matrix.

    precision_c = TP / (TP + FP) (column c), recall_c = TP / (TP + FN) (row c),
    F1 = harmonic mean of the two; 0 where a denominator is 0 (as sklearn's zero_division=0).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return ClassScores(precision, recall, f1, support.astype(np.int64))


def most_confused(
    cm: np.ndarray, classes: list[str], k: int = 10, min_count: int = 1
) -> list[dict]:
    """The off-diagonal cells with the most errors, largest first (fastai's ``most_confused``).

    Args:
        cm: (C, C) confusion matrix, rows true, columns predicted.
        classes: class names, index -> name.
        k: how many pairs to return at most.
        min_count: ignore pairs with fewer errors than this.
    Returns:
        ``[{"true": name, "predicted": name, "count": n, "rate": n / support(true)}]``;
        ``rate`` is the share of the true class that went to ``predicted``.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    support = cm.sum(axis=1)
    i, j = np.nonzero(off >= max(min_count, 1))
    counts = off[i, j]
    # Sort by count descending, ties by (true, predicted) index so the order is stable.
    order = np.lexsort((j, i, -counts))[:k]
    return [
        {
            "true": classes[i[o]],
            "predicted": classes[j[o]],
            "count": int(counts[o]),
            "rate": float(counts[o] / support[i[o]]),
        }
        for o in order
    ]
