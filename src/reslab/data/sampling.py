"""Which images an epoch visits, in which order, on which rank; and class weights.

The order depends only on (seed, epoch): a resumed or re-run epoch visits exactly the same
images. With ``world_size > 1`` every rank takes a disjoint slice of the same permutation,
padded (as ``torch.utils.data.DistributedSampler`` does) so all ranks run the same number
of batches and no collective waits forever.
"""

from __future__ import annotations

import hashlib
import struct

import torch

from ..errors import ConfigError

SAMPLERS = ("random", "balanced", "sequential")


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. seed, epoch, batch): nearby inputs
    give unrelated streams, unlike ``seed + epoch``."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(*parts)``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def epoch_indices(
    labels: torch.Tensor,
    *,
    seed: int,
    epoch: int,
    sampler: str = "random",
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Indices one rank visits in one epoch.

    Args:
        labels: int64 (N,) labels of the split (used by the balanced sampler).
        seed, epoch: the order depends only on these.
        sampler: ``random`` (a permutation), ``balanced`` (N draws with replacement, each
            class equally likely) or ``sequential`` (0..N-1, for evaluation).
        rank, world_size: this process's slice of the order (DDP).
    Returns:
        int64 (ceil(N / world_size),) indices.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler={sampler!r} is not one of {SAMPLERS}.")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank} must be in [0, world_size={world_size}).")
    n = len(labels)
    gen = generator(seed, epoch, 0x5A3F)
    if sampler == "sequential":
        order = torch.arange(n)
    elif sampler == "random":
        order = torch.randperm(n, generator=gen)
    else:
        counts = torch.bincount(labels).float()
        weights = 1.0 / counts[labels]  # each class gets the same total weight
        order = torch.multinomial(weights, n, replacement=True, generator=gen)
    per_rank = -(-n // world_size)
    if per_rank * world_size > n:
        order = torch.cat([order, order[: per_rank * world_size - n]])
    return order[rank::world_size]


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for a weighted loss ("auto"), mean 1 over present classes.

    Args:
        labels: int64 (N,) training labels.
        num_classes: number of classes.
    Returns:
        float32 (num_classes,); weight_c proportional to 1 / count_c (0 for absent classes).
    """
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.int64), minlength=num_classes).float()
    if len(counts) > num_classes:
        raise ConfigError(f"labels go up to {len(counts) - 1} but num_classes={num_classes}.")
    present = counts > 0
    if not present.any():
        raise ConfigError("class_weights needs at least one label.")
    inv = torch.where(present, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return inv / inv[present].mean()
