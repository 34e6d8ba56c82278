"""``reslab bench``: inference and training throughput of reslab against torchvision."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet50", help="architecture (default resnet50)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224, help="input side in px")
    parser.add_argument("--mode", default="inference", choices=["inference", "train", "both"])
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per path first")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all usable)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="optimised paths stay eager (skips the compile time)",
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 path")
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        choices=["eager", "jit", "compile"],
        help="extra rows: the optimised path with these backends too",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    parser.add_argument("--train-compile", action="store_true",
                        help="training rows: add the best plain loop (torchvision + fused SGD + "
                             "torch.compile) and reslab's engine step compiled")  # fmt: skip
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="torch.compile mode of the compiled engine step (reduce-overhead: CUDA graphs)")  # fmt: skip
    parser.add_argument("--fused", default="auto", choices=["auto", "on", "off"],
                        help="optimizer kernels of the engine rows: auto (fused where supported), "
                             "on (fused, or the fallback with its reason), off (foreach)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys

    from ..export.throughput_vs_torchvision import format_table, run_bench

    # With --json, progress goes to stderr so stdout stays machine-readable.
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = run_bench(
        args.model,
        batch_size=args.batch_size,
        image_size=args.image_size,
        mode=args.mode,
        iters=args.iters,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        compile=not args.no_compile,
        int8=not args.no_int8,
        backends=tuple(args.also),
        log=log,
        train_compile=args.train_compile,
        compile_mode=args.compile_mode,
        fused={"auto": None, "on": True, "off": False}[args.fused],
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
