"""``reslab demo`` (what ``make demo`` runs): fine-tune the shipped weights vs train from
scratch, on scikit-learn's digits written out as an image folder. Offline, a few minutes
on a laptop CPU.

    reslab demo                  # 5 labels per digit, 20 epochs, runs in demo_runs/
    reslab demo --quick          # 4 epochs, no HTML report: a smoke test in well under a minute
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_runs", metavar="DIR", help="where the image folder and runs go")
    p.add_argument("--per-class", type=int, default=5, dest="per_class", metavar="N",
                   help="labelled training images per digit (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of both runs (default 20; --quick: 4)")
    p.add_argument("--seed", type=int, default=0)
    # Batches of 8 images of 28x28 px leave nothing for a second thread to share, and OpenMP
    # threads that spin-wait slow down sharply when the machine is busy: one thread is the
    # robust default here (reslab train and finetune use every core).
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: the batches are tiny)")
    p.add_argument("--quick", action="store_true", help="4 epochs and no report (a smoke test)")


def run(args: argparse.Namespace) -> int:
    from reslab.errors import ConfigError
    from reslab.experiments.demo import run_demo

    if args.per_class < 1:
        raise ConfigError(f"--per-class {args.per_class}: keep at least 1 labelled image per digit.")
    epochs = args.epochs or (4 if args.quick else 20)
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs} must be >= 1.")
    run_demo(args.out, per_class=args.per_class, epochs=epochs, seed=args.seed,
             report=not args.quick, threads=args.threads)  # fmt: skip
    return 0
