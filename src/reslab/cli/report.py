"""``reslab report``: one self-contained HTML page about a training run.

    reslab report --checkpoint runs/fm20       # the same as the older `reslab report runs/fm20`
"""

from __future__ import annotations

from reslab.cli.options import add_device, add_json, add_precision, check_output
from reslab.errors import ConfigError


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="the run folder (the same as --checkpoint RUN_DIR)")  # fmt: skip
    p.add_argument("--checkpoint", metavar="RUN_DIR",
                   help="the run folder `reslab train` or `reslab finetune` created")  # fmt: skip
    p.add_argument("--data", help="dataset to evaluate on when needed (default: the run's own)")
    p.add_argument("--split", choices=("test", "val"),
                   help="split evaluated when metrics are missing")
    p.add_argument("--top-losses", type=int, default=8, help="highest-loss images to explain")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last stage)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: the batch training evaluated with)")
    add_device(p)
    add_precision(p, default=None, help="number format of the evaluation passes (default: the "
                  "one training evaluated with, so the page agrees with the training log)")
    add_json(p, "the report's path")


def run_folder_of(args) -> str:
    """The run folder from ``--checkpoint`` or the positional argument (one of them)."""
    if args.run_dir and args.checkpoint and args.run_dir != args.checkpoint:
        raise ConfigError(f"two run folders given ({args.run_dir} and --checkpoint "
                          f"{args.checkpoint}); pass one.")  # fmt: skip
    folder = args.checkpoint or args.run_dir
    if not folder:
        raise ConfigError("which run? pass --checkpoint RUN_DIR (the folder reslab train wrote).")
    return folder


def run(args) -> int:
    import json
    from pathlib import Path

    from reslab.evaluate import write_report

    from ..device import resolve_device

    if args.top_losses < 0:
        raise ConfigError(f"--top-losses must be >= 0, received {args.top_losses}.")
    folder = run_folder_of(args)
    if Path(folder).is_dir():
        check_output(Path(folder) / "report.html", "file", flag="the report")
    path = write_report(folder, data=args.data, split=args.split, top_losses=args.top_losses,
                        layer=args.layer, precision=args.precision, batch_size=args.batch_size,
                        device=resolve_device(args.device))  # fmt: skip
    if args.json:
        print(json.dumps({"report": str(path)}))
    else:
        print(f"wrote {path}  (open it in a browser: file://{path.resolve()})")
    return 0
