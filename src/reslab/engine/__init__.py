"""The training engine: ``fit`` a config, with checkpoints, exact resume, DDP and tracking.

    from reslab.config import load_config
    from reslab.engine import fit
    result = fit(load_config("configs/fmnist_resnet20.yaml", ["data.source=fashion-mnist"]))

Names are imported lazily (PEP 562) so ``import reslab.engine`` does no work.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "training",
    "Trainer": "trainer",
    "RunResult": "trainer",
    "Callback": "callbacks",
    "EarlyStopping": "callbacks",
    "TrainingInterrupted": "signals",
    "NonFiniteLossError": "signals",
    "CheckpointWriteError": "signals",
    "ModelEma": "ema",
    "build_optimizer": "optim",
    "split_decay": "optim",
    "build_schedule": "schedule",
    "lr_find": "lr_finder",
    "LRFindResult": "lr_finder",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "resolve_device": "precision",
    "resolve_precision": "precision",
    "set_cpu_threads": "precision",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
