"""Images for parity checks and int8 calibration: real ones when the data is at hand.

A checkpoint's config names its dataset; when it can be loaded here (no download), the
parity check runs on its validation images and int8 calibrates on its training images.
Otherwise both use generated images pushed through the checkpoint's own preprocessing,
and the printed source says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image


@dataclass
class Samples:
    """Preprocessed fp32 images for checking and calibrating an exported model.

    Attributes:
        images: (N, C, H, W) parity images, normalised as the model expects.
        labels: (N,) int64 when the images are labelled (real data), else None.
        calibration: (M, C, H, W) images for int8 ranges (a different split when possible).
        source: e.g. ``fashion-mnist val`` or ``generated``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    calibration: torch.Tensor
    source: str


def _take(split, preprocess: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import make_loader

    loader = make_loader(
        split, batch_size=min(n, 128), train=False, preprocess=preprocess, workers=0
    )
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x.float().cpu())
        ys.append(y.cpu())
        seen += len(x)
        if seen >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def dataset_samples(
    source: str, preprocess: dict, n: int = 256, n_calibration: int = 256
) -> Samples:
    """Validation images (parity) and training images (calibration) of a dataset.

    Args:
        source: what ``reslab.data.load_dataset`` accepts (folder, CSV, ``fashion-mnist``...).
        preprocess: the checkpoint's preprocessing record (size, mean, std).
        n, n_calibration: how many images of each.
    Returns:
        ``Samples`` with labels.
    Raises:
        DataError (or ConfigError) when the data cannot be loaded without downloading.
    """
    from ..data import load_dataset

    c, h, _ = preprocess["input_size"]
    bundle = load_dataset(source, image_size=h, in_chans=c, check=False, log=None, download=False)
    held_out = bundle.val or bundle.test or bundle.train
    images, labels = _take(held_out, preprocess, n)
    calibration, _ = _take(bundle.train, preprocess, n_calibration)
    return Samples(images, labels, calibration, f"{source} {held_out.name}")


def generated_samples(preprocess: dict, n: int = 64, seed: int = 0) -> Samples:
    """Synthetic photos-like images (gradients, shapes, noise) through ``preprocess``.

    They exercise the whole input range of the real pipeline (resize, crop, normalise),
    which is what a parity check needs; they carry no labels.
    """
    from ..data import eval_transform

    transform = eval_transform(preprocess)
    c = preprocess["input_size"][0]
    side = int(preprocess.get("resize", preprocess["input_size"][1]))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / max(side - 1, 1)
    out = []
    for _ in range(n):
        base = np.stack([rng.uniform() * xx + rng.uniform() * yy for _ in range(3)], -1)
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.35)]
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        base[disk] = rng.uniform(size=3)
        base += rng.normal(0, 0.05, base.shape)
        pixels = (np.clip(base, 0, 1) * 255).astype(np.uint8)
        img = Image.fromarray(pixels, "RGB")
        out.append(transform(img.convert("L") if c == 1 else img))
    images = torch.stack(out).float()
    return Samples(images, None, images, "generated")


def samples_for(
    preprocess: dict,
    data: str | None,
    n: int = 256,
    n_calibration: int = 256,
    log: Callable[[str], None] | None = logging.getLogger("reslab.export").info,
) -> Samples:
    """Real samples from ``data`` when it loads, generated ones otherwise (saying why)."""
    say = log or (lambda _m: None)
    if data:
        try:
            return dataset_samples(data, preprocess, n, n_calibration)
        except Exception as e:  # offline, moved, or not a dataset: check on generated images
            say(
                f"note: cannot load {data!r} for the parity check ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); using generated images instead"
            )
    else:
        say("note: the checkpoint names no dataset; checking parity on generated images")
    return generated_samples(preprocess, n=min(n, 64))
