"""``predict``: top-k labels with probabilities for image files, folders and globs.

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
    """The model's answer for one file.

    Attributes:
        path: the image file.
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


def predict(
    model: nn.Module,
    paths: Iterable[str | os.PathLike],
    preprocess: dict,
    classes: list[str],
    *,
    topk: int = 5,
    batch_size: int = 64,
    temperature: float | None = None,
    precision: str = "auto",
    workers: int = 4,
    log=None,
) -> list[Prediction]:
    """Top-k predictions for image files, folders (recursive) or glob patterns.

    Args:
        model: the trained classifier.
        paths: files, folders or globs.
        preprocess: the checkpoint's preprocessing (input size, resize, mean, std).
        classes: class names, index -> name.
        topk: how many labels per image (capped at the number of classes).
        batch_size: images per forward pass.
        temperature: optional fitted temperature: probabilities from ``softmax(logits / T)``.
        precision: ``auto`` (fast path), ``bf16`` or ``fp32``.
        workers: decoding threads.
        log: optional ``print``-like callable for notes.
    Returns:
        One ``Prediction`` per file found, in order; unreadable files and arguments that
        matched nothing come back with ``error`` set instead of labels.
    """
    from ..data import eval_transform

    if topk < 1:
        raise ConfigError(f"topk must be >= 1, received {topk}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, received {batch_size}.")
    if len(classes) != getattr(model, "num_classes", len(classes)):
        raise ConfigError(
            f"{len(classes)} class names for a model with {model.num_classes} outputs."
        )
    files, missing = expand_paths(paths)
    results = {p: Prediction(p, error=why) for p, why in missing}
    order = [p for p, _ in missing] + files
    transform = eval_transform(preprocess)
    in_chans = int(preprocess["input_size"][0])
    device = model_device(model)
    k = min(topk, len(classes))
    fn = None
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            loaded = list(pool.map(lambda p: _load(p, transform, in_chans), chunk))
            good = [(p, t) for p, t in zip(chunk, loaded) if isinstance(t, torch.Tensor)]
            for p, t in zip(chunk, loaded):
                if not isinstance(t, torch.Tensor):
                    results[p] = Prediction(p, error=t)
            if not good:
                continue
            x = torch.stack([t for _, t in good]).to(device)  # (B, C, H, W)
            if fn is None:
                fn, _ = fast_model(model, x, precision, log=log, num_images=len(files))
            logits = fn(x).float()
            probs = F.softmax(logits.double() / (temperature or 1.0), dim=1)
            top = probs.topk(k, dim=1)
            for (p, _), pv, iv in zip(good, top.values.tolist(), top.indices.tolist()):
                results[p] = Prediction(p, [classes[i] for i in iv], iv, pv)
    return [results[p] for p in order]
