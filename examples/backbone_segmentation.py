"""Semantic segmentation on a reslab backbone: a light U-Net/FPN decoder over
``forward_stages``, trained briefly on generated shapes, with reslab's Fashion-MNIST resnet20
weights and without them. Prints the mean IoU for both (docs/backbones.md).

    python examples/backbone_segmentation.py --steps 150
    python examples/backbone_segmentation.py --steps 20 --json      # a smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared report printer

from backbone_detection import main as _main  # noqa: E402


def main(argv=None) -> dict:
    return _main(argv, task="segmentation")


if __name__ == "__main__":
    main()
