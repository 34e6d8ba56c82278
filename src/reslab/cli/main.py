"""Entry point of the ``reslab`` command.

Each sub-command lives in ``reslab/cli/<name>.py`` and defines ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``reslab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reslab.engine.signals import TrainingInterrupted
from reslab.errors import ReslabError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("reslab.cli.models", "list every architecture with parameters and MACs"),
    "summary": ("reslab.cli.summary", "per-layer table of one model"),
    "check": ("reslab.cli.check", "health report of a dataset before training"),
    "train": ("reslab.cli.train", "train a model from scratch"),
    "lr-find": ("reslab.cli.lr_find", "sweep the learning rate and suggest one"),
    "finetune": ("reslab.cli.finetune", "fine-tune pretrained weights on your images"),
    "evaluate": ("reslab.cli.evaluate", "metrics, confusion matrix and calibration"),
    "explain": ("reslab.cli.explain", "Grad-CAM overlays for images"),
    "report": ("reslab.cli.report", "self-contained HTML report of a run"),
    "predict": ("reslab.cli.predict", "top-k predictions for files, folders or globs"),
    "embed": ("reslab.cli.embed", "features of a layer for a folder of images (.npy/.parquet)"),
    "similar": ("reslab.cli.similar", "nearest neighbours of an image in an embedding index"),
    "export": ("reslab.cli.export", "export to ONNX, TorchScript or ExportedProgram"),
    "bench": ("reslab.cli.bench", "inference and training throughput against torchvision"),
    "experiment": ("reslab.cli.experiment", "reproduce the paper's experiments"),
    "demo": ("reslab.cli.demo", "the README's main job: fine-tune vs from scratch"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab",
        description="Build ResNets from scratch, train and fine-tune them on your own images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from reslab import __version__

        print(f"reslab {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"reslab: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"reslab {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except TrainingInterrupted as e:  # the trainer saved a checkpoint and said where, once
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ReslabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
