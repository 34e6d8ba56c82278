"""Grad-CAM overlays for image files: what the model looked at, next to what it said."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import ConfigError
from .gradcam import denormalize, grad_cam_with_logits, overlay
from .predict import _load, expand_paths


@dataclass
class Explanation:
    """One explained image: what was predicted, what is true (if known), where it looked."""

    path: str
    predicted: str | None = None
    prob: float | None = None
    explained: str | None = None  # the class the heat map is for (predicted unless --class)
    true: str | None = None  # the parent folder's name when it is a class
    png: str | None = None  # the overlay written
    error: str | None = None


def resolve_class(target: str | int | None, classes: list[str]) -> int | None:
    """A class given by name or index -> its index (None stays None)."""
    if target is None:
        return None
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    try:
        i = int(target)
    except (TypeError, ValueError):
        i = -1
    if 0 <= i < len(classes):
        return i
    shown = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
    raise ConfigError(
        f"class {target!r} is neither a class name nor an index 0..{len(classes) - 1}; "
        f"the classes are: {shown}."
    )


def explain_tensor(model, x, classes, preprocess, *, target_class=None, layer=None, size=224):
    """Grad-CAM figure data for a batch: per image ``(image, overlay, predicted, prob, explained)``.

    Args:
        x: (B, C, H, W) normalised images.
        size: display size of the longer side (small inputs are upscaled for legibility).
    """
    cams, logits, targets = grad_cam_with_logits(model, x, target_class, layer)
    probs = F.softmax(logits.double(), dim=1)
    p, pred = probs.max(dim=1)
    out = []
    for i in range(x.shape[0]):
        img = denormalize(x[i], preprocess["mean"], preprocess["std"])  # (H, W, 3) uint8
        ov = overlay(img, cams[i].cpu(), size=size)  # PIL, longer side = size
        base = Image.fromarray(img.numpy()).resize(ov.size, Image.NEAREST)
        out.append((base, ov, classes[int(pred[i])], float(p[i]), classes[int(targets[i])]))
    return out


def explain_images(
    model: nn.Module,
    paths: Iterable[str | os.PathLike],
    preprocess: dict,
    classes: list[str],
    out_dir: str | os.PathLike,
    *,
    layer: str | None = None,
    target_class: str | int | None = None,
    batch_size: int = 16,
) -> list[Explanation]:
    """Writes one Grad-CAM PNG per image: the input beside its overlay, titled with the
    predicted label (and the true one when the image sits in a folder named after a class).

    Args:
        model: the trained classifier (fp32 eager: Grad-CAM needs gradients).
        paths: files, folders or globs.
        preprocess: the checkpoint's preprocessing.
        classes: class names.
        out_dir: where the PNGs go (``<name>_gradcam.png``).
        layer: layer to explain (default the last stage).
        target_class: explain this class (name or index) instead of the predicted one.
    Returns:
        One ``Explanation`` per file; unreadable files have ``error`` set.
    """
    from ..data import eval_transform
    from . import plots as P

    target = resolve_class(target_class, classes)
    files, missing = expand_paths(paths)
    results = [Explanation(p, error=why) for p, why in missing]
    transform = eval_transform(preprocess)
    in_chans = int(preprocess["input_size"][0])
    device = next(model.parameters()).device
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        loaded = [(p, _load(p, transform, in_chans)) for p in chunk]
        good = [(p, t) for p, t in loaded if isinstance(t, torch.Tensor)]
        results += [Explanation(p, error=t) for p, t in loaded if not isinstance(t, torch.Tensor)]
        if not good:
            continue
        x = torch.stack([t for _, t in good]).to(device)
        for (p, _), (img, ov, pred, prob, explained) in zip(
            good, explain_tensor(model, x, classes, preprocess, target_class=target, layer=layer)
        ):
            true = Path(p).parent.name if Path(p).parent.name in classes else None
            title = f"predicted: {pred} ({100 * prob:.1f}%)"
            sub = " · ".join(
                s for s in (f"true: {true}" if true else "",
                            f"heat map for: {explained}" if explained != pred else "") if s
            )
            name = Path(p).stem
            stem, n = name, 1
            while stem in used:  # same file name in two folders: keep both
                n += 1
                stem = f"{name}_{n}"
            used.add(stem)
            png = out / f"{stem}_gradcam.png"
            ok = None if true is None else true == pred
            P.save_png(P.plot_explanation(img, ov, title, sub, ok), png)
            results.append(Explanation(p, pred, prob, explained, true, str(png)))
    return results
