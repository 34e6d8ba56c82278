"""Fine-tuning defaults chosen from the data, each with the reason printed at the start.

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
batch size itself follows the data (``api._batch_size``: about a quarter of the training
images, so an epoch has at least four steps), so fewer images give smaller steps.

Why ``gradual`` and not ``linear`` for the fewest images: gradual *starts* as a linear probe
(head alone for ``unfreeze_every`` epochs) and only then lets the top stages adapt, with
frozen BatchNorm and small steps. When the pretraining domain differs from the task the
linear probe alone is far behind: reslab:resnet20_fashion_mnist on digits with 5 labels per
class reaches 49% test accuracy with ``linear`` and 72-75% with ``gradual``
(docs/finetuning.md). ``linear`` stays one flag away (``--strategy linear``), and is the
fastest (cached features).

A batch smaller than ``MIN_BN_BATCH`` also fixes BatchNorm statistics (``eval``): the
statistics of so few images are noise (Wu & He 2018, "Group Normalization", fig. 1).

With ``gradual`` and fixed BatchNorm statistics, ``finetune`` also bounds each pretrained
filter's SGD step (``step_clip.py``): the rate chosen here grows with the batch, the stable
step of a backbone whose BatchNorm no longer normalises does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .bn import BN_POLICIES
from .strategies import STRATEGIES

FEW = 10  # images per class below which the plan is the most cautious
SOME = 100  # images per class below which the backbone should move slowly
MIN_BN_BATCH = 16  # below this, batch statistics are too noisy to train BatchNorm

# Base learning rates per strategy for a batch of 64 (scaled linearly with the batch
# size, Goyal et al. 2017). From-scratch SGD uses 0.1; fine-tuning starts close to a good
# solution, so steps are 5-10x smaller. ``linear`` trains only a fresh head on fixed
# features (a convex problem) and needs large steps to converge in a few epochs.
BASE_LR = {
    "sgd": {"linear": 0.2, "gradual": 0.02, "discriminative": 0.02, "full": 0.01},
    "adamw": {"linear": 3e-3, "gradual": 1e-3, "discriminative": 1e-3, "full": 5e-4},
}
REFERENCE_BATCH = 64


@dataclass
class FinetunePlan:
    """What a fine-tuning run will do, and why.

    Attributes:
        strategy: ``linear``, ``full``, ``gradual`` or ``discriminative``.
        bn: ``train``, ``frozen`` or ``eval``.
        lr: the base learning rate (the head's; other groups get ``lr * lr_scale``).
        images_per_class: median number of training images per class.
        reasons: one line per choice, e.g. ``"strategy=linear: 6 images per class < 10 ..."``.
    """

    strategy: str
    bn: str
    lr: float
    images_per_class: float
    reasons: list[str] = field(default_factory=list)


def images_per_class(labels: torch.Tensor, num_classes: int) -> float:
    """Median number of training images per class (robust to one tiny or huge class)."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, received {num_classes}.")
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes)
    return float(counts.double().median())


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
    reasons = []
    tier = "few" if n < FEW else "some" if n < SOME else "many"
    data = f"{n:g} images per class"

    if strategy == "auto":
        strategy = {"few": "gradual", "some": "gradual", "many": "full"}[tier]
        why = {
            "few": f"{data} < {FEW}: head alone first, then unfreeze from the top, with small steps",
            "some": f"{FEW} <= {data} < {SOME}: train the head first, then unfreeze from the top",
            "many": f"{data} >= {SOME}: enough to adapt every layer",
        }[tier]
        reasons.append(f"strategy={strategy} ({why})")
    else:
        reasons.append(f"strategy={strategy} (your choice)")

    if bn == "auto":
        if tier in ("few", "some"):
            bn = "frozen"
            why = f"{data} < {SOME}: keep the pretrained BatchNorm statistics and scale/shift"
        elif batch_size < MIN_BN_BATCH:
            bn = "eval"
            why = f"batch size {batch_size} < {MIN_BN_BATCH}: batch statistics are noise, keep the pretrained ones"
        else:
            bn = "train"
            why = f"{data} >= {SOME} and batch size {batch_size}: BatchNorm can adapt to the new images"
        reasons.append(f"bn={bn} ({why})")
    else:
        reasons.append(f"bn={bn} (your choice)")

    if lr is None:
        base = BASE_LR[optimizer][strategy]
        lr = base * batch_size / REFERENCE_BATCH if optimizer == "sgd" else base
        how = f"{base:g}" + (f" x batch {batch_size}/{REFERENCE_BATCH}" if optimizer == "sgd" else "")
        reasons.append(f"lr={lr:.3g} (fine-tuning rate for {optimizer} + {strategy}: {how})")
    else:
        reasons.append(f"lr={lr:g} (your choice)")
    return FinetunePlan(strategy=strategy, bn=bn, lr=float(lr), images_per_class=n, reasons=reasons)
