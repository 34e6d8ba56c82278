"""Object detection on a reslab backbone: torchvision's Faster R-CNN + FPN over
``forward_stages``, trained briefly on generated shapes, with reslab's Fashion-MNIST resnet20
weights and without them. Prints box mAP@0.5 for both (docs/backbones.md).

    python examples/backbone_detection.py --steps 150            # a few minutes on 2 CPU cores
    python examples/backbone_detection.py --steps 20 --json      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging

from reslab.experiments.backbone_study import compare_backbones


def print_report(report: dict) -> None:
    """A two-row table: the metric for each backbone, the seconds and the last loss."""
    print(f"{report['task']}: {report['metric']} on {report['test_images']} held-out scenes, "
          f"{report['steps']} steps on {report['train_images']} training scenes")
    for arm in ("pretrained", "untrained"):
        r = report[arm]
        print(f"  {arm:10s} backbone  {r['value']:.3f}   ({r['seconds']:.0f} s, "
              f"final loss {r['final_loss']:.3f})")


def main(argv=None, task: str = "detection") -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per backbone")
    p.add_argument("--train-images", type=int, default=256)
    p.add_argument("--test-images", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = compare_backbones(task, args.steps, args.train_images, args.test_images,
                               args.size, args.seed)
    print(json.dumps(report, indent=2) if args.json else "", end="")
    print_report(report)
    return report


if __name__ == "__main__":
    main()
