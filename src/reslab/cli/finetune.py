"""``reslab finetune``: pretrained weights + your images (a thin layer over ``reslab.finetune``).

    reslab finetune --data my_images/ --pretrained reslab:resnet20_fashion_mnist --out runs/ft
    reslab finetune --data my_images/ --model resnet18 --pretrained torchvision:resnet18.IMAGENET1K_V1 \\
        --strategy gradual --bn frozen --epochs 6 --out runs/ft18
    reslab finetune --data my_images/ --pretrained runs/fm20 --out runs/ft2     # a run folder as weights
    reslab finetune --resume runs/ft                                             # continue exactly

Anything not given is chosen from the data and printed with the reason.
"""

from __future__ import annotations

import argparse

from reslab.cli.options import PRECISIONS, add_json
from reslab.cli.train import FLAGS as TRAIN_FLAGS
from reslab.cli.train import collect_overrides, resumed_config, run_and_print, show_config_defaults
from reslab.errors import ConfigError

# flag -> dotted config key: reslab train's flags plus the fine-tuning ones
FLAGS = {
    **TRAIN_FLAGS,
    "pretrained": "finetune.pretrained",
    "strategy": "finetune.strategy",
    "bn": "finetune.bn",
    "unfreeze_every": "finetune.unfreeze_every",
    "lr_decay": "finetune.lr_decay",
    "cache_features": "finetune.cache_features",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DATA", help="image folder, CSV manifest, or a built-in (digits, ...)")
    p.add_argument("--pretrained", metavar="SOURCE",
                   help="reslab:NAME, torchvision:ARCH.TAG, timm:..., hf:..., a weights file or a run folder")
    p.add_argument("--model", metavar="NAME", help="architecture (default: the weights' own)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--config", metavar="RECIPE",
                   help="recipe name or YAML file, e.g. finetune_digits (`reslab recipes` lists them)")
    p.add_argument("--strategy", choices=["auto", "linear", "full", "gradual", "discriminative"],
                   help="what trains (default auto: chosen from the images per class)")
    p.add_argument("--bn", choices=["auto", "train", "frozen", "eval"],
                   help="BatchNorm policy (default auto: frozen below 100 images per class)")
    p.add_argument("--unfreeze-every", type=int, dest="unfreeze_every", metavar="EPOCHS",
                   help="gradual: epochs per newly unfrozen group (default 1)")
    p.add_argument("--lr-decay", type=float, dest="lr_decay", metavar="FACTOR",
                   help="discriminative/gradual: lr multiplier per group from head to stem (default 0.5)")
    p.add_argument("--cache-features", dest="cache_features", action=argparse.BooleanOptionalAction,
                   help="linear: run the backbone once and train the head on cached features "
                        "(default: on for linear on a CPU)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch (default: from the data)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: from the strategy)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="decoder processes for image folders")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--log", metavar="LIST", help="trackers: tensorboard,mlflow,wandb")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any config key, e.g. optim.name=adamw schedule.warmup_epochs=1")  # fmt: skip
    add_json(p, "the run's summary.json")
    show_config_defaults(p, {k: v for k, v in FLAGS.items() if not v.startswith("finetune.")})


def build_config(args: argparse.Namespace):
    """The ``TrainConfig`` the flags describe (``--resume``: the run's saved, resolved
    config with the flags given now applied on top)."""
    from reslab.config import load_config

    overrides = collect_overrides(args, FLAGS)
    if args.resume:
        return resumed_config(args, overrides)
    if args.config is None and args.data is None:
        raise ConfigError("nothing to fine-tune on: pass --data (an image folder, a CSV manifest or a "
                          "built-in such as digits) or a --config recipe that sets data.source.")  # fmt: skip
    cfg = load_config(args.config, overrides)
    if cfg.finetune is None or not cfg.finetune.pretrained:
        raise ConfigError("reslab finetune needs --pretrained SOURCE, e.g. reslab:resnet20_fashion_mnist, "
                          "torchvision:resnet18.IMAGENET1K_V1, a weights file or a reslab run folder. "
                          "To train from scratch use reslab train.")  # fmt: skip
    return cfg


def run(args: argparse.Namespace) -> int:
    from reslab.finetune import finetune

    return run_and_print(finetune, build_config(args), args)
