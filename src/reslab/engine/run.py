"""``fit``: a ``TrainConfig`` in, a trained run folder out.

The order fails cheapest first: the config, the device and the process group here; then
``build.py`` opens the run folder and turns the config into the trainer's objects; then
``Trainer.run`` (``trainer.py``) trains.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import cpu_memory
from ..config import TrainConfig
from ..device import resolve_device, set_cpu_threads
from ..errors import ConfigError
from .artifacts import RunResult
from .batch_size import batch_sizes
from .build import TrainerBuilder
from .callbacks import Callback
from .distributed import DistInfo, cleanup_distributed, dist_from_env, init_distributed


def _device_for(cfg: TrainConfig, info: DistInfo) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        if torch.cuda.device_count() <= info.local_rank:
            raise ConfigError(
                f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} GPU(s) are "
                "visible; use --nproc_per_node at most the number of GPUs."
            )
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        # A bare "cuda" has no index, which set_device rejects on some releases.
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device.index)
    return device


class _GlobalSettings:
    """Sets threads and determinism for the run and puts the previous values back after."""

    def __init__(self, cfg: TrainConfig, device: torch.device, info: DistInfo):
        self.cfg, self.device, self.info = cfg, device, info

    def __enter__(self) -> "_GlobalSettings":
        self.prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.benchmark)  # fmt: skip
        threads = self.cfg.threads
        if threads is None and self.info.enabled and self.device.type == "cpu":
            # processes on one machine share its cores
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
            threads = max(1, len(os.sched_getaffinity(0)) // max(local, 1))
        self.threads = set_cpu_threads(threads)
        if self.cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.prev[0])
        torch.use_deterministic_algorithms(self.prev[1])
        torch.backends.cudnn.benchmark = self.prev[2]


def fit(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    data=None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> RunResult:
    """Trains a model as ``cfg`` says and writes the run folder.

    Args:
        cfg: the resolved ``TrainConfig`` (``load_config``).
        model: a prebuilt model (e.g. fine-tuning's pretrained one); default: built from
            ``cfg.model`` with as many classes as the data has.
        param_groups: optimizer groups ``[{"params": [...], "lr_scale": 0.1, "name": ...}]``;
            each group's rate is the scheduled rate times ``lr_scale``; norm/bias tensors of
            every group get no weight decay. Default: one group of all parameters.
        callbacks: ``Callback`` objects (see ``reslab.engine.callbacks``).
        resume: continue the run in ``cfg.out`` from ``checkpoints/last.pt``, exactly.
        data: a prebuilt ``DataBundle`` (default: ``load_dataset(cfg.data.source, ...)``).
        loss_fn: ``loss_fn(logits, targets) -> loss`` replacing the training cross-entropy
            (see ``TrainStep``); validation still reports the plain cross-entropy.
    Returns:
        A ``RunResult`` (also written as ``summary.json``).

    ``fit`` applies ``reslab.cpu_memory.configure()`` (glibc keeps freed memory: no page
    faults per batch on CPU) to the whole process; ``RESLAB_CPU_MEMORY=default`` opts out.
    Raises:
        ConfigError/DataError before training for bad settings or data;
        ``NonFiniteLossError`` when the loss diverges; ``TrainingInterrupted`` after
        SIGINT/SIGTERM (a checkpoint has been written).
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"fit expects a TrainConfig (from reslab.config.load_config), "
                          f"received {type(cfg).__name__}.")  # fmt: skip
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be reslab.engine.Callback instances (subclass it and "
                              f"override the hooks you need), received {type(cb).__name__}.")  # fmt: skip
    # No page faults per batch on CPU: glibc keeps freed memory from here on, for the whole
    # process (reslab.cpu_memory; RESLAB_CPU_MEMORY=default opts out).
    cpu_memory.configure()
    info = dist_from_env()
    batch_sizes(cfg, info.world_size)  # a batch that does not split fails here, before any work
    if resume and not cfg.out:
        raise ConfigError("resume=True needs cfg.out: the run folder to continue (--resume RUN_DIR).")
    device = _device_for(cfg, info)
    started_group = info.enabled and not torch.distributed.is_initialized()
    init_distributed(info, device)
    try:
        with _GlobalSettings(cfg, device, info) as settings:
            builder = TrainerBuilder(cfg, info, device, settings.threads, resume)
            try:
                trainer = builder.build(model, param_groups, callbacks, data, loss_fn)
                return trainer.run()
            finally:
                builder.close()
    finally:
        if started_group:
            cleanup_distributed()


