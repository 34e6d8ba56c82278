"""``reslab export``: a checkpoint to an ONNX / TorchScript / ExportedProgram artifact folder."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    parser.add_argument(
        "--format", required=True, choices=["onnx", "torchscript", "exported-program"]
    )
    parser.add_argument("--out", required=True, help="artifact folder to write")
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


def run(args: argparse.Namespace) -> int:
    from ..export.artifact import export_model

    export_model(
        args.checkpoint,
        args.format,
        args.out,
        precision=args.precision,
        opset=args.opset,
        data=args.data,
        parity_images=args.parity_images,
    )
    return 0
