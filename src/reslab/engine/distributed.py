"""Data-parallel training through torchrun and ``torch.distributed`` (no home-made launcher).

``torchrun --nproc_per_node=N -m reslab train ...`` starts N copies of the same command
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; every copy builds
the same model, wraps it in ``DistributedDataParallel`` (gradients are averaged across
processes during backward) and reads its own shard of every epoch. Only rank 0 writes
files and prints. Multi-node runs use the same command with torchrun's rendezvous
(``--nnodes``, ``--rdzv_backend=c10d``, ``--rdzv_endpoint=host:port``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (defaults: a single process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (torchrun sets them): {e}"
                          ) from None
    return DistInfo(rank, world, local)


def init_distributed(info: DistInfo, device: torch.device, timeout_s: float = 1800) -> None:
    """Joins the process group: NCCL for CUDA devices, Gloo for CPU.

    Args:
        info: from ``dist_from_env``.
        device: this process's device (``cuda:LOCAL_RANK`` on GPUs).
        timeout_s: how long a collective may wait for a slow peer before failing.
    """
    if not info.enabled or dist.is_initialized():
        return
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run a single process.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))  # fmt: skip


def cleanup_distributed() -> None:
    """Leaves the process group (safe to call when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sums ``t`` over all processes in place (a no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s Python object on every process (e.g. the run folder name)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """Wraps ``model`` for data-parallel training (optionally with SyncBatchNorm).

    Args:
        model: the model, already on ``device``.
        info: this process's place in the run.
        device: its device.
        sync_bn: convert BatchNorm to SyncBatchNorm (statistics over the global batch).
    Returns:
        ``DistributedDataParallel(model)``, or ``model`` itself for a single process.
    """
    if not info.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError(
                "model.sync_bn=true needs CUDA GPUs: PyTorch's SyncBatchNorm has no CPU kernel. "
                "On CPU leave it off (each process normalises over its own share of the batch) "
                "or use model.norm_layer=groupnorm, which does not depend on the batch."
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers=False: with SyncBatchNorm (or identical batches) buffers already agree;
    # without it each rank keeps its own running stats and rank 0's are saved, as torchvision does.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=not sync_bn)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner
