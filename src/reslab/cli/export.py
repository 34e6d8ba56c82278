"""``reslab export``: a checkpoint to an ONNX / TorchScript / ExportedProgram artifact folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    parser.add_argument(
        "--format", required=True,
        choices=["onnx", "torchscript", "exported-program", "hf", "timm"],
        help="hf: a folder transformers loads (AutoModelForImageClassification); "
             "timm: weights timm.create_model loads",
    )
    parser.add_argument("--out", default=None,
                        help="artifact folder to write (default: RUN/export/FORMAT, with -PRECISION "
                             "unless fp32; next to a checkpoint file outside a run: "
                             "NAME-FORMAT[-PRECISION])")  # fmt: skip
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "int8"],
        help="number format inside the artifact (default fp32)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--data",
        default=None,
        help="dataset for the parity check and int8 calibration "
        "(default: the one named in the checkpoint's config)",
    )
    parser.add_argument(
        "--parity-images",
        type=int,
        default=256,
        help="validation images compared against PyTorch (default 256)",
    )


def default_out(checkpoint: str, fmt: str, precision: str) -> Path:
    """Where an artifact goes without ``--out``: inside the run folder, one folder per format
    and precision, so exports of one run sit together and do not replace each other."""
    from ..run_folder import RunFolder

    path, run = RunFolder.resolve_checkpoint(checkpoint)
    name = fmt if precision == "fp32" else f"{fmt}-{precision}"
    return run.path / "export" / name if run else path.with_name(f"{path.stem}-{name}")


def run(args: argparse.Namespace) -> int:
    from ..export.artifact import export_model

    if args.format in ("hf", "timm"):  # fp32 weights for another library, checked on load
        from ..export.hf import export_hf
        from ..export.timm_format import export_timm

        if args.precision != "fp32":
            from ..errors import ConfigError

            raise ConfigError(f"--format {args.format} writes fp32 weights; drop --precision "
                              f"{args.precision} (received).")
        out = args.out or default_out(args.checkpoint, args.format, "fp32")
        (export_hf if args.format == "hf" else export_timm)(args.checkpoint, out)
        return 0
    export_model(
        args.checkpoint,
        args.format,
        args.out or default_out(args.checkpoint, args.format, args.precision),
        precision=args.precision,
        opset=args.opset,
        data=args.data,
        parity_images=args.parity_images,
    )
    return 0
