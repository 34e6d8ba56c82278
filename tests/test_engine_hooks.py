"""The engine's extension points (issue 16 item 3, issue 19): batch-level callbacks, a
custom loss through ``fit`` and ``TrainStep``, the one accuracy function, and ``reslab.fit``
/ ``reslab.load_config`` from the top level without slowing ``import reslab``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import reslab
from reslab.config import load_config
from reslab.data import load_dataset, make_loader
from reslab.device import resolve_precision
from reslab.engine import Callback, fit
from reslab.engine.step import evaluate
from reslab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", check=False, log=None)


def _cfg(tmp_path: Path, name: str, **over):
    base = {"data": {"source": "digits", "batch_size": 32, "limit_train": 128, "limit_val": 64},
            "model": {"name": "resnet20"}, "epochs": 1, "threads": 1, "precision": "fp32",
            "device": "cpu", "eval_test": False, "out": str(tmp_path / name)}  # fmt: skip
    return load_config(None, {**base, **over})


class BatchRecorder(Callback):
    def __init__(self):
        self.seen: list[tuple[int, int, float, int, bool]] = []

    def on_batch_end(self, trainer, epoch, batch, metrics):
        self.seen.append((epoch, batch, float(metrics["loss"]), metrics["step"], metrics["update"]))


def test_batch_hook_and_loss_fn(tmp_path, digits):
    calls = []

    def plain_ce(logits, targets):  # the default loss, written out: the oracle
        calls.append(len(targets))
        return F.cross_entropy(logits, targets)

    rec = BatchRecorder()
    custom = fit(_cfg(tmp_path, "custom", accum_steps=2), data=digits, callbacks=[rec], loss_fn=plain_ce)
    default = fit(_cfg(tmp_path, "default", accum_steps=2), data=digits)
    assert calls == [16] * 8  # 128 images, micro-batches of 32 / 2
    assert [(e, b, s, u) for e, b, _, s, u in rec.seen] == [(0, b, (b + 1) // 2, b % 2 == 1) for b in range(8)]
    assert custom.history[0]["train_loss"] == default.history[0]["train_loss"]
    # the epoch's loss is the mean of the losses the hook saw (equal micro-batches)
    assert custom.history[0]["train_loss"] == pytest.approx(sum(r[2] for r in rec.seen) / 8)


def test_a_callback_must_be_a_callback(tmp_path, digits):
    class NotOne:
        def on_epoch_end(self, trainer, epoch, metrics):
            pass

    with pytest.raises(ConfigError, match="Callback instances.*received NotOne"):
        fit(_cfg(tmp_path, "x"), data=digits, callbacks=[NotOne()])


def test_evaluate_with_flip_tta_matches_a_hand_written_loop(digits):
    """The oracle is the computation written out: average the logits of each image and its
    horizontal mirror, then argmax (experiments/evaluation.py is a call of evaluate itself)."""
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1).eval()
    loader = make_loader(digits.val, batch_size=64, train=False, preprocess=digits.preprocess)
    precision = resolve_precision(torch.device("cpu"), "fp32")
    ours = evaluate(model, loader, precision, tta_flip=True)
    correct = correct_plain = count = 0
    with torch.no_grad():
        for x, y in loader:
            plain = model(x)
            both = (plain + model(torch.flip(x, dims=[3]))) / 2
            correct += int((both.argmax(1) == y).sum())
            correct_plain += int((plain.argmax(1) == y).sum())
            count += len(y)
    assert ours["count"] == count
    assert ours["acc"] == pytest.approx(correct / count) and ours["acc_plain"] == pytest.approx(correct_plain / count)
    assert evaluate(model, loader)["acc"] == pytest.approx(correct_plain / count)  # precision None: fp32


def test_top_level_fit_and_load_config_are_lazy():
    code = ("import sys, reslab; assert 'reslab.engine' not in sys.modules and 'reslab.config' not in sys.modules; "
            "from reslab import fit, load_config; import reslab.engine.run as r; assert fit is r.fit; "
            "assert load_config(None).epochs >= 1")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
