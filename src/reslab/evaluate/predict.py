"""``predict``: top-k labels with probabilities for image files, folders, globs, PIL images
and image tensors.

Images are preprocessed exactly as at evaluation time (the checkpoint's ``preprocess``),
decoded a batch at a time on a few threads, and run through the fast inference path.
A file that cannot be read is reported with its reason and skipped, never fatal.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import IMAGE_EXTENSIONS
from ..errors import ConfigError, DataError
from .inference import fast_model, model_device


@dataclass
class Prediction:
    """The model's answer for one image.

    Attributes:
        path: the image file, or ``<image N>`` / ``<tensor N>`` for an in-memory input.
        labels: top-k class names, most probable first (empty when ``error`` is set).
        indices: their class indices.
        probs: their probabilities in 0..1.
        error: why the file was skipped (unreadable, not an image...), else None.
    """

    path: str
    labels: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None

    @property
    def prob(self) -> float | None:
        return self.probs[0] if self.probs else None

    def to_dict(self) -> dict:
        if not self.ok:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.label,
            "prob": self.prob,
            "topk": [{"label": lb, "index": i, "prob": p}
                     for lb, i, p in zip(self.labels, self.indices, self.probs)],
        }


def expand_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive, image extensions only) and globs -> sorted image files.

    Args:
        paths: what the user typed.
    Returns:
        ``(files, missing)``: files in the order given (each folder's files sorted),
        without duplicates, and ``(path, reason)`` for arguments that matched nothing.
    """
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            files.append(str(p))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                missing.append((str(raw), "folder holds no image files"))
            for q in found:
                add(q)
        elif p.is_file():
            add(p)  # named explicitly: tried whatever its extension
        elif glob.has_magic(str(raw)):
            hits = sorted(glob.glob(str(raw), recursive=True))
            hits = [Path(h) for h in hits if Path(h).is_file()]
            if not hits:
                missing.append((str(raw), "pattern matched no files"))
            for q in hits:
                add(q)
        else:
            missing.append((str(raw), "no such file or folder"))
    return files, missing


def _load(path: str, transform, in_chans: int) -> torch.Tensor | str:
    """The preprocessed (C, H, W) tensor, or the reason the file could not be used."""
    from ..data import load_image

    try:
        return transform(load_image(path, in_chans))
    except DataError as e:
        msg = str(e)
        return msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg  # path shown anyway
    except Exception as e:  # a decoder crash on a corrupt file must not stop the batch
        return f"{type(e).__name__}: {e}"


def _transform_image(image, transform) -> torch.Tensor | str:
    """A PIL image or an image tensor through the eval pipeline, or why it cannot be used."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            return f"expected an image tensor (C, H, W), received shape {tuple(image.shape)}"
        if image.is_floating_point() and (image.min() < 0 or image.max() > 1):
            return ("a float image tensor must hold values in 0..1 (received "
                    f"{float(image.min()):.3g}..{float(image.max()):.3g}); pass raw pixels, "
                    "not an already normalised input")  # fmt: skip
    try:
        return transform(image)
    except Exception as e:  # an odd mode or size must not stop the other images
        return f"{type(e).__name__}: {e}"


def _items(inputs) -> list[tuple[str, object]]:
    """What to predict, in the order given: ``(name, source)`` where source is a file path,
    a PIL image, an image tensor, or an error string for an argument that matched nothing."""
    from PIL import Image

    if isinstance(inputs, (str, os.PathLike, Image.Image, torch.Tensor)):
        inputs = [inputs]
    items: list[tuple[str, object]] = []
    seen: set[str] = set()
    for n, item in enumerate(inputs):
        if isinstance(item, torch.Tensor) and item.dim() == 4:  # a batch (B, C, H, W)
            items += [(f"<tensor {n}[{i}]>", t) for i, t in enumerate(item)]
        elif isinstance(item, torch.Tensor):
            items.append((f"<tensor {n}>", item))
        elif isinstance(item, Image.Image):
            items.append((getattr(item, "filename", "") or f"<image {n}>", item))
        elif isinstance(item, (str, os.PathLike)):
            files, missing = expand_paths([item])
            items += [(p, f"error: {why}") for p, why in missing]
            for f in files:
                if (key := str(Path(f).resolve())) not in seen:
                    seen.add(key)
                    items.append((f, Path(f)))
        else:
            raise ConfigError(f"predict takes image paths, folders, globs, PIL images or image "
                              f"tensors; received a {type(item).__name__}.")  # fmt: skip
    return items


def _prepare(source, transform, in_chans: int) -> torch.Tensor | str:
    if isinstance(source, str) and source.startswith("error: "):
        return source[len("error: "):]
    if isinstance(source, Path):
        return _load(str(source), transform, in_chans)
    return _transform_image(source, transform)


def predict(
    model: nn.Module,
    inputs,
    preprocess: dict | None = None,
    classes: list[str] | None = None,
    *,
    topk: int = 5,
    batch_size: int = 64,
    temperature: float | None = None,
    precision: str = "auto",
    workers: int = 4,
    log=None,
) -> list[Prediction]:
    """Top-k predictions for image files, folders, globs, PIL images or image tensors.

    Args:
        model: the trained classifier (``load_run(...).model`` carries its preprocess and
            classes, so the two arguments below can be left out).
        inputs: one of, or a list mixing: a file, a folder (recursive), a glob, a PIL image,
            an image tensor (C, H, W) or a batch of them (B, C, H, W), uint8 0..255 or float
            0..1. Every image is resized, cropped and normalised like the training's.
        preprocess: the checkpoint's preprocessing (default: ``model.preprocess``).
        classes: class names, index -> name (default: ``model.classes``).
        topk: how many labels per image (capped at the number of classes).
        batch_size: images per forward pass.
        temperature: optional fitted temperature: probabilities from ``softmax(logits / T)``.
        precision: ``auto`` (fast path), ``bf16``, ``fp16`` or ``fp32``.
        workers: decoding threads.
        log: optional ``print``-like callable for notes.
    Returns:
        One ``Prediction`` per image, in order (``path`` is the file, or ``<image N>`` /
        ``<tensor N>``); unusable inputs come back with ``error`` set instead of labels.
    """
    from ..data import eval_transform
    from ..engine.progress import track

    preprocess = preprocess or getattr(model, "preprocess", None)
    classes = classes or getattr(model, "classes", None)
    if not preprocess or not classes:
        raise ConfigError("predict needs the model's preprocess and classes: pass them, or a "
                          "model from reslab.evaluate.load_run, which carries both.")  # fmt: skip
    if topk < 1:
        raise ConfigError(f"topk must be >= 1, received {topk}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, received {batch_size}.")
    if len(classes) != getattr(model, "num_classes", len(classes)):
        raise ConfigError(f"{len(classes)} class names for a model with {model.num_classes} outputs.")
    items = _items(inputs)
    transform, in_chans = eval_transform(preprocess), int(preprocess["input_size"][0])
    device, k, fn = model_device(model), min(topk, len(classes)), None
    results: list[Prediction] = []
    starts = range(0, len(items), batch_size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in track(starts, "predict"):
            chunk = items[start : start + batch_size]
            loaded = list(pool.map(lambda it: _prepare(it[1], transform, in_chans), chunk))
            good = [t for t in loaded if isinstance(t, torch.Tensor)]
            if good:
                x = torch.stack(good).to(device)  # (B, C, H, W)
                if fn is None:
                    fn, _ = fast_model(model, x, precision, log=log, num_images=len(items))
                probs = F.softmax(fn(x).float().double() / (temperature or 1.0), dim=1)
                top = iter(zip(*(v.tolist() for v in probs.topk(k, dim=1))))
            for (name, _), t in zip(chunk, loaded):
                if not isinstance(t, torch.Tensor):
                    results.append(Prediction(name, error=t))
                    continue
                pv, iv = next(top)
                results.append(Prediction(name, [classes[i] for i in iv], list(iv), list(pv)))
    return results
