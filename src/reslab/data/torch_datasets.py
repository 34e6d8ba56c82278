"""``from_datasets``: your own torch map-style Datasets in, a ``DataBundle`` out.

Items are ``(image, label)`` with a PIL image or a CHW tensor and an int label, as
torchvision's datasets give them without a transform. Every image is decoded once into the
same uint8 tensors the built-in datasets use, so training takes the in-memory fast path
(whole-batch augmentation, no worker processes) and ``fit(cfg, data=bundle)`` runs as it
does for a folder.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image

from ..errors import ConfigError, DataError
from .bundle import DataBundle, Split
from .cache import resize_square
from .dataset import MEMORY_BUDGET_GB, channel_stats, check_mode
from .health import MIN_PER_CLASS, check_tensors, refuse_blocking, tensor_groups
from .images import normalize_mode, pil_to_uint8
from .splits import stratified_split
from .transforms import SMALL_IMAGE, make_preprocess, to_channels

_EXPECTED = "(image, label) with a PIL image or a CHW tensor (uint8, or float in 0..1) and an int label"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_describe(v) for v in value)})"
    return type(value).__name__


def _check_dataset(ds: Any, name: str) -> None:
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise DataError(
            f"{name}: received {type(ds).__name__}, which has no __getitem__/__len__; expected a "
            "map-style torch Dataset (an IterableDataset cannot be decoded into memory). "
            "Wrap it, or save the images to a folder and use load_dataset."
        )
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset is empty (len 0); expected at least one {_EXPECTED}.")


def _label(value: Any, where: str, item: Any) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: received {_describe(item)}; expected {_EXPECTED}. "
                        "One-hot or float labels: pass the class index instead.")  # fmt: skip
    return int(value)


def _image_tensor(image: Any, where: str, item: Any) -> torch.Tensor:
    """One item's image as uint8 (C, H, W), C in (1, 3)."""
    if isinstance(image, Image.Image):
        return pil_to_uint8(normalize_mode(image))
    if not isinstance(image, torch.Tensor) or image.dim() not in (2, 3):
        raise DataError(f"{where}: received {_describe(item)}; expected {_EXPECTED}.")
    x = image.detach().cpu()
    x = x[None] if x.dim() == 2 else x  # (H, W) -> (1, H, W)
    if x.shape[0] not in (1, 3):
        raise DataError(f"{where}: received {_describe(item)}; expected a CHW tensor with 1 or 3 "
                        "channels (an HWC array: permute(2, 0, 1) it).")  # fmt: skip
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise DataError(f"{where}: received {_describe(item)}; expected uint8 or float pixels.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise DataError(
            f"{where}: float pixels from {lo:.3g} to {hi:.3g}; expected 0..1 (ToTensor's range). "
            "Drop Normalize from the dataset's transform (reslab normalises with the bundle's "
            "mean/std), or give uint8 images."
        )
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _first_image(ds: Any, name: str) -> torch.Tensor:
    item = ds[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"{name}[0]: received {_describe(item)}; expected {_EXPECTED}.")
    return _image_tensor(item[0], f"{name}[0]", item)


def _decode(ds: Any, name: str, chans: int, store: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item once: ``(images uint8 (N, C, store, store), labels int64 (N,))``."""
    n = len(ds)
    images = torch.empty((n, chans, store, store), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        item = ds[i]
        where = f"{name}[{i}]"
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{where}: received {_describe(item)}; expected {_EXPECTED}.")
        x = to_channels(_image_tensor(item[0], where, item), chans)
        images[i] = resize_square(x, store)
        labels[i] = _label(item[1], where, item)
    return images, labels


def _class_names(classes: Sequence[str] | None, train: Any, labels: list[torch.Tensor]) -> list[str]:
    top = max(int(y.max()) for y in labels if len(y)) + 1
    low = min(int(y.min()) for y in labels if len(y))
    if low < 0:
        raise DataError(f"labels must be class indices 0..K-1; received {low}.")
    names = list(classes) if classes is not None else list(getattr(train, "classes", None) or [])
    if not names:
        return [str(i) for i in range(top)]
    if top > len(names):
        raise DataError(f"a label is {top - 1}, but {len(names)} classes were given ({names[:5]}...); "
                        "pass classes= with one name per label index.")  # fmt: skip
    return [str(c) for c in names]


def _storage(first: torch.Tensor, n: int, image_size: int | None, budget_gb: float) -> tuple[int, int, int]:
    """``(channels, image size, stored side)``, refusing what does not fit in memory."""
    chans = int(first.shape[0])
    size = image_size or int(min(first.shape[-2:]))
    if size < 1:
        raise ConfigError(f"image_size={size!r} must be a positive number of pixels.")
    store = size if size <= SMALL_IMAGE else make_preprocess(size, chans, [0] * chans, [1] * chans)["resize"]
    need_gb = n * chans * store * store / 1e9
    if need_gb > budget_gb:
        raise DataError(
            f"the datasets decode to {need_gb:.1f} GB of uint8 images ({n} images of {chans}x{store}x"
            f"{store}), over memory_budget_gb={budget_gb:g}. Raise memory_budget_gb, pass a smaller "
            "image_size, or save the images to a folder and use load_dataset (streamed from files)."
        )
    return chans, size, store


def _held_out(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split | None]:
    """A stratified val split drawn from ``train`` (pixel-identical images kept together)."""
    if val_fraction <= 0:
        return train, None
    keep, held = stratified_split(train.labels, val_fraction, seed, groups=tensor_groups(train.images).tolist())
    return train.subset(keep, "train"), train.subset(held, "val")


def _check(splits: dict[str, Split], names: list[str], mode: str, min_per_class: int, log) -> dict:
    """The health check of in-memory splits; refuses blocking problems unless ``warn``.
    The splits are the user's own, so leakage between them is blocking."""
    report = check_tensors("datasets", {k: (s.images, s.labels) for k, s in splits.items()}, names,
                           min_per_class, official=False)  # fmt: skip
    log(report.summary())
    if report.blocking and mode != "warn":
        refuse_blocking(report)
    return {**report.to_dict(), "skipped": []}


def from_datasets(
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    flip: bool = True,
    check: Any = True,
    min_per_class: int = MIN_PER_CLASS,
    memory_budget_gb: float = MEMORY_BUDGET_GB,
    log: Callable[[str], Any] | None = print,
) -> DataBundle:
    """Turns torch map-style Datasets into a ``DataBundle`` for ``fit(cfg, data=bundle)``.

    Args:
        train, val, test: map-style Datasets whose items are ``(image, label)``: a PIL image
            or a CHW tensor (uint8, or float in 0..1 as ``ToTensor`` gives; not normalised)
            and an int class index. ``val``/``test`` may be None.
        classes: index -> name; default: ``train.classes`` (torchvision datasets have it),
            else ``"0"``, ``"1"``, ...
        image_size: model input side; default: the first training image's shorter side.
            Every image is resized (shorter side) and centre-cropped to a square.
        val_fraction: share of each class held out from ``train`` when ``val`` is None.
        seed: that split depends only on this.
        mean, std: normalisation; default: measured on the training images.
        flip: horizontal flips keep an image's class (False for digits, text...).
        check: as ``load_dataset``: True refuses blocking problems (duplicates across
            splits, empty or single classes), ``warn`` only reports, False skips.
        min_per_class: threshold of the ``small_class`` warning.
        memory_budget_gb: the decoded uint8 images must fit in this.
        log: where the check summary goes (None: silent).
    Returns:
        A ``DataBundle`` whose splits hold uint8 images in memory (the built-ins' fast path).
    Raises:
        DataError for items of the wrong type (naming what was received), bad labels,
        data over the memory budget, or blocking problems; ConfigError for bad arguments.
    """
    log = log or (lambda msg: None)
    mode = check_mode(check)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} must be in [0, 1); e.g. 0.1 holds out 10%.")
    given = {"train": train, "val": val, "test": test}
    given = {k: ds for k, ds in given.items() if ds is not None}
    for name, ds in given.items():
        _check_dataset(ds, name)
    n = sum(len(ds) for ds in given.values())
    chans, size, store = _storage(_first_image(train, "train"), n, image_size, memory_budget_gb)
    decoded = {name: _decode(ds, name, chans, store) for name, ds in given.items()}
    names = _class_names(classes, train, [y for _, y in decoded.values()])
    splits = {k: Split(k, y, images=x, hflip=flip) for k, (x, y) in decoded.items()}
    made_val = "val" not in splits
    if made_val:
        splits["train"], held = _held_out(splits["train"], val_fraction, seed)
        if held is not None:
            splits["val"] = held
    health = _check(splits, names, mode, min_per_class, log) if mode else None
    if mean is None or std is None:
        mean, std = channel_stats(splits["train"].images)
    split_info = {
        "source": "datasets", "layout": "torch-datasets", "seed": seed, "stratified": made_val,
        "val_fraction": val_fraction if made_val else None, "val_from": "train" if made_val else "given",
        "storage": "memory", "datasets": {k: type(ds).__name__ for k, ds in given.items()},
        "counts": {k: len(s) for k, s in splits.items()},
    }  # fmt: skip
    return DataBundle(f"datasets({type(train).__name__})", names, splits["train"], splits.get("val"),
                      splits.get("test"), chans, make_preprocess(size, chans, mean, std, store), split_info,
                      health)  # fmt: skip
