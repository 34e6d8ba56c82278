"""Data in: image folders, CSV manifests and built-in datasets; a health check before
training; loaders fast enough to keep the model busy on 2 CPU cores.

    bundle = load_dataset("fashion-mnist")          # or a folder, a CSV, "digits", "cifar10"
    loader = make_loader(bundle.train, batch_size=256, train=True, preprocess=bundle.preprocess)
    for x, y in loader: ...                          # x float (B, C, H, W) normalised, y int64

Names are imported lazily (PEP 562) so ``import reslab.data`` does no work.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_dataset": "dataset",
    "channel_stats": "dataset",
    "DataBundle": "bundle",
    "Split": "bundle",
    "check_classes": "bundle",
    "make_loader": "loaders",
    "InMemoryLoader": "loaders",
    "StreamingLoader": "loaders",
    "load_image": "images",
    "load_image_tensor": "images",
    "eval_transform": "transforms",
    "make_preprocess": "transforms",
    "adapt_preprocess": "transforms",
    "resolve_augment": "transforms",
    "check_dataset": "health",
    "HealthReport": "health",
    "Problem": "health",
    "mixup_cutmix": "batch_ops",
    "class_weights": "sampling",
    "write_digits_folder": "digits",
    "read_fashion_mnist": "fashion_mnist",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
