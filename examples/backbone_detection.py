"""Object detection on a reslab backbone: torchvision's Faster R-CNN + FPN over
``forward_stages``, trained briefly on generated shapes, with reslab's Fashion-MNIST resnet20
weights and without them. Prints box mAP@0.5 for both (docs/backbones.md).

    python examples/backbone_detection.py --steps 150            # minutes on 2 CPU cores
    python examples/backbone_detection.py --steps 20 --json      # a smoke run

The pieces, to reuse on your own data (reslab.experiments.backbones):
    detector = build_detector(backbone, num_classes, in_chans, size, mean, std)
    losses = detector.train()(images, targets); detections = detector.eval()(images)
"""

from reslab.experiments.backbone_study import example_main


def main(argv=None) -> dict:
    return example_main("detection", argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
