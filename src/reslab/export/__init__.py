"""Export and fast inference: from a trained model to a deployable, checked artifact.

    fast = optimize_for_inference(model, example_batch)          # folded, channels_last, bf16
    export_model("runs/x/checkpoints/best.pt", "onnx", "artifact/")  # + parity check
    run_bench("resnet50", batch_size=32)                          # against torchvision

Names are imported lazily (PEP 562) so ``import reslab.export`` loads neither onnx nor torchao.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "optimize_for_inference": "optimize",
    "OptimizedModel": "optimize",
    "InferenceInfo": "optimize",
    "fold_batchnorm": "fuse",
    "fold_conv_bn": "fuse",
    "quantize_pt2e": "quantize",
    "int8_backend": "quantize",
    "export_model": "artifact",
    "load_artifact": "artifact",
    "ParityError": "artifact",
    "ExportResult": "artifact",
    "compare_logits": "parity",
    "ParityReport": "parity",
    "run_bench": "bench",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
