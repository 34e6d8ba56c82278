"""The fine-tuning plan as a value: facts about the data and the weights in, a
``FinetunePlan`` (strategy, BatchNorm policy, learning rate, batch size, step clip, feature
cache) out, each choice with the reason printed at the start of the run. Nothing here
loads, builds or trains anything; ``run.py`` executes the plan.

The rules follow the usual transfer-learning advice (Yosinski et al. 2014; Kornblith et al.
2019; the fastai and Keras guides): the fewer labelled images per class, the fewer
pretrained weights should move at once, the more the pretrained BatchNorm statistics should
be trusted, and the smaller the steps. Every choice can be overridden by the user.

| images per class (median) | strategy | BatchNorm | learning rate |
|---|---|---|---|
| < 10                      | gradual  | frozen    | lowest        |
| 10 - 99                   | gradual  | frozen    | low           |
| >= 100                    | full     | train     | moderate      |

The rate is the strategy's base rate scaled by batch / 64 (Goyal et al. 2017), and the
batch size itself follows the data (``choose_batch_size``: about a quarter of the training
images, so an epoch has at least four steps), so fewer images give smaller steps.

Why ``gradual`` and not ``linear`` for the fewest images: gradual *starts* as a linear probe
(head alone for ``unfreeze_every`` epochs) and only then lets the top stages adapt, with
frozen BatchNorm and small steps. When the pretraining domain differs from the task the
linear probe alone is far behind: reslab:resnet20_fashion_mnist on digits with 5 labels per
class reaches about 50% test accuracy with ``linear`` and 72-75% with ``gradual``
(docs/finetuning.md). ``linear`` stays one flag away (``--strategy linear``), and is the
fastest (cached features).

A batch smaller than ``MIN_BN_BATCH`` also fixes BatchNorm statistics (``eval``): the
statistics of so few images are noise (Wu & He 2018, "Group Normalization", fig. 1).

With ``gradual`` and fixed BatchNorm statistics, the plan also bounds each pretrained
filter's SGD step (``step_clip.py``): the rate chosen here grows with the batch, the stable
step of a backbone whose BatchNorm no longer normalises does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import TrainConfig, validate_config
from ..errors import ConfigError
from .bn import BN_POLICIES
from .step_clip import resolve_step_clip
from .strategies import STRATEGIES, resolve_lr_decay

FEW = 10  # images per class below which the plan is the most cautious
SOME = 100  # images per class below which the backbone should move slowly
MIN_BN_BATCH = 16  # below this, batch statistics are too noisy to train BatchNorm
MIN_BATCH = 8  # images per step below which even frozen-BN fine-tuning gets noisy gradients
MIN_STEPS_PER_EPOCH = 4  # the chosen batch leaves at least this many steps per epoch

# Base learning rates per strategy for a batch of 64 (scaled linearly with the batch
# size, Goyal et al. 2017). From-scratch SGD uses 0.1; fine-tuning starts close to a good
# solution, so steps are 5-10x smaller. ``linear`` trains only a fresh head on fixed
# features (a convex problem) and needs large steps to converge in a few epochs.
BASE_LR = {
    "sgd": {"linear": 0.2, "gradual": 0.02, "discriminative": 0.02, "full": 0.01},
    "adamw": {"linear": 3e-3, "gradual": 1e-3, "discriminative": 1e-3, "full": 5e-4},
}
REFERENCE_BATCH = 64


@dataclass(frozen=True)
class DataFacts:
    """What the plan needs to know about the task's data.

    Attributes:
        labels: training labels (int64), one per image.
        num_classes: classes of the task.
        in_chans: channels the images were read with (1 grey, 3 colour).
        n_train: training images a run uses (fewer than ``labels`` with ``data.limit_train``).
    """

    labels: torch.Tensor
    num_classes: int
    in_chans: int
    n_train: int

    @classmethod
    def from_bundle(cls, bundle, limit_train: int | None = None) -> "DataFacts":
        """From a ``DataBundle`` (``reslab.data.load_dataset``)."""
        n = len(bundle.train)
        return cls(bundle.train.labels, len(bundle.classes), bundle.in_chans, min(n, limit_train or n))


@dataclass(frozen=True)
class WeightsFacts:
    """What the plan needs to know about the pretrained weights.

    Attributes:
        source: the weights as the user named them (for messages).
        in_chans: input channels the weights were trained on, None when unknown.
    """

    source: str
    in_chans: int | None = None

    @classmethod
    def from_info(cls, source: str, info: dict[str, Any]) -> "WeightsFacts":
        """From ``weights_info(source)`` (or a checkpoint's ``preprocess``)."""
        size = (info.get("preprocess") or {}).get("input_size")
        return cls(source, int(size[0]) if size else None)


@dataclass
class FinetunePlan:
    """What a fine-tuning run will do, and why.

    Attributes:
        strategy: ``linear``, ``full``, ``gradual`` or ``discriminative``.
        bn: ``train``, ``frozen`` or ``eval``.
        lr: the base learning rate (the head's; other groups get ``lr * lr_scale``).
        images_per_class: median number of training images per class.
        reasons: one line per choice, e.g. ``"strategy=linear: 6 images per class < 10 ..."``.
        batch_size: images per optimizer step (the global batch).
        lr_decay: per-group rate factor from the head down (1.0: none).
        step_clip: largest step of a pretrained filter as a fraction of its norm (0: off).
        cache_features: ``linear`` on cached backbone features (``cached.py``).
    """

    strategy: str
    bn: str
    lr: float
    images_per_class: float
    reasons: list[str] = field(default_factory=list)
    batch_size: int = REFERENCE_BATCH
    lr_decay: float = 1.0
    step_clip: float = 0.0
    cache_features: bool = False


def images_per_class(labels: torch.Tensor, num_classes: int) -> float:
    """Median number of training images per class (robust to one tiny or huge class)."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, received {num_classes}.")
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes)
    return float(counts.double().median())


def batch_for_data(n_train: int, default: int, accum_steps: int = 1) -> int:
    """``default``, or a smaller batch when ``default`` would leave fewer than
    ``MIN_STEPS_PER_EPOCH`` steps per epoch: the largest power of two <= n/4 (at least
    ``MIN_BATCH``) that ``accum_steps`` divides. Fine-tuning's one batch-size rule (the
    transfer study sizes its arms with it too).

    Args:
        n_train: training images.
        default: the batch the config would use.
        accum_steps: the config's; the batch must be a multiple of it.
    Returns:
        The global batch (images per optimizer step).
    """
    quarter = max(n_train // MIN_STEPS_PER_EPOCH, 1)
    if default <= quarter:
        return default
    small = max(MIN_BATCH, 1 << (quarter.bit_length() - 1))  # largest power of two <= n/4
    return small - small % accum_steps


def choose_batch_size(cfg: TrainConfig, n_train: int) -> tuple[int, str | None]:
    """The user's ``data.batch_size``, or the config's default shrunk for tiny data
    (``batch_for_data``). Everything else about the batch (its split into micro-batches
    per process and accumulation step, the evaluation batch) is the engine's
    ``batch_sizes``; this is the one finetune-specific rule.

    Returns:
        ``(batch_size, reason or None when the config's value is kept)``.
    """
    bs = cfg.data.batch_size
    if "batch_size" in cfg.data.model_fields_set:
        return bs, None
    small = batch_for_data(n_train, bs, cfg.accum_steps)
    if small == bs:
        return bs, None
    return small, (f"batch_size={small} ({n_train} training images: at least {MIN_STEPS_PER_EPOCH} steps "
                   f"per epoch; the default {bs} would be one noisy step)")  # fmt: skip


def check_in_chans(data_in_chans: int, weights: WeightsFacts) -> str | None:
    """Refuses grey weights on colour images (their first conv cannot be adapted) and says
    which ``data.in_chans`` reads the images as the weights expect.

    Returns:
        A plan line for colour weights on grey images (the first conv is adapted), else None.
    Raises:
        ConfigError: 1-channel weights and 3-channel images.
    """
    theirs = weights.in_chans
    if theirs is None or theirs == data_in_chans:
        return None
    if theirs == 1:
        raise ConfigError(
            f"the weights {weights.source} take 1-channel (grey) images, but the data was read with "
            f"{data_in_chans} channels (colour); a grey first conv cannot be adapted to colour. Pass "
            "data.in_chans=1 to read the images as grey (e.g. reslab finetune --data ... data.in_chans=1), "
            "or choose weights trained on colour images."
        )
    return (f"in_chans={data_in_chans} (the weights take {theirs}-channel images; their first conv is "
            f"summed over its channels; data.in_chans={theirs} reads the images as colour instead)")  # fmt: skip


def choose_plan(
    labels: torch.Tensor,
    num_classes: int,
    *,
    strategy: str = "auto",
    bn: str = "auto",
    lr: float | None = None,
    optimizer: str = "sgd",
    batch_size: int = REFERENCE_BATCH,
) -> FinetunePlan:
    """Chooses strategy, BatchNorm policy and learning rate from the training labels.

    Args:
        labels: training labels (int64), one per image.
        num_classes: number of classes of the task.
        strategy, bn: ``auto`` to choose, or the user's choice (kept as is).
        lr: the user's learning rate, or None to choose.
        optimizer: ``sgd`` or ``adamw`` (sets the scale of the chosen learning rate).
        batch_size: images per optimizer step (scales the chosen learning rate).
    Returns:
        A ``FinetunePlan`` whose ``reasons`` say why each value was chosen.
    """
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}; expected auto or one of {', '.join(STRATEGIES)}.")
    if bn != "auto" and bn not in BN_POLICIES:
        raise ConfigError(f"bn={bn!r}; expected auto or one of {', '.join(BN_POLICIES)}.")
    if optimizer not in BASE_LR:
        raise ConfigError(f"optimizer={optimizer!r}; expected one of {', '.join(BASE_LR)}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1.")
    n = images_per_class(labels, num_classes)
    tier = "few" if n < FEW else "some" if n < SOME else "many"
    strategy, why_strategy = _choose_strategy(strategy, tier, n)
    bn, why_bn = _choose_bn(bn, tier, n, batch_size)
    reasons = [why_strategy, why_bn]
    if lr is None:
        base = BASE_LR[optimizer][strategy]
        lr = base * batch_size / REFERENCE_BATCH if optimizer == "sgd" else base
        how = f"{base:g}" + (f" x batch {batch_size}/{REFERENCE_BATCH}" if optimizer == "sgd" else "")
        reasons.append(f"lr={lr:.3g} (fine-tuning rate for {optimizer} + {strategy}: {how})")
    else:
        reasons.append(f"lr={lr:g} (your choice)")
    return FinetunePlan(strategy=strategy, bn=bn, lr=float(lr), images_per_class=n, reasons=reasons,
                        batch_size=batch_size)  # fmt: skip


def _choose_strategy(strategy: str, tier: str, n: float) -> tuple[str, str]:
    if strategy != "auto":
        return strategy, f"strategy={strategy} (your choice)"
    data = f"{n:g} images per class"
    strategy = {"few": "gradual", "some": "gradual", "many": "full"}[tier]
    why = {
        "few": f"{data} < {FEW}: head alone first, then unfreeze from the top, with small steps",
        "some": f"{FEW} <= {data} < {SOME}: train the head first, then unfreeze from the top",
        "many": f"{data} >= {SOME}: enough to adapt every layer",
    }[tier]
    return strategy, f"strategy={strategy} ({why})"


def _choose_bn(bn: str, tier: str, n: float, batch_size: int) -> tuple[str, str]:
    if bn != "auto":
        return bn, f"bn={bn} (your choice)"
    data = f"{n:g} images per class"
    if tier in ("few", "some"):
        bn, why = "frozen", f"{data} < {SOME}: keep the pretrained BatchNorm statistics and scale/shift"
    elif batch_size < MIN_BN_BATCH:
        bn = "eval"
        why = f"batch size {batch_size} < {MIN_BN_BATCH}: batch statistics are noise, keep the pretrained ones"
    else:
        bn, why = "train", f"{data} >= {SOME} and batch size {batch_size}: BatchNorm can adapt to the new images"
    return bn, f"bn={bn} ({why})"


def plan_finetune(
    cfg: TrainConfig, data: DataFacts, weights: WeightsFacts, *, on_cpu: bool, distributed: bool = False
) -> FinetunePlan:
    """The whole plan of a fine-tuning run: a pure function of the config and the facts.

    Args:
        cfg: the user's config (``auto`` values and unset keys are chosen here).
        data: the task's labels, classes and channels.
        weights: the pretrained weights' source and input channels.
        on_cpu: the run's device is a CPU (``linear`` then caches features by default).
        distributed: the run has several processes (``gradual`` is refused there).
    Returns:
        A ``FinetunePlan``; ``reasons`` hold one printable line per choice.
    Raises:
        ConfigError for a combination that cannot run, before any model is built.
    """
    ft = cfg.finetune
    chans_why = check_in_chans(data.in_chans, weights)
    batch_size, batch_why = choose_batch_size(cfg, data.n_train)
    user_lr = cfg.optim.lr if "lr" in cfg.optim.model_fields_set else None
    plan = choose_plan(data.labels, data.num_classes, strategy=ft.strategy, bn=ft.bn, lr=user_lr,
                       optimizer=cfg.optim.name, batch_size=batch_size)  # fmt: skip
    reasons = plan.reasons
    if batch_why:
        reasons.append(batch_why)
    layerwise = plan.strategy in ("gradual", "discriminative")
    if ft.lr_decay is not None and ft.lr_decay < 1 and not layerwise:
        reasons.append(f"lr_decay={ft.lr_decay} ignored: it does nothing with strategy={plan.strategy}")
    if plan.strategy == "gradual" and distributed:
        raise ConfigError("strategy=gradual changes which parameters train during the run, which "
                          "DistributedDataParallel does not allow; use strategy=discriminative "
                          "(layer-wise rates, everything trains) or run on one process.")  # fmt: skip
    plan.lr_decay = resolve_lr_decay(plan.strategy, ft.lr_decay if layerwise else None)
    auto_cache = ft.cache_features == "auto" and on_cpu
    plan.cache_features = plan.strategy == "linear" and (ft.cache_features is True or auto_cache)
    plan.step_clip, clip_why = resolve_step_clip(ft.step_clip, plan.strategy, plan.bn, cfg.optim.name)
    if clip_why:
        reasons.append(clip_why)
    if plan.cache_features and cfg.data.progressive_resize is not None:
        reasons.append("data.progressive_resize ignored: the features are cached once, at full "
                       "size (finetune.cache_features=false trains on resized images)")
    if ft.cache_features is True and plan.strategy != "linear":
        raise ConfigError(f"finetune.cache_features=true needs strategy=linear (the backbone must be "
                          f"frozen for features to stay fixed), but the strategy is {plan.strategy}.")  # fmt: skip
    if chans_why:
        reasons.append(chans_why)
    return plan


def resolved_config(cfg: TrainConfig, plan: FinetunePlan, *, arch: str, image_size: int, out: str) -> TrainConfig:
    """The config with every ``auto`` replaced by the plan's value, validated again.

    Saved with the run, so a resume or a rerun of ``config.yaml`` does exactly the same
    thing. It is rebuilt from a dict through the config's own validation (``model_copy``
    would skip the validators, e.g. that ``accum_steps`` divides the batch).
    """
    tree = cfg.to_dict()
    layerwise = plan.strategy in ("gradual", "discriminative")
    tree["finetune"].update(strategy=plan.strategy, bn=plan.bn, cache_features=plan.cache_features,
                            lr_decay=cfg.finetune.lr_decay if layerwise else None,
                            step_clip=plan.step_clip)  # fmt: skip
    tree["optim"]["lr"] = plan.lr
    tree["data"].update(batch_size=plan.batch_size, image_size=image_size)
    tree["model"]["name"] = arch
    tree["out"] = str(out)
    return validate_config(tree, "the fine-tuning plan")
