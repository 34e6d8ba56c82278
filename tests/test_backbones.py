"""ResNet as a backbone: Faster R-CNN + FPN and a segmentation decoder over forward_stages,
the generated shapes, and the two metrics (checked against hand computations and sklearn)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab.experiments.backbones import (
    SHAPES,
    StageSegmenter,
    StagesWithFPN,
    box_map,
    build_detector,
    make_shapes,
    mean_iou,
)

# ~1 min each when the CPU is busy
STEPS = {"backbone_detection": "20", "backbone_segmentation": "30"}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_shapes_boxes_are_tight_around_their_masks():
    data = make_shapes(20, size=32, seed=3)
    assert data.images.shape == (20, 1, 32, 32) and data.masks.shape == (20, 32, 32)
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    for mask, boxes, labels in zip(data.masks, data.boxes, data.labels):
        assert 1 <= len(labels) <= 2
        assert set(mask.unique().tolist()) == {0, *labels.tolist()}
        for (x0, y0, x1, y1), c in zip(boxes.long().tolist(), labels.tolist()):
            inside = mask[y0:y1, x0:x1] == c  # the shape touches all four sides of its box
            edges = (inside[0], inside[-1], inside[:, 0], inside[:, -1])
            assert all(e.any() for e in edges)


@pytest.mark.parametrize("name, levels", [("resnet20", 4), ("resnet18", 5)])
def test_fpn_over_stages(name, levels):
    in_chans = 1 if name == "resnet20" else 3
    model = reslab.create_model(name, num_classes=0, in_chans=in_chans)
    fpn = StagesWithFPN(model, in_chans, out_channels=32).eval()
    x = torch.randn(2, in_chans, 64, 64)
    with torch.no_grad():
        feats = fpn(x)
        stages = model.forward_stages(x)
    assert len(feats) == levels and list(feats)[-1] == "pool"
    for f, s in zip(feats.values(), stages):  # one pyramid level per stage, same resolution
        assert f.shape == (2, 32, *s.shape[-2:])


def test_detector_trains_and_predicts_on_a_reslab_backbone(one_thread):
    torch.manual_seed(0)
    data = make_shapes(4, size=32)
    detector = build_detector(reslab.create_model("resnet20", num_classes=0, in_chans=1),
                              len(SHAPES), size=32)
    targets = [{"boxes": b, "labels": c} for b, c in zip(data.boxes, data.labels)]
    losses = detector.train()(list(data.images), targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert detector.backbone.body.layer1[0].conv1.weight.grad is not None  # the backbone learns
    with torch.no_grad():
        out = detector.eval()(list(data.images))
    assert len(out) == 4 and all(o["boxes"].shape[1] == 4 for o in out)


def test_segmenter_output_and_gradient():
    model = reslab.create_model("resnet20", num_classes=0, in_chans=1)
    seg = StageSegmenter(model, len(SHAPES))
    logits = seg(torch.rand(2, 1, 32, 32))
    assert logits.shape == (2, len(SHAPES), 32, 32)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def test_box_map_perfect_and_hand_computed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gt = [{"boxes": boxes, "labels": torch.tensor([1, 1])}]
    perfect = [_det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 1])]
    assert box_map(perfect, gt, 2)[0] == pytest.approx(1.0)
    # Ranked: a false positive (0.95), a hit (0.9), a duplicate of that hit (0.85, a false
    # positive: each box is found once), the second hit (0.8). Precision 1/2 at recall 1/2,
    # 2/4 at recall 1; the envelope gives AP = 0.5 * 0.5 + 0.5 * 0.5 = 0.5.
    ranked = [_det([[40, 40, 50, 50], [0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30]],
                   [0.95, 0.9, 0.85, 0.8], [1, 1, 1, 1])]
    assert box_map(ranked, gt, 2)[0] == pytest.approx(0.5)
    # The right box with the wrong class finds nothing; a class without ground truth is skipped.
    wrong = [_det([[0, 0, 10, 10]], [0.9], [2])]
    m, per_class = box_map(wrong, gt, 3)
    assert m == 0.0 and set(per_class) == {1}


def test_mean_iou_matches_sklearn():
    from sklearn.metrics import jaccard_score

    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 16, 16), generator=gen)
    pred = torch.where(torch.rand(3, 16, 16, generator=gen) < 0.7, target,
                       torch.randint(0, 4, (3, 16, 16), generator=gen))
    ours, per_class = mean_iou(pred, target, 4)
    oracle = jaccard_score(target.flatten(), pred.flatten(), average=None)
    np.testing.assert_allclose(per_class, oracle)
    assert ours == pytest.approx(oracle.mean())
    zeros = torch.zeros(4, dtype=torch.long)
    assert math.isnan(mean_iou(zeros, zeros, 3)[1][2])  # class 2 in neither map


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["backbone_detection", "backbone_segmentation"])
def test_example_trains_and_reports(name, capsys):
    argv = ["--steps", STEPS[name], "--train-images", "96", "--test-images", "32"]
    report = _example(name).main(argv)
    for arm in ("pretrained", "untrained"):
        assert 0.0 <= report[arm]["value"] <= 1.0 and math.isfinite(report[arm]["final_loss"])
    assert report["metric"] in capsys.readouterr().out
    if name == "backbone_segmentation":  # Fashion-MNIST features already separate the shapes
        assert report["pretrained"]["value"] > report["untrained"]["value"]
