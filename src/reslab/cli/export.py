"""``reslab export``: a checkpoint to an ONNX / TorchScript / ExportedProgram artifact folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from reslab.cli.options import PRECISIONS, add_checkpoint, add_json, check_output, refuse_precision

# auto means fp32 here: an artifact runs on machines other than this one, so it does not
# follow this CPU's bf16 support. int8 exists only for export (it quantizes the weights).
EXPORT_PRECISIONS = (*PRECISIONS, "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser)
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
    parser.add_argument("--precision", default="fp32", choices=EXPORT_PRECISIONS,
                        help="number format inside the artifact: auto and fp32 are fp32 (portable), "
                             "int8 quantizes (default fp32)")  # fmt: skip
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--data", default=None,
                        help="dataset for the parity check and int8 calibration "
                             "(default: the one named in the checkpoint's config)")  # fmt: skip
    parser.add_argument("--parity-images", type=int, default=256,
                        help="validation images compared against PyTorch (default 256)")  # fmt: skip
    add_json(parser, "the artifact's files and parity figures")


def default_out(checkpoint: str, fmt: str, precision: str) -> Path:
    """Where an artifact goes without ``--out``: inside the run folder, one folder per format
    and precision, so exports of one run sit together and do not replace each other."""
    from ..run_folder import RunFolder

    path, run = RunFolder.resolve_checkpoint(checkpoint)
    name = fmt if precision == "fp32" else f"{fmt}-{precision}"
    return run.path / "export" / name if run else path.with_name(f"{path.stem}-{name}")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..export.artifact import export_model

    if args.format in ("hf", "timm"):  # fp32 weights for another library, checked on load
        return _export_other_library(args)
    refuse_precision("reslab export", args.precision, {
        "fp16": "fp16 artifacts are not built (CPU runtimes have no fast fp16 path and the "
                "parity check would fail); bf16 halves the size the same way"})  # fmt: skip
    precision = "fp32" if args.precision == "auto" else args.precision
    out = check_output(args.out or default_out(args.checkpoint, args.format, precision), "dir")
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = export_model(
        args.checkpoint,
        args.format,
        out,
        precision=precision,
        opset=args.opset,
        data=args.data,
        parity_images=args.parity_images,
        log=log,
    )
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), indent=2, default=str))
    return 0


def _export_other_library(args: argparse.Namespace) -> int:
    """``--format hf|timm``: fp32 weights another library loads as its own (checked on load)."""
    from ..errors import ConfigError
    from ..export.hf import export_hf
    from ..export.timm_format import export_timm

    if args.precision not in ("auto", "fp32"):
        raise ConfigError(f"--format {args.format} writes fp32 weights; drop --precision "
                          f"{args.precision} (received).")
    out = check_output(args.out or default_out(args.checkpoint, args.format, "fp32"), "dir")
    (export_hf if args.format == "hf" else export_timm)(args.checkpoint, out)
    return 0
