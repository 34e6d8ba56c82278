"""Export and fast inference: from a trained model to a deployable, checked artifact.

    fast = optimize_for_inference(model, example_batch)          # folded, channels_last, bf16
    export_model("runs/x/checkpoints/best.pt", "onnx", "artifact/")  # + parity check
    run_bench("resnet50", batch_size=32)                          # against torchvision

Names are imported lazily (PEP 562) so ``import reslab.export`` loads neither onnx nor torchao.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

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
    "run_bench": "throughput_vs_torchvision",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
