"""``predict`` and ``reslab predict`` on a folder of real digit images with bad files mixed in;
the oracle is the checkpoint's model run by hand on the same pixels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

from reslab.cli.main import main
from reslab.data import load_dataset
from reslab.evaluate import expand_paths, load_run, predict

N_GOOD = 24


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # a tiny model: one thread is fastest, more only spin on a busy CPU
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """digits test images as PNG/JPEG-free lossless files in nested folders, plus bad files.

    Returns:
        (root, {relative path: uint8 image (8, 8)}).
    """
    bundle = load_dataset("digits", log=None, check=False)
    root = tmp_path_factory.mktemp("predict") / "photos"
    images = {}
    for i in range(N_GOOD):
        rel = f"batch{i % 3}/sub/{i:03d}.png" if i % 2 else f"batch{i % 3}/{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img = bundle.test.images[i, 0].numpy()
        Image.fromarray(img).save(root / rel)
        images[rel] = img
    (root / "batch0" / "truncated.png").write_bytes((root / "batch0" / "000.png").read_bytes()[:40])
    (root / "batch1" / "empty.jpg").write_bytes(b"")
    (root / "batch2" / "readme.txt").write_text("not an image; folders only pick image extensions")
    return root, images


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(digits_run(tmp_path_factory))


def _oracle(run, images: dict) -> dict:
    pre = run.preprocess
    x = torch.stack([torch.from_numpy(im).float().div(255)[None] for im in images.values()])
    x = (x - pre["mean"][0]) / pre["std"][0]  # (N, 1, 8, 8): native size, no resize needed
    with torch.no_grad():
        probs = torch.softmax(run.model(x).double(), 1)
    return dict(zip(images, probs))


def test_predict_folder_with_bad_files(run, folder):
    root, images = folder
    preds = predict(run.model, [root], run.preprocess, run.classes, topk=3, batch_size=5,
                    precision="fp32")
    bad = {p.path.split("/")[-1]: p.error for p in preds if not p.ok}
    assert set(bad) == {"truncated.png", "empty.jpg"}  # reported with a reason, not fatal
    assert "empty" in bad["empty.jpg"] and "truncated" in bad["truncated.png"].lower()
    good = {str(p.path).split("photos/")[1]: p for p in preds if p.ok}
    assert set(good) == set(images)
    oracle = _oracle(run, images)
    for rel, p in good.items():
        top = oracle[rel].topk(3)
        assert p.indices == top.indices.tolist()
        assert p.labels == [run.classes[i] for i in top.indices.tolist()]
        np.testing.assert_allclose(p.probs, top.values.numpy(), rtol=1e-4, atol=1e-6)
        assert p.probs == sorted(p.probs, reverse=True) and sum(p.probs) <= 1 + 1e-6
    # The batch size changes nothing; the fast path agrees on the labels.
    again = predict(run.model, [root], run.preprocess, run.classes, topk=3, batch_size=64)
    assert [p.label for p in again if p.ok] == [p.label for p in preds if p.ok]


def test_paths_globs_and_missing(folder):
    root, images = folder
    files, missing = expand_paths([root / "batch1", str(root / "batch2" / "*.png"),
                                   root / "batch1" / "sub", root / "nope", str(root / "*.gif")])
    assert len(files) == len(set(files))  # batch1/sub is inside batch1: listed once
    assert all(f.endswith((".png", ".jpg")) for f in files)
    # batch1 recursively (+ its empty.jpg), batch2's top level only (a glob does not recurse).
    expected = sum(1 for rel in images if rel.startswith("batch1")) + 1
    expected += sum(1 for rel in images if rel.startswith("batch2/") and "/sub/" not in rel)
    assert len(files) == expected
    assert [m[0] for m in missing] == [str(root / "nope"), str(root / "*.gif")]


def test_predict_cli_json_and_csv(tmp_path_factory, folder, tmp_path, capsys):
    root, images = folder
    out_csv = tmp_path / "preds.csv"
    ckpt = digits_run(tmp_path_factory) / "checkpoints" / "best.pt"
    rc = main(["predict", "--checkpoint", str(ckpt), str(root), "--topk", "2", "--json",
               "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)
    assert len(doc["predictions"]) == N_GOOD and len(doc["skipped"]) == 2
    assert all(len(p["topk"]) == 2 and 0 <= p["prob"] <= 1 for p in doc["predictions"])
    assert "skipped" in captured.err and "truncated.png" in captured.err
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == N_GOOD
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2"]
    by_json = {p["path"]: p["label"] for p in doc["predictions"]}
    assert {r["path"]: r["label_1"] for r in rows} == by_json


def test_predict_cli_table_and_nothing_readable(tmp_path_factory, folder, capsys):
    root, _ = folder
    run_dir = digits_run(tmp_path_factory)
    assert main(["predict", "--checkpoint", str(run_dir), str(root / "batch0" / "000.png")]) == 0
    out = capsys.readouterr().out
    assert "000.png" in out and "%" in out  # a table row with the probability
    assert main(["predict", "--checkpoint", str(run_dir), str(root / "batch1" / "empty.jpg")]) == 1
    assert "empty" in capsys.readouterr().err
