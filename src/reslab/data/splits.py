"""Deterministic stratified splits.

Every class is split in the same proportion (stratified), the shuffle depends only on the
seed, and exact duplicate files can be kept on the same side so that a split we make
ourselves never leaks a validation image into training.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def stratified_split(
    labels: torch.Tensor,
    fraction: float,
    seed: int,
    groups: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits indices into (keep, held_out), ``fraction`` of each class held out.

    Args:
        labels: int64 (N,) class of each item.
        fraction: share of each class to hold out, in [0, 1).
        seed: the shuffle depends only on this (same seed, same split).
        groups: optional group key per item (e.g. a content hash); items of a group always
            land on the same side, so duplicates cannot leak across the split.
    Returns:
        Two sorted int64 index tensors. Each class with at least 2 items keeps at least one
        item on each side when ``fraction > 0``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction!r} must be in [0, 1); e.g. 0.1 holds out 10%.")
    labels = np.asarray(torch.as_tensor(labels, dtype=torch.int64))
    n = len(labels)
    if groups is None:
        unit_first, unit_of = np.arange(n), np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group keys for {n} labels")
        # unit = group of identical items, represented by its first member (in item order)
        keys = np.asarray(groups) if not isinstance(groups, np.ndarray) else groups
        if keys.dtype == object:
            keys = np.unique(keys.astype(str), return_inverse=True)[1].reshape(-1)
        _, unit_first, unit_of = np.unique(keys, return_index=True, return_inverse=True)
        unit_of = unit_of.reshape(-1)
    unit_labels = labels[unit_first]

    gen = torch.Generator().manual_seed(int(seed))
    held_unit = np.zeros(len(unit_first), dtype=bool)
    for c in np.unique(unit_labels).tolist():
        members = np.nonzero(unit_labels == c)[0]
        members = members[torch.randperm(len(members), generator=gen).numpy()]
        k = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        held_unit[members[:k]] = True
    held = held_unit[unit_of]
    return torch.from_numpy(np.nonzero(~held)[0]), torch.from_numpy(np.nonzero(held)[0])


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` items with (as nearly as possible) equal counts per class.

    Args:
        labels: int64 (N,).
        n: how many to keep (all if n >= N).
        seed: which ones.
    Returns:
        Sorted int64 indices.
    """
    if n >= len(labels):
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=gen)
    classes = labels.unique().tolist()
    per_class = {c: n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
    keep = []
    for i in order.tolist():
        c = int(labels[i])
        if per_class[c] > 0:
            per_class[c] -= 1
            keep.append(i)
    return torch.tensor(sorted(keep), dtype=torch.int64)


def limit_split(split, n: int | None, seed: int):
    """The first ``n`` images of a seeded shuffle (all of them when ``n`` is None or larger)."""
    if split is None or n is None or n >= len(split):
        return split
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(order.sort().values)
