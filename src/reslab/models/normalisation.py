"""The one set of normalisation constants (ImageNet's), and their form for other channel counts."""

from __future__ import annotations

from collections.abc import Sequence

# Per-channel RGB mean and std of ImageNet-1k's training images, the statistics every
# torchvision, timm and Hugging Face ResNet was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stats_for_channels(
    mean: Sequence[float], std: Sequence[float], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean``/``std`` with one value per input channel.

    Statistics that already have ``in_chans`` values are returned as they are. Otherwise each
    channel gets the average: for a grayscale model built from RGB statistics, the gray value
    is the average of R, G and B (the same rule ``reslab evaluate`` and ``export`` apply).

    Args:
        mean, std: the statistics as recorded (e.g. ImageNet's three values).
        in_chans: the model's input channels.
    Returns:
        ``(mean, std)`` as tuples of length ``in_chans``.
    """
    if len(mean) == in_chans and len(std) == in_chans:
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    avg_mean, avg_std = sum(mean) / len(mean), sum(std) / len(std)
    return (avg_mean,) * in_chans, (avg_std,) * in_chans
