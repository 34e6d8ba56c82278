"""Data in: image folders, CSV manifests and built-in datasets; a health check before
training; loaders fast enough to keep the model busy on 2 CPU cores.

    bundle = load_dataset("fashion-mnist")          # or a folder, a CSV, "digits", "cifar10"
    loader = make_loader(bundle.train, batch_size=256, train=True, preprocess=bundle.preprocess)
    for x, y in loader: ...                          # x float (B, C, H, W) normalised, y int64

Names are imported lazily (PEP 562) so ``import reslab.data`` does no work.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "load_dataset": "dataset",
    "channel_stats": "dataset",
    "from_datasets": "torch_datasets",
    "DataBundle": "bundle",
    "Split": "bundle",
    "check_classes": "bundle",
    "check_out_not_inside": "sources",
    "make_loader": "loaders",
    "InMemoryLoader": "loaders",
    "StreamingLoader": "loaders",
    "progressive_sizes": "loaders",
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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
