"""Semantic segmentation on a reslab backbone: a light U-Net/FPN decoder over
``forward_stages``, trained briefly on generated shapes, with reslab's Fashion-MNIST resnet20
weights and without them. Prints the mean IoU for both (docs/backbones.md).

    python examples/backbone_segmentation.py --steps 150
    python examples/backbone_segmentation.py --steps 20 --json      # a smoke run

The pieces, to reuse on your own data (reslab.experiments.backbones):
    segmenter = StageSegmenter(backbone, num_classes, in_chans, mean=mean, std=std)
    logits = segmenter(images)                                        # (B, K, H, W)
"""

from reslab.experiments.backbone_study import example_main


def main(argv=None) -> dict:
    return example_main("segmentation", argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
