"""The artifact folder: a checkpoint in, a deployable folder out, checked before it is trusted.

Layout (``reslab export --out DIR``)::

    DIR/
      model.onnx | model.pt | model.pt2   the network (ONNX / TorchScript / ExportedProgram)
      preprocess.json                      input size, resize, crop, mean, std (the checkpoint's)
      labels.json                          ["class 0 name", "class 1 name", ...]
      model_card.md                        architecture, size, accuracy, parity, how to run it

After writing, the artifact is loaded back the way a user would (onnxruntime, ``torch.jit.load``,
``torch.export.load``) and compared with the PyTorch model on real validation images when
the checkpoint's dataset is at hand (generated images otherwise). A failed check raises
``ParityError`` with the numbers, so the CLI exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.transforms import check_preprocess
from ..errors import ConfigError, ReslabError
from .cast import cast_model
from .fuse import fold_batchnorm
from .parity import ParityReport, compare_logits, run_batches

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt", "exported-program": "model.pt2"}
# Which number formats each format can hold and run where it is loaded.
SUPPORTED = {
    "onnx": ("fp32", "int8"),
    "torchscript": ("fp32", "bf16"),
    "exported-program": ("fp32", "bf16", "int8"),
}
_WHY_NOT = {
    ("onnx", "bf16"): "onnxruntime's CPU provider has no bf16 convolutions; export fp32 "
    "(onnxruntime picks its own fast kernels) or int8",
    ("torchscript", "int8"): "PyTorch 2 int8 models cannot be scripted; use --format onnx "
    "or --format exported-program for int8",
}


class ParityError(ReslabError):
    """The exported artifact does not compute what the PyTorch model computes."""


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how its check went."""

    out_dir: Path
    model_path: Path
    format: str
    precision: str
    parity: ParityReport
    accuracy: dict | None


def opset_range() -> tuple[int, int]:
    """The ONNX opsets PyTorch's exporter writes here: 17 up to its newest."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # private, but the only record of it
    except ImportError:
        ONNX_MAX_OPSET = 20
    return 17, int(ONNX_MAX_OPSET)


def check_export_args(fmt: str, precision: str, opset: int | None = None,
                      parity_images: int = 256) -> None:  # fmt: skip
    """Raises ``ConfigError`` for options that cannot be exported, before any work: the
    format/precision pair, the opset range, the parity image count, a missing extra."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}.")
    if precision not in ("fp32", "bf16", "int8"):
        raise ConfigError(f"--precision {precision!r} is not supported; choose fp32, bf16 or int8.")
    if precision not in SUPPORTED[fmt]:
        why = _WHY_NOT.get((fmt, precision), "unsupported combination")
        raise ConfigError(f"--format {fmt} with --precision {precision}: {why}.")
    if opset is not None and fmt != "onnx":
        raise ConfigError(f"--opset applies to --format onnx only (received --format {fmt}).")
    low, high = opset_range()
    if opset is not None and not low <= opset <= high:
        raise ConfigError(f"--opset {opset} is out of range: PyTorch's ONNX exporter writes "
                          f"opsets {low} to {high}; leave it out for the default (18).")  # fmt: skip
    if parity_images < 1:
        raise ConfigError(f"--parity-images {parity_images}: the parity check needs at least 1 "
                          "image (default 256).")  # fmt: skip
    from .extras import require_extra

    require_extra(fmt)


def _preprocess_of(model: nn.Module, ckpt: dict) -> dict:
    pre = dict(ckpt.get("preprocess") or {})
    if pre.get("input_size"):
        return pre
    # A weights-only checkpoint: rebuild the record from the architecture's defaults.
    cfg = model.default_cfg
    c, h, _ = cfg["input_size"]
    return {
        "input_size": [c, h, h],
        "resize": int(round(h / cfg.get("crop_pct", 1.0))),
        "crop": h,
        "mean": list(cfg["mean"])[:c] if c > 1 else [sum(cfg["mean"]) / len(cfg["mean"])],
        "std": list(cfg["std"])[:c] if c > 1 else [sum(cfg["std"]) / len(cfg["std"])],
        "interpolation": "bilinear",
    }


def _write_model(folded, fmt, precision, example, calibration, path, opset) -> None:
    from . import onnx as onnx_io
    from .program import export_program
    from .torchscript import export_torchscript

    if fmt == "onnx":
        if precision == "int8":
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                fp32 = onnx_io.export_onnx(folded, example, Path(tmp) / "fp32.onnx", opset)
                onnx_io.quantize_onnx_int8(fp32, path, calibration.split(32))
        else:
            onnx_io.export_onnx(folded, example, path, opset)
    elif precision == "int8":  # exported-program
        from .quantize import quantize_pt2e

        export_program(quantize_pt2e(folded, example, calibration.split(32)), example, path)
    else:
        net = cast_model(folded, torch.bfloat16 if precision == "bf16" else torch.float32)
        (export_torchscript if fmt == "torchscript" else export_program)(net, example, path)


def export_model(
    checkpoint: str | os.PathLike | dict,
    fmt: str,
    out: str | os.PathLike,
    *,
    precision: str = "fp32",
    opset: int | None = None,
    data: str | None = None,
    parity_images: int = 256,
    log: Callable[[str], None] | None = logging.getLogger("reslab.export").info,
) -> ExportResult:
    """Exports a reslab checkpoint to a checked artifact folder.

    Args:
        checkpoint: a checkpoint file, a run folder, or a loaded checkpoint dict.
        fmt: ``onnx``, ``torchscript`` or ``exported-program``.
        out: the folder to write (created; files of the same name are replaced).
        precision: ``fp32``, ``bf16`` (TorchScript, ExportedProgram) or ``int8`` (ONNX via
            onnxruntime's static quantization; ExportedProgram via PT2E).
        opset: ONNX opset (default 18).
        data: dataset for parity/calibration images; default: the one in the checkpoint's config.
        parity_images: how many validation images the check uses.
        log: where progress and the parity line go (default: the ``reslab.export`` logger;
            None: silent).
    Returns:
        ``ExportResult``.
    Raises:
        ConfigError for unsupported options; ParityError when the artifact disagrees.
    """
    from ..models.checkpoint import model_from_checkpoint, read_checkpoint
    from .samples import samples_for

    say = log or (lambda _m: None)
    check_export_args(fmt, precision, opset, parity_images)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the artifact.")
    ckpt = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    classes = list(ckpt.get("classes") or [str(i) for i in range(model.num_classes)])
    if len(classes) != model.num_classes:
        raise ConfigError(
            f"the checkpoint lists {len(classes)} classes but its model has {model.num_classes} outputs."
        )
    preprocess = check_preprocess(_preprocess_of(model, ckpt), "the checkpoint")
    data = data or ((ckpt.get("config") or {}).get("data") or {}).get("source")
    samples = samples_for(preprocess, data, n=parity_images, log=say)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FORMATS[fmt]
    folded, fold = fold_batchnorm(model)
    example = samples.images[:8] if len(samples.images) >= 2 else samples.images.repeat(2, 1, 1, 1)
    say(f"exporting {model.model_args['name']} to {path} ({fmt}, {precision}; {fold.describe()})")
    _write_model(folded, fmt, precision, example, samples.calibration, path, opset)
    if fmt == "onnx":  # labels and preprocessing travel inside the file too
        from .onnx import write_metadata

        write_metadata(path, classes, preprocess)
    (out / "preprocess.json").write_text(json.dumps(preprocess, indent=2) + "\n")
    (out / "labels.json").write_text(json.dumps(classes, indent=2, ensure_ascii=False) + "\n")

    parity, accuracy = _check(model, out, samples, precision, say)
    card = _card(
        model, ckpt, classes, preprocess, fmt, precision, path.name, opset, parity, accuracy
    )
    (out / "model_card.md").write_text(card)
    if not parity.passed:
        raise ParityError(
            f"the exported {fmt} ({precision}) model disagrees with PyTorch: {parity.describe()}. "
            f"The files are left in {out} for inspection; do not deploy them."
        )
    say(f"wrote {out}/: {path.name}, preprocess.json, labels.json, model_card.md")
    return ExportResult(out, path, fmt, precision, parity, accuracy)


def _check(model, out, samples, precision, say) -> tuple[ParityReport, dict | None]:
    """Loads the artifact back and compares it with the PyTorch model (and the labels)."""
    artifact = load_artifact(out)
    with torch.no_grad():
        reference = run_batches(model, samples.images, label="parity: PyTorch")
    candidate = run_batches(artifact, samples.images, label="parity: artifact")
    parity = compare_logits(reference, candidate, precision, samples.source)
    say(parity.describe())
    if samples.labels is None:
        return parity, None
    acc = {
        "pytorch_top1": (reference.argmax(1) == samples.labels).float().mean().item(),
        "artifact_top1": (candidate.argmax(1) == samples.labels).float().mean().item(),
        "n": len(samples.labels),
        "source": samples.source,
    }
    acc["drop_points"] = 100 * (acc["pytorch_top1"] - acc["artifact_top1"])
    say(
        f"top-1 on {acc['n']} {samples.source} images: artifact {100 * acc['artifact_top1']:.2f}% "
        f"vs PyTorch fp32 {100 * acc['pytorch_top1']:.2f}% (drop {acc['drop_points']:.2f} points)"
    )
    return parity, acc


def _card(model, ckpt, classes, preprocess, fmt, precision, file, opset, parity, acc) -> str:
    from ..models import count_macs, count_params
    from .card import model_card
    from .onnx import DEFAULT_OPSET

    acc_line = None
    if acc:
        acc_line = (
            f"{100 * acc['artifact_top1']:.2f}% top-1 on {acc['n']} {acc['source']} images "
            f"(PyTorch fp32: {100 * acc['pytorch_top1']:.2f}%)"
        )
    return model_card(
        name=model.model_args["name"],
        paper=getattr(model, "default_cfg", {}).get("paper", ""),
        params=count_params(model),
        macs=count_macs(model, tuple(preprocess["input_size"])),
        classes=classes,
        preprocess=preprocess,
        fmt=fmt,
        precision=precision,
        model_file=file,
        metrics=dict(ckpt.get("metrics") or {}),
        parity_line=parity.describe(),
        accuracy_line=acc_line,
        opset=(opset or DEFAULT_OPSET) if fmt == "onnx" else None,
    )


class Artifact:
    """A loaded artifact folder: call it on preprocessed fp32 (B, C, H, W) tensors.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        preprocess: the preprocessing record; ``labels``: index -> class name.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        folder = Path(folder)
        found = [(f, folder / name) for f, name in FORMATS.items() if (folder / name).exists()]
        if not found:
            raise ConfigError(
                f"{folder} holds no model.onnx, model.pt or model.pt2; is it a reslab export folder?"
            )
        self.format, self.path = found[0]
        self.preprocess = json.loads((folder / "preprocess.json").read_text())
        self.labels = json.loads((folder / "labels.json").read_text())
        if self.format == "onnx":
            from .onnx import OnnxRunner

            self._run = OnnxRunner(self.path, threads)
        elif self.format == "torchscript":
            from .torchscript import load_torchscript

            self._run = load_torchscript(self.path)
        else:
            from .program import load_program

            self._run = load_program(self.path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.as_tensor(self._run(x)).float()


def load_artifact(folder: str | os.PathLike, threads: int | None = None) -> Artifact:
    """Loads an export folder with the runtime its format needs (no reslab model code)."""
    return Artifact(folder, threads)
