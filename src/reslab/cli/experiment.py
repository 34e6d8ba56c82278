"""``reslab experiment degradation|gradients|headline|transfer``: the paper's claim and the
project's results, each rerunnable with one command (see scripts/run_experiments.sh)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reslab.cli.options import PRECISIONS, HelpFormatter, add_device, add_json


def add_data(p: argparse.ArgumentParser, **kw) -> None:
    """``--data`` (the name every verb uses), with the older ``--dataset`` kept as a hidden alias."""
    p.add_argument("--data", dest="dataset", metavar="DATA", **kw)
    p.add_argument("--dataset", dest="dataset", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_seeds(p: argparse.ArgumentParser, default: list[int], help: str) -> None:
    """``--seed`` taking one or more seeds, with the older ``--seeds`` as a hidden alias."""
    p.add_argument("--seed", dest="seeds", type=int, nargs="+", default=default, help=help)
    p.add_argument("--seeds", dest="seeds", type=int, nargs="+", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # fmt: skip


FMT = {"formatter_class": HelpFormatter}  # each experiment's --help shows the defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    d = sub.add_parser("degradation", **FMT,
                       help="plain vs residual nets of two depths (He et al. 2015, Fig. 6)")
    add_data(d, default="fashion-mnist", help="fashion-mnist (default), cifar10, digits, a folder")
    d.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    d.add_argument("--epochs", type=int, default=10, help="epochs for every model (default 10)")
    d.add_argument("--subset", type=int, default=None, help="class-balanced training images (default all)")
    d.add_argument("--test-subset", type=int, default=None, help="test images evaluated each epoch (default all)")
    d.add_argument("--val-subset", type=int, default=None, help="validation images per epoch (default all)")
    d.add_argument("--grad-seeds", type=int, nargs="+", default=[0, 1, 2], help="initialisations averaged")
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--seed", type=int, default=0)
    add_device(d)
    d.add_argument("--precision", default="auto", choices=PRECISIONS, help="of the training runs")
    d.add_argument("--out", default="runs/degradation", help="where the results and figures go")
    d.add_argument("--merge", nargs="+", metavar="RUN_OUT",
                   help="train nothing: join the degradation.json of runs made side by side "
                        "(one model each, same setup) into --out")  # fmt: skip

    g = sub.add_parser("gradients", help="per-layer gradient norms at initialisation (seconds)", **FMT)
    add_data(g, default="fashion-mnist", help="the batch's source")
    g.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    g.add_argument("--batch-size", dest="batch", type=int, default=256, help="images in the measured batch")
    g.add_argument("--batch", dest="batch", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_seeds(g, [0, 1, 2], "initialisations averaged")
    g.add_argument("--out", default="runs/gradients", help="where the results and figures go")

    h = sub.add_parser("headline", help="train a config over seeds; test accuracy vs wall-clock time", **FMT)
    h.add_argument("--config", required=True,
                   help="recipe name or YAML file, e.g. fmnist_fast (`reslab recipes` lists them)")
    add_seeds(h, [0], "one training per seed")
    h.add_argument("--target", type=float, default=0.94, help="accuracy whose time-to-reach is reported")
    h.add_argument("--time-batches", type=int, default=None,
                   help="only time this many training batches and extrapolate the epoch (slow recipes)")
    h.add_argument("--test-every", type=int, default=1, help="evaluate the test set every N epochs")
    h.add_argument("--tta-flip", action="store_true",
                   help="score the test set with flip test-time augmentation (the plain score is kept too)")
    h.add_argument("--out", default="runs/headline", help="where the results and figures go")
    h.add_argument("overrides", nargs="*", help="config overrides, e.g. epochs=5 optim.lr=0.2")

    t = sub.add_parser("transfer", help="Fashion-MNIST weights vs from scratch on few-label digits", **FMT)
    t.add_argument("--weights", default="reslab:resnet20_fashion_mnist",
                   help="pretrained source (reslab:NAME, a run folder, a .safetensors file)")
    t.add_argument("--labels", type=int, nargs="+", default=[5, 20, 0],
                   help="labelled images per class; 0 means all (default 5 20 0)")
    t.add_argument("--strategies", nargs="+", default=["linear", "full", "gradual", "discriminative"])
    add_seeds(t, [0], "one run per seed and arm")
    t.add_argument("--epochs", type=int, default=None, help="default: about --steps updates, 4-60 epochs")
    t.add_argument("--steps", type=int, default=300, help="optimizer steps per arm when --epochs is not given")
    add_device(t)
    t.add_argument("--out", default="runs/transfer", help="where the results and figures go")
    t.add_argument("--merge", nargs="+", metavar="RUN_OUT",
                   help="train nothing: join the transfer.json of runs into --out; an arm rerun "
                        "in a later run replaces the earlier result")  # fmt: skip


    for p in (d, g, h, t):
        add_json(p, "the results")


def _merge(args: argparse.Namespace) -> int:
    """``--merge``: joins finished runs' results (``<experiment>.json``) into ``--out``."""
    from reslab.errors import ConfigError
    from reslab.experiments import degradation, transfer
    from reslab.experiments.tables import read_json

    name = f"{args.experiment}.json"
    paths = [Path(p) / name if Path(p).is_dir() else Path(p) for p in args.merge]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"--merge: no {name} at {missing}; pass the --out folders of finished "
                          "runs.")  # fmt: skip
    module = {"degradation": degradation, "transfer": transfer}[args.experiment]
    module.write_outputs(module.merge_results([read_json(p) for p in paths]), args.out)
    print((Path(args.out) / "table.md").read_text())
    return 0


def run(args: argparse.Namespace) -> int:
    import json

    from reslab.cli.options import stdout_for_json

    with stdout_for_json(args.json):  # with --json, the tables go to stderr
        if getattr(args, "merge", None):
            return _merge(args)
        code, res = _run_experiment(args)
    if args.json:
        print(json.dumps(res, indent=2, default=str, ensure_ascii=False))
    return code


def _run_experiment(args: argparse.Namespace) -> tuple[int, dict]:
    """Runs the chosen experiment; returns the exit code and its result."""
    if args.experiment == "degradation":
        from reslab.experiments.degradation import run_degradation

        res = run_degradation(
            args.dataset, models=args.models, epochs=args.epochs, subset=args.subset,
            test_subset=args.test_subset, val_subset=args.val_subset, grad_seeds=tuple(args.grad_seeds),
            batch_size=args.batch_size, seed=args.seed,
            device=args.device, precision=args.precision, out=args.out,
        )  # fmt: skip
        print((Path(args.out) / "table.md").read_text())
        return (0 if res["table"] else 1), res
    if args.experiment == "gradients":
        from reslab.experiments.gradients import run_gradient_study

        res = run_gradient_study(
            args.dataset, models=args.models, batch=args.batch, seeds=tuple(args.seeds), out=args.out
        )
        for name, row in res["summary"].items():
            print(f"{name:10s} early/late {row['early_late']:8.2f}   max/min {row['spread']:9.1f}")
        return 0, res
    if args.experiment == "headline":
        from reslab.experiments.headline import describe_result, measure_recipe, run_recipe

        if args.time_batches:
            res = measure_recipe(args.config, batches=args.time_batches, overrides=args.overrides, out=args.out)
            print(f"{res['seconds_per_batch']:.3f} s/batch -> {res['epoch_seconds'] / 60:.1f} min/epoch "
                  f"({res['images_per_s']:.1f} images/s) on {res['machine_line']}")
            return 0, res
        res = run_recipe(
            args.config, seeds=args.seeds, overrides=args.overrides, target=args.target,
            test_every=args.test_every, tta_flip=args.tta_flip, out=args.out,
        )  # fmt: skip
        print(describe_result(res))
        return 0, res
    if args.experiment == "transfer":
        from reslab.experiments.transfer import run_transfer

        res = run_transfer(
            args.weights, labels=[None if n == 0 else n for n in args.labels], strategies=args.strategies,
            seeds=args.seeds, epochs=args.epochs, steps=args.steps, device=args.device, out=args.out,
        )  # fmt: skip
        print((Path(args.out) / "table.md").read_text())
        return 0, res
    raise AssertionError(args.experiment)
