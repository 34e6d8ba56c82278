"""``reslab serve``: an HTTP endpoint, a web page and Prometheus metrics for a trained model."""

from __future__ import annotations

import argparse

from reslab.cli.options import PRECISIONS, refuse_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN|CHECKPOINT|EXPORT",
                   help="a run folder, a checkpoint file, or a folder written by `reslab export`")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require this value in the X-API-Key header of /predict and /explain")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most images per forward pass (default 32; 1 = one request per forward)")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its batch (default 5)")
    p.add_argument("--queue", type=int, default=256,
                   help="most requests waiting; beyond it the server answers 503 (default 256)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest image file accepted, in MB (default 10)")
    p.add_argument("--precision", default="auto", choices=[*PRECISIONS, "int8"],
                   help="number format of the forward pass (default auto: bf16 where the CPU "
                        "has it)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch intra-op threads")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve.app import ServeSettings
    from ..serve.server import serve

    refuse_precision("reslab serve", args.precision, {
        "fp16": "the server runs the CPU-optimized model, which has no fast fp16 path"})  # fmt: skip
    if args.max_batch < 1 or args.queue < 1 or args.max_delay_ms < 0 or args.max_upload_mb <= 0:
        raise ConfigError(f"--max-batch {args.max_batch} and --queue {args.queue} must be >= 1, "
                          f"--max-delay-ms {args.max_delay_ms} >= 0, --max-upload-mb "
                          f"{args.max_upload_mb} > 0.")
    if args.threads:
        from ..device import set_cpu_threads

        set_cpu_threads(args.threads)
    settings = ServeSettings(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                             queue_size=args.queue, api_key=args.api_key,
                             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    serve(args.path, args.host, args.port, settings, args.precision)
    return 0
