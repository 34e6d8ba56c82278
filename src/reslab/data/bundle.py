"""The two containers every data source returns: a ``Split`` and a ``DataBundle``.

A split holds its labels and either the decoded images (uint8, in memory) or the file
paths (decoded by loader workers). Everything downstream (loaders, evaluation, export)
reads these fields and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Split:
    """One split of a dataset (train, val or test).

    Attributes:
        name: ``train``, ``val`` or ``test``.
        labels: int64 tensor (N,), class indices into ``DataBundle.classes``.
        images: uint8 tensor (N, C, H, W) when the split lives in memory, else None.
        paths: file paths (N,) when the split is streamed from disk, else None (built-ins).
        hflip: whether horizontal flips keep the meaning of an image (False for digits).
        skipped: ``(path, reason)`` of files dropped while decoding (never a silent skip).
    """

    name: str
    labels: torch.Tensor
    images: torch.Tensor | None = None
    paths: list[str] | None = None
    hflip: bool = True
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.images is None and self.paths is None:
            raise ValueError(f"split {self.name!r} needs images or paths")
        n = len(self.labels)
        if self.images is not None and len(self.images) != n:
            raise ValueError(f"split {self.name!r}: {len(self.images)} images but {n} labels")
        if self.images is None and len(self.paths) != n:
            raise ValueError(f"split {self.name!r}: {len(self.paths)} paths but {n} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def class_counts(self, num_classes: int) -> list[int]:
        """Number of images of each class."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def subset(self, index: torch.Tensor | list[int], name: str | None = None) -> "Split":
        """A new split holding the rows ``index`` (same storage kind)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return Split(
            name=name or self.name,
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            paths=None if self.paths is None else [self.paths[i] for i in index.tolist()],
            hflip=self.hflip,
            skipped=list(self.skipped),  # still dropped from the parent: keep saying so
        )

    def __repr__(self) -> str:
        where = f"images {tuple(self.images.shape)} uint8" if self.in_memory else "files"
        return f"Split({self.name!r}, n={len(self)}, {where})"


@dataclass
class DataBundle:
    """A dataset ready for training.

    Attributes:
        source: what was asked for (a path or a built-in name).
        classes: index -> class name.
        train, val, test: the splits (val and test may be None).
        in_chans: channels of the stored images (1 grey, 3 RGB).
        preprocess: ``{"input_size": [C, H, W], "resize", "crop", "mean", "std",
            "interpolation"}``; saved in every checkpoint, reused by predict and export.
        split_info: how the splits were made (seed, fraction, counts), saved with the run.
        health: the fast health check (``HealthReport.to_dict()``) plus files skipped at
            decode time, or None when the check was off.
    """

    source: str
    classes: list[str]
    train: Split
    val: Split | None
    test: Split | None
    in_chans: int
    preprocess: dict[str, Any]
    split_info: dict[str, Any]
    health: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, Split]:
        """The splits that exist, by name."""
        return {s.name: s for s in (self.train, self.val, self.test) if s is not None}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        return (
            f"DataBundle({self.source!r}, {len(self.classes)} classes, {parts}, "
            f"input_size={self.preprocess.get('input_size')})"
        )


def check_classes(expected: list[str], found: list[str], what: str = "the checkpoint") -> None:
    """Raises ``DataError`` unless two class lists match index for index.

    Args:
        expected: classes saved with ``what`` (e.g. a checkpoint's ``classes``).
        found: classes of the data being used with it.
        what: named in the message.
    """
    from ..errors import DataError

    if list(expected) == list(found):
        return
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if not missing and not extra:
        detail = f"same names in a different order: {what} has {list(expected)}, the data {list(found)}"
    else:
        detail = f"only in {what}: {missing}; only in the data: {extra}"
    raise DataError(
        f"the data's classes do not match {what} ({detail}). Class index i must mean the same "
        "class in both; use the same class folders (or CSV labels) the model was trained on."
    )
