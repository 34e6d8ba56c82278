"""ONNX: write the model with a dynamic batch dimension, run it with onnxruntime, quantize it.

The exporter is PyTorch's ``torch.export``-based one (the default since 2.9). Weights stay
inside the one ``model.onnx`` file (a ResNet-50 is ~100 MB, far below protobuf's 2 GB).
int8 uses onnxruntime's static quantization (QDQ format, per-channel int8 weights, uint8
activations whose ranges are calibrated on real images), the form its CPU and GPU
execution providers fuse into integer kernels.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, opset: int | None = None
) -> Path:
    """Writes ``model`` as ONNX with a dynamic batch dimension.

    Args:
        model: fp32 eval model (BatchNorm folded or not: onnxruntime folds it too).
        example_input: (B, C, H, W) fp32; B >= 2 so the batch stays symbolic.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (default 18; 17 and newer are supported by the exporter).
    Returns:
        The path written. Input ``input`` (batch, C, H, W) -> output ``logits`` (batch, K).
    """
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < 17:
        raise ConfigError(
            f"--opset {opset} is too old for PyTorch's ONNX exporter; use 17 or newer (default {DEFAULT_OPSET})."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_input if len(example_input) >= 2 else example_input.repeat(2, 1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def write_metadata(path: str | os.PathLike, labels: list[str], preprocess: dict) -> None:
    """Stores the labels and preprocessing in the file's ``metadata_props`` (JSON strings),
    so a runtime that receives only ``model.onnx`` still knows its classes, mean/std and
    input size (onnxruntime: ``session.get_modelmeta().custom_metadata_map``)."""
    import json

    import onnx

    model = onnx.load(str(path))
    props = {"labels": labels, "input_size": preprocess["input_size"], "mean": preprocess["mean"],
             "std": preprocess["std"], "resize": preprocess.get("resize"),
             "crop": preprocess.get("crop"), "producer": "reslab"}
    onnx.helper.set_model_props(model, {k: json.dumps(v, ensure_ascii=False) for k, v in props.items()})
    onnx.save(model, str(path))


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` on the best available provider (CUDA, else CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxRunner:
    """Calls an onnxruntime session like a model: fp32 (B, C, H, W) tensor -> fp32 logits tensor."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def quantize_onnx_int8(
    fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: Iterable[torch.Tensor]
) -> Path:
    """Statically quantizes an fp32 ONNX model to int8 with onnxruntime.

    Args:
        fp32_path: the exported fp32 model.
        out_path: where the int8 model goes.
        calibration: fp32 batches of real preprocessed images (activation ranges).
    Returns:
        ``out_path``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(x.float().cpu().numpy()) for x in calibration]
    if not batches:
        raise ValueError("int8 calibration received no images; pass real preprocessed images.")

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

        def rewind(self):
            self._it = iter(batches)

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantizing.
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path
