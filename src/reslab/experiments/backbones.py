"""ResNet as a backbone: Faster R-CNN + FPN and a segmentation decoder over ``forward_stages``,
trained briefly on generated shapes, each compared with the same head on an untrained backbone.

The one interface used is ``model.forward_stages(x)``: a list of every stage's output, e.g.
(B, 16, H, W), (B, 32, H/2, W/2), (B, 64, H/4, W/4) for resnet20 (CIFAR stem), or C2..C5 for
resnet50. Nothing here looks inside the network, so any reslab model works.

    backbone = reslab.create_model("resnet20", in_chans=1, num_classes=0,
                                   pretrained="reslab:resnet20_fashion_mnist")
    detector = build_detector(backbone, num_classes=len(SHAPES))       # torchvision FasterRCNN
    segmenter = StageSegmenter(backbone, num_classes=len(SHAPES))       # logits (B, K, H, W)
    report = compare_backbones("detection", steps=150)                  # pretrained vs untrained
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, box_iou
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

SHAPES = ("background", "square", "disc", "triangle")  # class 0 is the background


# ----------------------------------------------------------------------------- data
@dataclass
class ShapesData:
    """Generated scenes: ``images`` float (N, C, S, S) in 0..1, ``masks`` int64 (N, S, S) with
    class ids, and per image ``boxes`` float (k, 4) x0 y0 x1 y1 and ``labels`` int64 (k,)."""

    images: torch.Tensor
    masks: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]


def _shape_mask(kind: int, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
    if kind == 2:  # disc
        c, r = side / 2 - 0.5, side / 2
        inside &= (xx - x0 - c) ** 2 + (yy - y0 - c) ** 2 <= r * r
    elif kind == 3:  # triangle pointing up: half-width grows with the row
        inside &= np.abs(xx - x0 - (side - 1) / 2) <= (yy - y0 + 1) / 2
    return inside


def make_shapes(n: int, size: int = 64, in_chans: int = 1, seed: int = 0,
                max_shapes: int = 2) -> ShapesData:
    """Squares, discs and triangles, dark or bright, on mid-grey noise; no two overlap.

    Args:
        n: images.
        size: side in pixels.
        in_chans: 1 (grey) or 3 (each shape gets a colour).
        seed: the scenes are a function of it.
        max_shapes: shapes per image, 1..max_shapes.
    Returns:
        A ``ShapesData``.
    """
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(0.5, 0.12, (n, in_chans, size, size)), 0, 1).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    boxes, labels = [], []
    for i in range(n):
        taken, b, lab = np.zeros((size, size), bool), [], []
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            for _attempt in range(20):
                kind = int(rng.integers(1, len(SHAPES)))
                side = int(rng.integers(size // 5, size // 2))
                x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
                region = _shape_mask(kind, x0, y0, side, size)
                if not (region & taken).any():
                    break
            else:
                continue
            bright = rng.random() < 0.5  # luminance contrast either way, so grey works too
            colour = rng.uniform(0.8, 1.0, in_chans) if bright else rng.uniform(0.0, 0.2, in_chans)
            images[i][:, region] = colour[:, None]
            masks[i][region] = kind
            taken |= region
            ys, xs = np.nonzero(region)
            b.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            lab.append(kind)
        boxes.append(torch.tensor(b, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(lab, dtype=torch.int64))
    return ShapesData(torch.from_numpy(images), torch.from_numpy(masks), boxes, labels)


# ----------------------------------------------------------------------------- heads
def stage_channels(model: nn.Module, in_chans: int, size: int = 64) -> list[int]:
    """Channels of every stage, read from one dummy forward (no architecture lookup)."""
    was_training = model.training
    with torch.no_grad():
        outs = model.eval().forward_stages(torch.zeros(1, in_chans, size, size))
    model.train(was_training)
    return [o.shape[1] for o in outs]


class StagesWithFPN(nn.Module):
    """A reslab model's stages followed by a feature pyramid (Lin et al. 2017).

    Returns ``OrderedDict`` ``{"0": P_first, ..., "pool": P_extra}``, every map with
    ``out_channels`` channels: what torchvision's detection heads expect from a backbone.
    """

    def __init__(self, model: nn.Module, in_chans: int, out_channels: int = 64):
        super().__init__()
        self.body = model
        self.fpn = FeaturePyramidNetwork(stage_channels(model, in_chans), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        stages = self.body.forward_stages(x)
        return self.fpn(OrderedDict((str(i), s) for i, s in enumerate(stages)))


def build_detector(model: nn.Module, num_classes: int, in_chans: int = 1, size: int = 64,
                   mean=(0.5,), std=(0.25,)) -> FasterRCNN:
    """torchvision's Faster R-CNN on ``StagesWithFPN(model)``, sized for small images.

    Args:
        model: a reslab model; only ``forward_stages`` is used.
        num_classes: including the background.
        in_chans, size: the input images (the detector does not resize them).
        mean, std: normalisation per channel (the backbone's training statistics).
    Returns:
        A ``FasterRCNN``: ``model(images, targets)`` -> losses in train mode,
        ``model(images)`` -> ``[{"boxes", "labels", "scores"}]`` in eval mode.
    """
    backbone = StagesWithFPN(model, in_chans)
    levels = len(stage_channels(model, in_chans, size)) + 1  # the stages and the max-pool level
    sizes = tuple((8 * 2 ** i,) for i in range(levels))  # finest map, smallest anchors
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
    names = [str(i) for i in range(levels - 1)]
    rep = 256  # the box head's width; torchvision's 1024 is for 800 px COCO images
    return FasterRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes),
        min_size=size, max_size=size, image_mean=list(mean), image_std=list(std),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
        rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=64, box_batch_size_per_image=64, box_detections_per_img=10,
    )


class StageSegmenter(nn.Module):
    """A light U-Net/FPN decoder on ``forward_stages``: 1x1 laterals, top-down upsample-and-add,
    a 3x3 conv, per-pixel logits upsampled to the input size (B, num_classes, H, W)."""

    def __init__(self, model: nn.Module, num_classes: int, in_chans: int = 1, width: int = 32,
                 mean=(0.5,), std=(0.25,)):
        super().__init__()
        self.body = model
        chans = stage_channels(model, in_chans)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chans)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.body.forward_stages((x - self.mean) / self.std)
        y = self.lateral[-1](stages[-1])
        for lateral, s in zip(reversed(self.lateral[:-1]), reversed(stages[:-1])):
            y = F.interpolate(y, size=s.shape[-2:], mode="nearest") + lateral(s)
        y = self.classifier(self.smooth(y))  # (B, K, h, w) at the finest stage
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- metrics
def _interpolated_ap(tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+) from TP flags sorted by score."""
    tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
    recall = np.concatenate([[0.0], tps / num_gt, [1.0]])
    precision = np.concatenate([[0.0], tps / np.maximum(tps + fps, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def box_map(predictions: list[dict], targets: list[dict], num_classes: int,
            iou_threshold: float = 0.5) -> tuple[float, dict[int, float]]:
    """Mean average precision of boxes at one IoU threshold (VOC-style, greedy matching).

    Args:
        predictions: per image ``{"boxes" (k, 4), "scores" (k,), "labels" (k,)}``.
        targets: per image ``{"boxes" (m, 4), "labels" (m,)}``.
        num_classes: including the background (class 0, not scored).
        iou_threshold: a detection matches an unmatched ground truth box above it.
    Returns:
        (mAP over the classes that have ground truth, {class: AP}).
    """
    per_class = {}
    for c in range(1, num_classes):
        dets, num_gt, used = [], 0, {}
        for i, (p, t) in enumerate(zip(predictions, targets)):
            num_gt += int((t["labels"] == c).sum())
            used[i] = torch.zeros(int((t["labels"] == c).sum()), dtype=torch.bool)
            keep = p["labels"] == c
            dets += [(float(s), i, b) for s, b in zip(p["scores"][keep], p["boxes"][keep])]
        if num_gt == 0:
            continue
        dets.sort(key=lambda d: -d[0])
        tp = np.zeros(len(dets))
        for j, (_, i, box) in enumerate(dets):
            gt = targets[i]["boxes"][targets[i]["labels"] == c]
            if len(gt) == 0:
                continue
            ious = box_iou(box[None], gt)[0]
            ious[used[i]] = -1.0  # each ground truth box is found once
            best = int(ious.argmax())
            if ious[best] >= iou_threshold:
                tp[j], used[i][best] = 1.0, True
        per_class[c] = _interpolated_ap(tp, num_gt) if len(dets) else 0.0
    return (float(np.mean(list(per_class.values()))) if per_class else 0.0), per_class


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[float, list]:
    """Mean intersection-over-union of label maps over the classes present in either.

    Returns:
        (mIoU, IoU per class, NaN for a class in neither map).
    """
    cm = torch.bincount(target.flatten() * num_classes + pred.flatten(),
                        minlength=num_classes ** 2).reshape(num_classes, num_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.tensor(float("nan")))
    return float(iou[union > 0].mean()), iou.tolist()
