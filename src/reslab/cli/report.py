"""``reslab report``: one self-contained HTML page about a training run."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder `reslab train` created")
    p.add_argument("--data", help="dataset to evaluate on when needed (default: the run's own)")
    p.add_argument("--split", choices=("test", "val"),
                   help="split evaluated when metrics are missing")
    p.add_argument("--top-losses", type=int, default=8, help="highest-loss images to explain")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last stage)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def run(args) -> int:
    from reslab.evaluate import write_report

    from ..device import resolve_device

    path = write_report(args.run_dir, data=args.data, split=args.split, top_losses=args.top_losses,
                        layer=args.layer, device=resolve_device(args.device))
    print(f"wrote {path}  (open it in a browser: file://{path.resolve()})")
    return 0
