"""``reslab train``: train a model from scratch (a thin layer over ``reslab.engine.fit``).

    reslab train --data fashion-mnist --model resnet20 --epochs 5 --out runs/fm20
    reslab train --config fmnist_resnet20 --out runs/fm20 optim.lr=0.2 ema=true
    reslab train --resume runs/fm20                       # continue exactly where it stopped
    torchrun --nproc_per_node=2 -m reslab train ...        # data-parallel, same command
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from reslab.cli.options import PRECISIONS, add_json, stdout_for_json
from reslab.errors import ConfigError

log = logging.getLogger("reslab.cli")

# flag -> dotted config key
FLAGS = {
    "data": "data.source",
    "model": "model.name",
    "out": "out",
    "epochs": "epochs",
    "batch_size": "data.batch_size",
    "lr": "optim.lr",
    "seed": "seed",
    "device": "device",
    "workers": "data.workers",
    "precision": "precision",
    "log": "log",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DATA",
                   help="image folder, CSV manifest, or fashion-mnist / digits / cifar10")  # fmt: skip
    p.add_argument("--model", metavar="NAME", help="architecture (see `reslab models`), e.g. resnet20")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--config", metavar="RECIPE",
                   help="recipe name or YAML file, e.g. fmnist_resnet20 (`reslab recipes` lists them)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch (all processes)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="decoder processes for image folders")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--log", metavar="LIST", help="trackers: tensorboard,mlflow,wandb")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")  # fmt: skip
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any config key, e.g. optim.weight_decay=5e-4 schedule.name=onecycle ema=true")  # fmt: skip
    add_json(p, "the run's summary.json")
    show_config_defaults(p, FLAGS)
    # key=value overrides may sit before, between or after the flags
    p.parse_args = p.parse_intermixed_args  # type: ignore[method-assign]


def show_config_defaults(p: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    """Appends each flag's default, read from the typed config (a flag left out keeps the
    recipe's value, else this default), to its help text."""
    from reslab.config import TrainConfig

    defaults = TrainConfig().to_dict()
    for action in p._actions:  # argparse has no public API for editing a flag's help
        key = flags.get(action.dest)
        if key is None or action.help == argparse.SUPPRESS:
            continue
        value = defaults
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, [], "") and "default" not in (action.help or ""):
            action.help = f"{action.help or key} (default: {value}, or the recipe's)".lstrip()


def print_result(result, as_json: bool) -> None:
    """With ``--json``: the run's summary.json on stdout (the run's log lines went to stderr)."""
    if not as_json:
        return
    summary = Path(result.run_dir) / "summary.json"
    data = json.loads(summary.read_text()) if summary.is_file() else {"run_dir": str(result.run_dir)}
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def collect_overrides(args: argparse.Namespace, flags: dict[str, str] = FLAGS) -> dict:
    """Config overrides from the flags given (typed by argparse, so they skip YAML parsing:
    a path may contain ": ") and the trailing ``key=value`` words."""
    from reslab.config import parse_overrides

    overrides = {key: getattr(args, name) for name, key in flags.items() if getattr(args, name, None) is not None}
    overrides.update(parse_overrides(args.overrides or []))
    return overrides


def resumed_config(args: argparse.Namespace, overrides: dict):
    """For ``--resume RUN_DIR``: the run's saved config with ``overrides`` on top."""
    from reslab.config import load_config

    run_dir = Path(args.resume)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a reslab run folder?")
    if args.out and Path(args.out) != run_dir:
        raise ConfigError(f"--resume {run_dir} continues that folder; drop --out {args.out}.")
    return load_config(saved, {**overrides, "out": str(run_dir)})


def build_config(args: argparse.Namespace):
    """The ``TrainConfig`` the flags describe (for ``--resume``: the run's saved config
    with the flags given now applied on top)."""
    from reslab.config import load_config

    overrides = collect_overrides(args)
    if args.resume:
        return resumed_config(args, overrides)
    cfg = load_config(args.config, overrides)
    if cfg.finetune is not None and cfg.finetune.pretrained:
        log.warning(f"warning: {args.config} holds finetune keys (finetune.pretrained="
                    f"{cfg.finetune.pretrained}); reslab train ignores them and trains from "
                    f"scratch. To fine-tune: reslab finetune --config {args.config} ...")  # fmt: skip
    if not cfg.data.source:
        raise ConfigError("nothing to train on: pass --data (e.g. --data fashion-mnist) or a "
                          "--config recipe that sets data.source.")  # fmt: skip
    return cfg


def run_and_print(work, cfg, args: argparse.Namespace) -> int:
    """Runs ``work(cfg, resume=...)`` (``fit`` or ``finetune``) and prints its result; with
    ``--json`` the run's lines go to stderr and only the summary to stdout."""
    with stdout_for_json(args.json):
        result = work(cfg, resume=bool(args.resume))
    print_result(result, args.json)
    return 0  # a signal's TrainingInterrupted is turned into its exit code by cli/main.py


def run(args: argparse.Namespace) -> int:
    from reslab.engine import fit

    return run_and_print(fit, build_config(args), args)
