"""The typed run config's sections: every key with its unit, default and allowed values.

``extra="forbid"`` everywhere: an unknown key is an error (``loading.py`` turns it into a
"did you mean"), never silently dropped.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LOGGERS = ("tensorboard", "mlflow", "wandb")


class _Section(BaseModel):
    # extra="forbid": an unknown key is an error, never silently dropped.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ProgressiveResizeConfig(_Section):
    """Train the first epochs on smaller images, growing to the full size (progressive
    resizing: fastai's DAWNBench entries, FFCV's ResNet recipes). A smaller epoch costs
    less, though more than its share of the pixels (``benchmarks/bench_progressive.py``);
    the last epochs at full size fit the net to the size evaluation uses."""

    min_size: int = Field(16, ge=4)  # px of the first epochs
    start_epoch: int = Field(0, ge=0)  # epochs at min_size before the ramp starts
    end_epoch: int = Field(ge=1)  # full size from this epoch on (0-based)
    step: int = Field(4, ge=1)  # sizes are rounded to multiples of this

    @model_validator(mode="after")
    def _check(self) -> "ProgressiveResizeConfig":
        if self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"end_epoch={self.end_epoch} must come after start_epoch={self.start_epoch}: "
                "the size ramps from min_size at start_epoch to the full size at end_epoch"
            )
        return self


class DataConfig(_Section):
    """Where the images come from and how batches are made (see ``reslab.data``)."""

    source: str | None = None  # image folder, CSV manifest or built-in (fashion-mnist, digits, ...)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # held out of train when there is no val split
    batch_size: int = Field(128, ge=1)  # images per step over all processes (the global batch)
    eval_batch_size: int | None = Field(None, ge=1)  # default: 2 x batch_size
    workers: int | None = Field(None, ge=0)  # decoder processes for streamed folders
    # streamed folders: auto = JPEG batches decoded on the GPU when training on CUDA (gpu_decode)
    decode: Literal["auto", "workers", "device"] = "auto"
    image_size: int | None = Field(None, ge=1)  # px; default: the dataset's native size
    in_chans: Literal[1, 3] | None = None  # default: detected from the images
    in_memory: Literal["auto", True, False] = "auto"
    # default|none|flip|crop|trivial|randaugment, or a dict of AugmentSpec fields
    augment: str | dict = "default"
    random_erasing: float = Field(0.0, ge=0.0, le=1.0)  # probability per image (Zhong et al. 2017)
    mixup: float = Field(0.0, ge=0.0)  # Beta alpha; 0 = off (Zhang et al. 2018)
    cutmix: float = Field(0.0, ge=0.0)  # Beta alpha; 0 = off (Yun et al. 2019)
    progressive_resize: ProgressiveResizeConfig | None = None  # smaller images in early epochs
    sampler: Literal["random", "balanced"] = "random"
    class_weights: Literal["none", "auto"] = "none"  # auto: inverse-frequency weighted loss
    check: Literal[True, False, "full", "warn"] = True  # dataset health check before training
    limit_train: int | None = Field(None, ge=1)  # use only this many training images (quick runs)
    limit_val: int | None = Field(None, ge=1)  # and this many validation / test images


class ModelConfig(_Section):
    """Which architecture (``reslab models`` lists them) and its from-scratch options."""

    name: str = "resnet20"
    in_chans: Literal[1, 3] | None = None  # default: the data's channels
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)  # dropout before the classifier
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth (Huang et al. 2016)
    zero_init_residual: bool = False  # blocks start as identity (Goyal et al. 2017; large batches)
    norm_layer: Literal["batchnorm", "groupnorm", "frozen_batchnorm"] = "batchnorm"
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    sync_bn: bool = False  # DDP: BatchNorm statistics over all processes (small per-GPU batches)

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from ..models import list_models

        names = list_models()
        if v not in names:
            close = difflib.get_close_matches(v, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"a registered model name.{hint} `reslab models` lists all {len(names)}"
            )
        return v


class OptimConfig(_Section):
    """Optimizer; weight decay skips norm weights and biases unless ``decay_norm_bias``."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)  # peak learning rate for the global batch
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = True  # SGD only (Sutskever et al. 2013)
    weight_decay: float = Field(5e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    eps: float = Field(1e-8, gt=0.0)  # AdamW only
    decay_norm_bias: bool = False  # True applies weight decay to norm/bias too (usually worse)


class ScheduleConfig(_Section):
    """Per-step learning-rate schedule: linear warmup, then the named shape."""

    name: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warmup from warmup_start x lr (Goyal et al.)
    warmup_start: float = Field(0.1, ge=0.0, le=1.0)  # first warmup lr as a fraction of lr
    min_lr: float = Field(0.0, ge=0.0, le=1.0)  # cosine floor as a fraction of lr
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # step: run fractions
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # step: lr multiplier at each milestone
    pct_start: float = Field(0.25, gt=0.0, lt=1.0)  # onecycle: share of steps rising to lr
    div_factor: float = Field(25.0, ge=1.0)  # onecycle: start lr = lr / div_factor
    final_div_factor: float = Field(1e4, ge=1.0)  # onecycle: last lr = start lr / final_div_factor

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        if self.name == "onecycle" and self.warmup_epochs > 0:
            raise ValueError(
                "onecycle has its own warmup (pct_start); set schedule.warmup_epochs=0 "
                f"(received {self.warmup_epochs}) or use schedule.name=cosine"
            )
        ms = self.milestones
        if any(not 0 < m < 1 for m in ms) or ms != sorted(ms):
            raise ValueError(
                f"schedule.milestones={ms} must be increasing fractions of the run in (0, 1), "
                "e.g. [0.5, 0.75]"
            )
        return self


class EmaConfig(_Section):
    """Exponential moving average of the weights, evaluated instead of the live weights."""

    enabled: bool = False
    decay: float = Field(0.999, gt=0.0, lt=1.0)  # per optimizer step
    warmup: bool = True  # decay ramps as (1 + t) / (10 + t) early on (timm's ModelEma)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # ``ema: true`` or ``ema: 0.9998`` are accepted as short forms.
        if isinstance(v, bool):
            return {"enabled": v}
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"enabled": True, "decay": v}
        return v


class EarlyStopConfig(_Section):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    patience: int = Field(0, ge=0)  # epochs; 0 = off
    min_delta: float = Field(0.0, ge=0.0)  # smallest change that counts as an improvement
    metric: Literal["val_acc", "val_loss"] = "val_acc"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return {"patience": v}
        return v


class FinetuneConfig(_Section):
    """Fine-tuning pretrained weights; semantics in ``reslab.finetune`` and docs/finetuning.md.

    ``auto`` values are chosen from the data at the start of the run and printed with the
    reason (``reslab.finetune.plan``).
    """

    pretrained: str | None = None  # weights source: reslab:NAME, torchvision:..., a file or a run folder
    strategy: Literal["auto", "linear", "full", "gradual", "discriminative"] = "auto"
    bn: Literal["auto", "train", "frozen", "eval"] = "auto"  # BatchNorm policy, same in every phase
    unfreeze_every: int = Field(1, ge=1)  # gradual: epochs per newly unfrozen group (head first)
    # lr multiplier per group from the head down to the stem; None: 0.5 for discriminative,
    # 1.0 (no decay) otherwise; a value < 1 is refused for linear/full, where it does nothing.
    lr_decay: float | None = Field(None, gt=0.0, le=1.0)
    # linear: extract the backbone's pooled features once and train the head on them
    # (no augmentation, seconds on a CPU); auto: on for linear on a CPU.
    cache_features: Literal["auto", True, False] = "auto"
    # largest gradient step of a pretrained filter, as a fraction of its norm
    # (lr * |grad_i| <= step_clip * |w_i|, see reslab.finetune.step_clip); auto: 0.0025 for
    # gradual with SGD and frozen/eval BatchNorm, off otherwise; 0: off.
    step_clip: Literal["auto"] | float = "auto"

    @field_validator("step_clip", mode="before")
    @classmethod
    def _step_clip(cls, v: Any) -> Any:
        if v == "auto":
            return v
        try:
            ratio = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else -1.0
        except ValueError:
            ratio = -1.0
        if not 0 <= ratio < 1:
            raise ValueError("auto, 0 (off) or a fraction of the filter's norm in (0, 1), e.g. 0.0025")
        return ratio

    @field_validator("pretrained")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("a weights source such as reslab:resnet20_fashion_mnist, a file or a run folder")
        return v

    @model_validator(mode="after")
    def _options_fit_strategy(self) -> "FinetuneConfig":
        if self.lr_decay is not None and self.lr_decay < 1 and self.strategy in ("linear", "full"):
            raise ValueError(
                f"finetune.lr_decay={self.lr_decay} does nothing with strategy={self.strategy}; "
                "use finetune.strategy=discriminative (or gradual) for layer-wise learning rates"
            )
        if self.step_clip != "auto" and self.step_clip > 0 and self.strategy == "linear":
            raise ValueError(
                f"finetune.step_clip={self.step_clip} does nothing with strategy=linear (only the new "
                "head trains, and it is never clipped); drop finetune.step_clip"
            )
        return self


class TrackingConfig(_Section):
    """Options of the experiment trackers named in ``log``."""

    mlflow_uri: str | None = None  # default: sqlite:///<run>/mlflow.db; or file:..., http://...
    experiment: str = "reslab"  # MLflow experiment / W&B project
    run_name: str | None = None  # default: the run folder's name


class TrainConfig(_Section):
    """A whole training run. Sections: data, model, optim, schedule, ema, early_stop,
    finetune, tracking; the rest are top-level scalars."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    finetune: FinetuneConfig | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    epochs: int = Field(10, ge=1)
    seed: int = Field(0, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    out: str | None = None  # run folder; default runs/<model>-<date>-<time>
    overwrite: bool = False  # allow starting a fresh run in a folder that already holds one
    log: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # Szegedy et al. 2016
    clip_grad: float | None = Field(None, gt=0.0)  # max global L2 norm of the gradients
    accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step
    deterministic: bool = False  # deterministic kernels: bit-exact reruns and resumes
    compile: bool = False  # torch.compile the model (minutes of compile time; faster after)
    # with compile: reduce-overhead/max-autotune record CUDA graphs (CUDA only; else default)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    threads: int | None = Field(None, ge=1)  # CPU threads; default: every core we may use
    checkpoint_every_steps: int | None = Field(None, ge=1)  # also checkpoint mid-epoch
    log_every: int = Field(50, ge=1)  # optimizer steps between progress updates (host syncs)
    eval_test: bool = True  # evaluate the best weights on the test split at the end

    @field_validator("log", mode="before")
    @classmethod
    def _split_log(cls, v: Any) -> Any:
        # ``--log tensorboard,mlflow`` arrives as one string; "none" or "" means no trackers.
        if v is None:
            return []
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip() and s.strip().lower() != "none"]
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "TrainConfig":
        if self.data.batch_size % self.accum_steps:
            raise ValueError(
                f"data.batch_size={self.data.batch_size} must be divisible by "
                f"accum_steps={self.accum_steps} (each micro-batch is batch_size / accum_steps)"
            )
        ramp = self.data.progressive_resize
        if ramp is not None and ramp.end_epoch >= self.epochs:
            raise ValueError(
                f"data.progressive_resize.end_epoch={ramp.end_epoch} leaves no epoch at full size "
                f"(epochs={self.epochs}): the run would never train at full size; use at most "
                f"{self.epochs - 1}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (YAML/JSON/checkpoint safe)."""
        return self.model_dump(mode="json")
