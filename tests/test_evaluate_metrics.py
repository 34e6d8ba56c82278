"""Metrics and calibration against hand-computed values and independent oracles
(scikit-learn, a NumPy loop, a grid search)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from test_evaluate_helpers import torch_threads

from reslab.errors import ConfigError, DataError
from reslab.evaluate import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    metrics_from_logits,
    most_confused,
    per_class_scores,
    reliability_bins,
    topk_accuracy,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tiny tensors: one thread is fastest, more only spin on a busy CPU
        yield


# ---------------------------------------------------------------- accuracy and per-class
def test_topk_accuracy_hand_computed():
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.9],  # label 3: rank 1
            [0.8, 0.1, 0.05, 0.06],  # label 1: rank 2
            [0.2, 0.3, 0.4, 0.1],  # label 0: rank 3
            [0.9, 0.3, 0.4, 0.1],  # label 3: rank 4
        ]
    )
    labels = torch.tensor([3, 1, 0, 3])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 3, 5))
    # top-5 of a 4-class problem is capped at 4 classes: always right.
    assert acc == {1: 0.25, 2: 0.5, 3: 0.75, 5: 1.0}


def test_confusion_and_prf_hand_computed():
    labels = [0, 0, 1, 1, 1, 2]
    preds = [0, 1, 1, 1, 0, 1]  # class 2 is never predicted
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    s = per_class_scores(cm)
    np.testing.assert_allclose(s.precision, [1 / 2, 2 / 4, 0.0])
    np.testing.assert_allclose(s.recall, [1 / 2, 2 / 3, 0.0])
    f1_1 = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)
    np.testing.assert_allclose(s.f1, [0.5, f1_1, 0.0])
    assert s.support.tolist() == [2, 3, 1]
    assert s.average("macro")["f1"] == pytest.approx((0.5 + f1_1) / 3)
    assert s.average("weighted")["recall"] == pytest.approx((2 * 0.5 + 3 * 2 / 3) / 6)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 7
    labels = rng.integers(0, c - 1, size=500)  # class 6 never occurs in the labels
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, c, size=500))
    preds[preds == 4] = 3  # class 4 is never predicted
    cm = confusion_matrix(labels, preds, c)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, preds, labels=list(range(c))))
    s = per_class_scores(cm)
    p, r, f, sup = skm.precision_recall_fscore_support(
        labels, preds, labels=list(range(c)), zero_division=0
    )
    np.testing.assert_allclose(s.precision, p)
    np.testing.assert_allclose(s.recall, r)
    np.testing.assert_allclose(s.f1, f)
    np.testing.assert_array_equal(s.support, sup)
    macro = skm.precision_recall_fscore_support(labels, preds, labels=list(range(c)),
                                                average="macro", zero_division=0)
    assert s.average("macro")["f1"] == pytest.approx(macro[2])
    weighted = skm.precision_recall_fscore_support(labels, preds, labels=list(range(c)),
                                                   average="weighted", zero_division=0)
    assert s.average("weighted")["precision"] == pytest.approx(weighted[0])


def test_most_confused_hand_computed():
    cm = np.array([[5, 3, 0], [1, 4, 2], [0, 6, 1]])
    pairs = most_confused(cm, ["cat", "dog", "fox"], k=3)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("fox", "dog", 6), ("cat", "dog", 3), ("dog", "fox", 2)
    ]
    assert [p["rate"] for p in pairs] == pytest.approx([6 / 7, 3 / 8, 2 / 7])
    assert most_confused(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []
    assert len(most_confused(cm, ["cat", "dog", "fox"], min_count=2)) == 3


# ---------------------------------------------------------------- calibration
def test_ece_hand_computed():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.45, 0.55]])
    labels = torch.tensor([0, 0, 0, 1])
    # 15 bins of width 1/15: 0.9 -> bin 13 (two samples, one right: acc 0.5, conf 0.9),
    # 0.7 -> bin 10 (acc 1, conf 0.7), 0.55 -> bin 8 (acc 1, conf 0.55).
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(1 - 0.55)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)  # 0.3875
    bins = reliability_bins(probs, labels)
    assert [i for i, b in enumerate(bins) if b["count"]] == [8, 10, 13]
    assert bins[13]["count"] == 2 and bins[13]["accuracy"] == 0.5
    assert bins[13]["confidence"] == pytest.approx(0.9)


def test_ece_bin_edges_are_right_inclusive():
    # 4 bins with exact binary edges: a confidence of exactly 0.5 belongs to (0.25, 0.5].
    probs = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.2, 0.75, 0.05, 0.0], [1.0, 0.0, 0.0, 0.0]])
    bins = reliability_bins(probs, torch.tensor([0, 0, 0]), n_bins=4)
    assert [b["count"] for b in bins] == [0, 1, 1, 1]
    assert bins[2]["accuracy"] == 0.0 and bins[3]["accuracy"] == 1.0


def _ece_loop(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Independent oracle: Guo et al.'s loop over bins (lower < conf <= upper)."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return ece


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_numpy_loop(n_bins):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2000, 5, generator=g, dtype=torch.float64) * 2.5
    labels = torch.randint(0, 5, (2000,), generator=g)
    labels[:1200] = logits[:1200].argmax(1)  # a model that is right 60%+ of the time
    probs = F.softmax(logits, dim=1)
    ours = expected_calibration_error(probs, labels, n_bins)
    assert ours == pytest.approx(_ece_loop(probs.numpy(), labels.numpy(), n_bins), abs=1e-12)


@pytest.fixture(scope="module")
def overconfident_digits():
    """A real miscalibrated model: logistic regression with almost no regularisation on
    digits (it separates the training set, so its test probabilities are too sharp)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    x_val, x_te, y_val, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0,
                                                stratify=y_rest)
    clf = LogisticRegression(C=1e4, max_iter=3000).fit(x_tr, y_tr)

    def logits(a):
        return torch.tensor(clf.decision_function(a), dtype=torch.float32)

    return logits(x_val), torch.tensor(y_val), logits(x_te), torch.tensor(y_te)


def test_temperature_scaling_lowers_nll_of_a_miscalibrated_model(overconfident_digits):
    val_logits, val_y, te_logits, te_y = overconfident_digits
    t = fit_temperature(val_logits, val_y)
    # Oracle: SciPy's bounded Brent search on the NumPy validation NLL (another optimiser,
    # another implementation of the loss).
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z, y = val_logits.double().numpy(), val_y.numpy()

    def nll(temp):
        s = z / temp
        return float(np.mean(logsumexp(s, axis=1) - s[np.arange(len(y)), y]))

    t_ref = minimize_scalar(nll, bounds=(0.05, 100.0), method="bounded", options={"xatol": 1e-6}).x
    assert t == pytest.approx(t_ref, rel=1e-3)
    assert t > 1.5  # over-confident: the fitted temperature softens it
    before = metrics_from_logits(te_logits, te_y, [str(i) for i in range(10)])
    after = metrics_from_logits(te_logits, te_y, [str(i) for i in range(10)], temperature=t)
    assert after.loss_calibrated < before.loss  # held-out NLL improves
    assert after.ece_calibrated < before.ece  # and so does calibration
    assert after.top1 == before.top1  # dividing logits by T never changes a prediction


def test_fit_temperature_refuses_empty_data():
    with pytest.raises(DataError, match="validation"):
        fit_temperature(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))


# ---------------------------------------------------------------- EvalResult
def test_metrics_from_logits_matches_sklearn_and_is_json_ready():
    import json

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 6, generator=g)
    labels = torch.randint(0, 6, (300,), generator=g)
    labels[:150] = logits[:150].argmax(1)
    classes = ["a", "b", "c", "d", "e", "f"]
    res = metrics_from_logits(logits, labels, classes, temperature=1.7)
    preds = logits.argmax(1).numpy()
    assert res.top1 == pytest.approx(skm.accuracy_score(labels.numpy(), preds))
    assert res.top5 == pytest.approx(skm.top_k_accuracy_score(labels.numpy(), logits.numpy(), k=5))
    probs = F.softmax(logits.double(), 1).numpy()
    assert res.loss == pytest.approx(skm.log_loss(labels.numpy(), probs))
    d = json.loads(json.dumps(res.to_dict()))
    assert 0.0 <= d["top1"] <= 1.0 and d["top5_k"] == 5 and d["ece_bins"] == 15
    assert [r["class"] for r in d["per_class"]] == classes
    assert sum(r["support"] for r in d["per_class"]) == 300
    assert d["temperature"] == 1.7 and d["ece_calibrated"] is not None
    per_sample = res.sample_losses()
    assert per_sample.mean().item() == pytest.approx(res.loss, rel=1e-5)


def test_metrics_from_logits_rejects_mismatched_classes():
    with pytest.raises(DataError, match="3 classes"):
        metrics_from_logits(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), ["a", "b", "c"])
    with pytest.raises(ConfigError, match="temperature"):
        metrics_from_logits(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), ["a", "b"],
                            temperature=0.0)
