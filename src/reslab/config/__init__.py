"""The one typed run config: YAML recipe + command-line overrides -> ``TrainConfig``.

Every key is declared in ``schema.py`` with its unit and allowed values; unknown keys are refused, so a
typo (``optim.weight_decy``) fails before any work instead of being silently ignored::

    cfg = load_config("fmnist_resnet20", overrides=["epochs=5", "optim.lr=0.2"])
    cfg = load_config(None, overrides={"data": {"source": "digits"}, "epochs": 3})

Precedence: field defaults < the YAML file < overrides (applied in order). The resolved
config is saved as ``config.yaml`` in the run folder and inside every checkpoint.
"""

from .loading import load_config, parse_overrides, save_config, validate_config
from .resume import check_resume, resume_changes
from .schema import (
    LOGGERS,
    DataConfig,
    EarlyStopConfig,
    EmaConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    ProgressiveResizeConfig,
    ScheduleConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "LOGGERS", "DataConfig", "EarlyStopConfig", "EmaConfig", "FinetuneConfig", "ModelConfig",
    "OptimConfig", "ProgressiveResizeConfig", "ScheduleConfig", "TrackingConfig", "TrainConfig",
    "check_resume", "load_config", "parse_overrides", "resume_changes", "save_config",
    "validate_config",
]  # fmt: skip
