"""The training engine: ``fit`` a config, with checkpoints, exact resume, DDP and tracking.

    from reslab.config import load_config
    from reslab.engine import fit
    result = fit(load_config("fmnist_resnet20", ["data.source=fashion-mnist"]))

Names are imported lazily (PEP 562) so ``import reslab.engine`` does no work.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "fit": "run",
    "Trainer": "trainer",
    "RunResult": "artifacts",
    "Callback": "callbacks",
    "EarlyStopping": "callbacks",
    "TrainingInterrupted": "signals",
    "NonFiniteLossError": "signals",
    "CheckpointWriteError": "signals",
    "TrainStep": "step",
    "evaluate": "step",
    "batch_sizes": "batch_size",
    "BatchSizes": "batch_size",
    "ModelEma": "ema",
    "build_optimizer": "optim",
    "split_decay": "optim",
    "build_schedule": "schedule",
    "lr_find": "lr_finder",
    "LRFindResult": "lr_finder",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
