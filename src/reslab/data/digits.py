"""scikit-learn's handwritten digits (1,797 8x8 images, ships with scikit-learn, always offline).

The 0..16 pixel values are scaled to uint8 0..255. ``write_digits_folder`` writes the same
data out as an image folder, upscaled to 28x28, so the demo and the transfer experiment can
treat it like any user folder (and feed it to Fashion-MNIST-pretrained models).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .splits import stratified_split

CLASSES = [str(d) for d in range(10)]
TEST_FRACTION = 0.2  # digits has no official test set; this fixed, seed-independent hold-out is it
TEST_SEED = 0


def read_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images uint8 (1797, 1, 8, 8), labels int64 (1797,))."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the built-in 'digits' dataset ships with scikit-learn, which is not installed. "
            "Install it with: pip install 'reslab[digits]' (or pip install scikit-learn)."
        ) from None
    d = load_digits()
    x = torch.from_numpy(d.images).mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    return x.unsqueeze(1), torch.from_numpy(d.target).long()  # (N, 8, 8) -> (N, 1, 8, 8)


def digits_splits(val_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """Indices of the train/val/test splits used everywhere digits appear.

    Test is a fixed stratified 20% (the same for every seed, so results across seeds are
    comparable); val is ``val_fraction`` of the rest, drawn with ``seed``.
    """
    _, labels = read_digits()
    rest, test = stratified_split(labels, TEST_FRACTION, TEST_SEED)
    train, val = stratified_split(labels[rest], val_fraction, seed)
    return {"train": rest[train], "val": rest[val], "test": test}


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> (N, C, size, size), bilinear with antialiasing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return TF.resize(images, [size, size], antialias=True)


def write_digits_folder(
    root: str | os.PathLike,
    per_class: int | None = None,
    seed: int = 0,
    size: int = 28,
    val_fraction: float = 0.2,
) -> dict[str, dict[str, int]]:
    """Writes digits as PNG files: ``root/{train,val,test}/<digit>/<index>.png``.

    Args:
        root: output folder (created).
        per_class: training images kept per class (None keeps all); a few-label transfer
            study uses e.g. 5 or 10. Val and test are always complete.
        seed: chooses the val split and which training images are kept.
        size: output side in pixels (28 matches Fashion-MNIST models).
        val_fraction: share of the non-test images used for validation.
    Returns:
        ``{split: {class: count}}`` of the files written.
    """
    from PIL import Image

    images, labels = read_digits()
    images = upscale(images, size)
    idx = digits_splits(val_fraction, seed)
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"per_class={per_class!r}: keep at least 1 image per class.")
        gen = torch.Generator().manual_seed(int(seed))
        train = idx["train"]
        order = train[torch.randperm(len(train), generator=gen)]
        taken = {c: 0 for c in range(10)}
        keep = []
        for i in order.tolist():
            c = int(labels[i])
            if taken[c] < per_class:
                taken[c] += 1
                keep.append(i)
        idx["train"] = torch.tensor(sorted(keep), dtype=torch.int64)
    counts: dict[str, dict[str, int]] = {}
    for split, index in idx.items():
        counts[split] = {c: 0 for c in CLASSES}
        for i in index.tolist():
            cls = CLASSES[int(labels[i])]
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:04d}.png")
            counts[split][cls] += 1
    return counts
