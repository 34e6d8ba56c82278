"""Calibration: does a confidence of 80% mean right 80% of the time?

Guo et al. 2017, "On Calibration of Modern Neural Networks": modern ResNets are
over-confident; the expected calibration error (ECE) measures the gap between confidence
and accuracy, and a single temperature T fitted on validation data (logits / T) fixes
most of it without changing any prediction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DataError

ECE_BINS = 15  # Guo et al. 2017 use 15 equal-width confidence bins.


def reliability_bins(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> list[dict]:
    """Groups predictions by confidence into ``n_bins`` equal-width bins over [0, 1].

    A prediction with confidence ``p`` (its top probability) falls in bin ``i`` when
    ``i / n_bins < p <= (i + 1) / n_bins``, as in Guo et al.'s reference code.

    Args:
        probs: (N, C) probabilities.
        labels: (N,) true classes.
        n_bins: number of bins.
    Returns:
        One dict per bin: ``lower``, ``upper``, ``count``, ``confidence`` (mean top
        probability in the bin) and ``accuracy`` (fraction correct); the last two are
        None for empty bins.
    """
    conf, pred = probs.double().max(dim=1)  # (N,), (N,)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i-1] < p <= edges[i] on the inner edges.
    idx = torch.bucketize(conf.double(), edges[1:-1], right=False)  # (N,) in 0..n_bins-1
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": n,
                "confidence": float(conf[m].mean()) if n else None,
                "accuracy": float(correct[m].double().mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE = sum over bins of (bin size / N) * |accuracy(bin) - confidence(bin)|, in 0..1.

    Args:
        probs: (N, C) probabilities.
        labels: (N,) true classes.
        n_bins: number of equal-width confidence bins.
    Returns:
        The expected calibration error (0 is perfectly calibrated).
    """
    n = labels.numel()
    if n == 0:
        return float("nan")
    bins = reliability_bins(probs, labels, n_bins)
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 50) -> float:
    """Finds T > 0 minimising the negative log-likelihood of ``softmax(logits / T)``.

    Optimised with L-BFGS as in Guo et al. 2017, over log T so T stays positive.
    Dividing all logits by one number never changes the arg-max: accuracy is unchanged.

    Args:
        logits: (N, C) validation logits of the trained model.
        labels: (N,) their true classes.
        max_iter: L-BFGS iterations (the problem is 1-D and convex in 1/T: it converges fast).
    Returns:
        The temperature (> 1 softens an over-confident model, < 1 sharpens an under-confident one).
    """
    if labels.numel() < 2:
        raise DataError(
            f"temperature scaling needs validation data; received {labels.numel()} sample(s). "
            "Use a dataset with a validation split (or a larger val_fraction)."
        )
    logits = logits.detach().double()
    labels = labels.detach()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t):  # degenerate data (e.g. every logit equal): leave the model as is
        return 1.0
    return t


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (cross-entropy) of ``softmax(logits / temperature)``."""
    if labels.numel() == 0:
        return float("nan")
    return float(F.cross_entropy(logits.double() / temperature, labels))
