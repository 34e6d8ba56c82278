"""``evaluate`` (Python API and ``reslab evaluate``) on a real small model trained on digits,
checked against a plain PyTorch + scikit-learn oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm
from test_evaluate_helpers import copy_run, digits_run, torch_threads

from reslab.cli.main import main
from reslab.data import load_dataset, make_loader
from reslab.errors import DataError
from reslab.evaluate import evaluate, load_run
from reslab.models.checkpoint import model_from_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # a tiny model: one thread is fastest, more only spin on a busy CPU
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return digits_run(tmp_path_factory)


@pytest.fixture(scope="module")
def oracle(run_dir):
    """Logits of the checkpoint's model on the digits test split, plain eager fp32."""
    model = model_from_checkpoint(run_dir / "checkpoints" / "best.pt").eval()
    bundle = load_dataset("digits", log=None, check=False)
    loader = make_loader(bundle.test, batch_size=100, train=False, preprocess=model.preprocess)
    with torch.no_grad():
        pairs = [(model(x), y) for x, y in loader]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def test_evaluate_cli_json_matches_oracle(run_dir, oracle, tmp_path, capsys):
    logits, labels = oracle
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(run_dir), "--data", "digits", "--split", "test",
               "--precision", "fp32", "--json", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    m = json.loads(printed)  # stdout is exactly one JSON document
    y, pred = labels.numpy(), logits.argmax(1).numpy()
    assert m["split"] == "test" and m["num_samples"] == len(y) == 359
    assert m["top1"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert 0.9 < m["top1"] <= 1.0  # fractions, not percentages; the model has learned digits
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(y, logits.numpy(), k=5))
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    np.testing.assert_allclose([c["f1"] for c in m["per_class"]], f)
    np.testing.assert_allclose([c["recall"] for c in m["per_class"]], r)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    probs = torch.softmax(logits.double(), 1).numpy()
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs, labels=list(range(10))), rel=1e-4)
    assert m["ece_bins"] == 15 and 0 <= m["ece"] <= 1
    cm = skm.confusion_matrix(y, pred)
    off = [(cm[i, j], i, j) for i in range(10) for j in range(10) if i != j and cm[i, j]]
    assert len(m["most_confused"]) == min(10, len(off))
    for pair in m["most_confused"]:  # every pair is a real off-diagonal cell, largest first
        assert pair["count"] == cm[int(pair["true"]), int(pair["predicted"])]
    largest = sorted((c for c, _, _ in off), reverse=True)[:10]
    assert [pc["count"] for pc in m["most_confused"]] == largest
    assert json.loads((out / "metrics.json").read_text())["top1"] == m["top1"]
    for name in ("confusion_matrix.png", "reliability.png", "per_class.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 200
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn


def test_fast_path_agrees_with_fp32(run_dir, oracle):
    """The default precision (bf16 where the CPU has it, or the export module's fast path)
    gives the same predictions up to a handful of near-ties."""
    logits, labels = oracle
    run = load_run(run_dir)
    bundle = load_dataset("digits", log=None, check=False)
    res = evaluate(run.model, bundle.test, run.classes, precision="auto")
    assert res.labels.tolist() == labels.tolist()
    agree = (res.logits.argmax(1) == logits.argmax(1)).double().mean().item()
    assert agree >= 0.98
    assert abs(res.top1 - (logits.argmax(1) == labels).double().mean().item()) <= 0.02


def test_tta_averages_logits_of_image_and_mirror(run_dir):
    run = load_run(run_dir)
    bundle = load_dataset("digits", log=None, check=False)
    batches = list(make_loader(bundle.val, batch_size=64, train=False, preprocess=run.preprocess))
    res = evaluate(run.model, batches, run.classes, tta=True, precision="fp32")
    with torch.no_grad():
        ref = torch.cat([(run.model(x) + run.model(x.flip(3))) / 2 for x, _ in batches])
    torch.testing.assert_close(res.logits, ref, rtol=1e-4, atol=1e-4)
    assert res.tta and res.to_dict()["tta"] is True


def test_calibrate_saves_temperature_in_the_run(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    rc = main(["evaluate", "--checkpoint", str(run), "--calibrate", "--json",
               "--precision", "fp32"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    t = json.loads((run / "temperature.json").read_text())
    assert t["temperature"] > 0 and t["fitted_on"] == "val"
    assert m["temperature"] == pytest.approx(t["temperature"])
    assert m["split"] == "test"  # default: the run's own data (digits has a test split)
    assert m["ece_calibrated"] is not None and m["loss_calibrated"] is not None
    assert (run / "evaluation" / "metrics.json").exists()  # default --out: RUN/evaluation
    # A later load picks the temperature up (predict and report use it).
    assert load_run(run).temperature == pytest.approx(t["temperature"])


def test_class_mismatch_is_a_clear_error(run_dir, tmp_path, capsys):
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")
    rc = main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
               "--data", str(root), "--split", "val"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "classes do not match" in err and "'cat'" in err and "Traceback" not in err
    with pytest.raises(DataError, match="in the model but not the data"):
        from reslab.evaluate.loading import label_map_for

        label_map_for(["cat", "dog"], [str(i) for i in range(10)])


def test_subset_of_classes_in_other_order_is_remapped():
    from reslab.evaluate.loading import label_map_for

    assert label_map_for(["a", "b"], ["a", "b"]) is None
    assert label_map_for(["c", "a"], ["a", "b", "c"]).tolist() == [2, 0]
