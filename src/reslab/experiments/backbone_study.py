"""Does a reslab-pretrained backbone help detection and segmentation? The same head trained
for the same steps on generated shapes, once on reslab's Fashion-MNIST resnet20 and once on
the same network untrained; box mAP@0.5 and mean IoU on held-out scenes.

    report = compare_backbones("detection", steps=150)  # {"pretrained": {"value": ...}, ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model
from .backbones import (
    SHAPES,
    ShapesData,
    StageSegmenter,
    box_map,
    build_detector,
    make_shapes,
    mean_iou,
)

log = logging.getLogger("reslab.experiments.backbone_study")

PRETRAINED = "reslab:resnet20_fashion_mnist"  # ships with reslab: offline, CIFAR-style stem
TASKS = ("detection", "segmentation")


def make_backbone(pretrained: bool, seed: int = 0) -> tuple[nn.Module, list, list]:
    """resnet20 without a classifier, with reslab's Fashion-MNIST weights or untrained.

    Returns:
        (model, mean, std): the normalisation the pretrained weights were trained with, used
        for both so the only difference between the arms is the weights.
    """
    torch.manual_seed(seed)  # the untrained arm and the heads start from the same draw
    model = create_model("resnet20", num_classes=0, in_chans=1,
                         pretrained=PRETRAINED if pretrained else None)
    pre = getattr(create_model("resnet20", in_chans=1, pretrained=PRETRAINED), "preprocess", {})
    return model, list(pre.get("mean", [0.5])), list(pre.get("std", [0.25]))


def _targets(data: ShapesData, idx: list[int]) -> list[dict]:
    return [{"boxes": data.boxes[i], "labels": data.labels[i]} for i in idx]


def _run_steps(opt: torch.optim.Optimizer, lr: float, steps: int, loss_of_step) -> list[float]:
    """One-cycle schedule over ``steps`` optimizer steps; ``loss_of_step()`` returns the
    step's loss. Returns the loss of every step."""
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in range(steps):
        loss = loss_of_step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def train_detector(detector: nn.Module, data: ShapesData, steps: int, batch_size: int = 8,
                   lr: float = 0.01, seed: int = 0) -> list[float]:
    """SGD on the summed Faster R-CNN losses; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9, weight_decay=1e-4)
    detector.train()

    def loss_of_step() -> torch.Tensor:
        idx = torch.randint(len(data.images), (batch_size,), generator=gen).tolist()
        return sum(detector(list(data.images[idx]), _targets(data, idx)).values())

    return _run_steps(opt, lr, steps, loss_of_step)


@torch.no_grad()
def evaluate_detector(detector: nn.Module, data: ShapesData, batch_size: int = 32) -> float:
    """Box mAP@0.5 on ``data``."""
    detector.eval()
    preds = []
    for start in range(0, len(data.images), batch_size):
        preds += detector(list(data.images[start:start + batch_size]))
    return box_map(preds, _targets(data, list(range(len(data.images)))), len(SHAPES))[0]


def train_segmenter(segmenter: nn.Module, data: ShapesData, steps: int, batch_size: int = 16,
                    lr: float = 3e-3, seed: int = 0) -> list[float]:
    """AdamW on per-pixel cross-entropy; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(segmenter.parameters(), lr=lr, weight_decay=1e-4)
    segmenter.train()

    def loss_of_step() -> torch.Tensor:
        idx = torch.randint(len(data.images), (batch_size,), generator=gen)
        return F.cross_entropy(segmenter(data.images[idx]), data.masks[idx])

    return _run_steps(opt, lr, steps, loss_of_step)


@torch.no_grad()
def evaluate_segmenter(segmenter: nn.Module, data: ShapesData, batch_size: int = 64) -> float:
    """Mean IoU (background included) on ``data``."""
    segmenter.eval()
    pred = torch.cat([segmenter(data.images[s:s + batch_size]).argmax(1)
                      for s in range(0, len(data.images), batch_size)])
    return mean_iou(pred, data.masks, len(SHAPES))[0]


def run_arm(task: str, pretrained: bool, train: ShapesData, test: ShapesData, steps: int,
            seed: int = 0) -> dict:
    """Trains one head on one backbone; returns ``{"metric", "value", "seconds", "loss"}``."""
    model, mean, std = make_backbone(pretrained, seed)
    start = time.perf_counter()
    if task == "detection":
        head = build_detector(model, len(SHAPES), 1, train.images.shape[-1], mean, std)
        losses = train_detector(head, train, steps, seed=seed)
        value, metric = evaluate_detector(head, test), "box mAP@0.5"
    else:
        head = StageSegmenter(model, len(SHAPES), 1, mean=mean, std=std)
        losses = train_segmenter(head, train, steps, seed=seed)
        value, metric = evaluate_segmenter(head, test), "mean IoU"
    seconds = time.perf_counter() - start
    log.info("%s, %s backbone: %s %.3f after %d steps (%.0f s)", task,
             "pretrained" if pretrained else "untrained", metric, value, steps, seconds)
    return {"metric": metric, "value": value, "seconds": round(seconds, 1),
            "final_loss": sum(losses[-10:]) / len(losses[-10:])}


def compare_backbones(task: str, steps: int = 150, train_images: int = 256,
                      test_images: int = 64, size: int = 64, seed: int = 0) -> dict:
    """The same head on a pretrained and on an untrained backbone.

    Args:
        task: ``detection`` (Faster R-CNN + FPN) or ``segmentation`` (stage decoder).
        steps: optimizer steps per arm.
        train_images, test_images: generated scenes (the test scenes use another seed).
        size: image side in pixels.
        seed: data and initialisation seed.
    Returns:
        ``{"task", "metric", "steps", "pretrained": {...}, "untrained": {...}}``.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {', '.join(TASKS)}.")
    if steps < 1:
        raise ValueError(f"steps={steps!r}: train for at least 1 step.")
    train = make_shapes(train_images, size, seed=seed)
    test = make_shapes(test_images, size, seed=seed + 10_000)
    arms = {name: run_arm(task, name == "pretrained", train, test, steps, seed)
            for name in ("pretrained", "untrained")}
    return {"task": task, "metric": arms["pretrained"]["metric"], "steps": steps,
            "train_images": train_images, "test_images": test_images, **arms}


def format_report(report: dict) -> str:
    """A few lines: the metric for each backbone, the seconds and the last loss."""
    lines = [f"{report['task']}: {report['metric']} on {report['test_images']} held-out scenes, "
             f"{report['steps']} steps on {report['train_images']} training scenes"]
    for arm in ("pretrained", "untrained"):
        r = report[arm]
        lines.append(f"  {arm:10s} backbone  {r['value']:.3f}   ({r['seconds']:.0f} s, "
                     f"final loss {r['final_loss']:.3f})")
    return "\n".join(lines)


def example_main(task: str, argv=None, description: str = "") -> dict:
    """The command line of examples/backbone_{detection,segmentation}.py; prints the report."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per backbone")
    p.add_argument("--train-images", type=int, default=256)
    p.add_argument("--test-images", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = compare_backbones(task, args.steps, args.train_images, args.test_images,
                               args.size, args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    print(format_report(report))
    return report
