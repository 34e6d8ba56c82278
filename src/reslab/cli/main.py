"""Entry point of the ``reslab`` command.

Each sub-command lives in ``reslab/cli/<name>.py`` and defines ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``reslab --help`` stays fast.

Exit codes (docs/cli.md): 0 ok; 1 ``check`` found blocking problems (or predict/explain
read no image); 2 usage, config or data error; 3 runtime failure; 130/143 interrupted by
SIGINT/SIGTERM. A failure prints one message, never a traceback (``--verbose`` adds it).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys

from reslab.cli.options import HelpFormatter
from reslab.engine.signals import TrainingInterrupted
from reslab.errors import ReslabError

EXIT_OK, EXIT_BLOCKING, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("reslab.cli.models", "list every architecture with parameters and MACs"),
    "summary": ("reslab.cli.summary", "per-layer table of one model"),
    "recipes": ("reslab.cli.recipes", "list the training recipes shipped with reslab"),
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
    "export": ("reslab.cli.export", "export to ONNX, TorchScript, ExportedProgram, Hugging Face or timm"),
    "serve": ("reslab.cli.serve", "HTTP endpoint, web page and metrics for a trained model"),
    "push": ("reslab.cli.push", "upload an export folder to the Hugging Face Hub"),
    "bench": ("reslab.cli.bench", "inference and training throughput against torchvision"),
    "experiment": ("reslab.cli.experiment", "reproduce the paper's experiments"),
    "demo": ("reslab.cli.demo", "the README's main job: fine-tune vs from scratch"),
    "completion": ("reslab.cli.completion", "print a bash or zsh completion script"),
}
VERBOSITY = {"-q": logging.WARNING, "--quiet": logging.WARNING,
             "-v": logging.DEBUG, "--verbose": logging.DEBUG}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab",
        description="Build ResNets from scratch, train and fine-tune them on your own images.",
        epilog="Exit codes: 0 ok, 1 check found blocking problems, 2 usage/config/data error, "
        "3 runtime failure, 130/143 interrupted.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def add_verbosity(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="debug messages, and the traceback of a failure")  # fmt: skip


def build_verb_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one verb (also what shell completion is generated from)."""
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"reslab {name}", description=COMMANDS[name][1],
                                  formatter_class=HelpFormatter)  # fmt: skip
    module.add_arguments(sub)
    add_verbosity(sub)
    return sub


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the moment of each message (a redirected or
    captured stderr included), not the stream that was current when it was created."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int) -> None:
    """The ``reslab`` logger writes plain messages to stderr; library code logs under it."""
    logger = logging.getLogger("reslab")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def unknown_command(parser: argparse.ArgumentParser, name: str) -> int:
    parser.print_usage(sys.stderr)
    close = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {', '.join(COMMANDS)}"
    print(f"reslab: unknown command {name!r}{hint}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    level = logging.INFO
    while argv and argv[0] in VERBOSITY:  # reslab -q train ...: global flags before the verb
        level = VERBOSITY[argv.pop(0)]
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return EXIT_OK
    if argv[0] == "--version":
        from reslab import __version__

        print(f"reslab {__version__}")
        return EXIT_OK
    name = argv[0]
    if name not in COMMANDS:
        return unknown_command(parser, name)
    args = build_verb_parser(name).parse_args(argv[1:])
    if args.quiet or args.verbose:
        level = logging.WARNING if args.quiet else logging.DEBUG
    setup_logging(level)
    from reslab import cpu_memory

    cpu_memory.configure()  # the CLI opts in (no page faults per batch); `import reslab` does not
    return run_verb(name, args, verbose=level == logging.DEBUG)


def run_verb(name: str, args: argparse.Namespace, verbose: bool) -> int:
    """Runs one verb and turns every failure into a message and an exit code."""
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.run(args) or 0)
    except TrainingInterrupted as e:  # the trainer saved a checkpoint and said where, once
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ReslabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - the last line of defence: one message, not a traceback
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"error: reslab {name} failed: {type(e).__name__}: {e}\n"
              f"(rerun with --verbose for the traceback; please report it if it looks like a bug)",
              file=sys.stderr)  # fmt: skip
        return EXIT_RUNTIME


def describe_os_error(e: OSError) -> str:
    """A file error as a person reads it: which path, what went wrong, what to do."""
    path = e.filename or "a path"
    fixes = (
        (FileNotFoundError, "check the path, or create its parent folder first"),
        (NotADirectoryError, "a part of the path is a file; choose a folder"),
        (IsADirectoryError, "it is a folder; pass a file name"),
        (PermissionError, "choose a place you may write to, or fix its permissions"),
    )
    fix = next((text for kind, text in fixes if isinstance(e, kind)), "check the path")
    return f"{path}: {e.strerror or e}; {fix}."


if __name__ == "__main__":
    raise SystemExit(main())
