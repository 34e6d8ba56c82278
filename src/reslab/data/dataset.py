"""``load_dataset``: any supported source in, a checked and split ``DataBundle`` out.

Order of work, cheapest first, so a bad dataset fails in seconds, not hours:
scan files -> fast health check (refuse blocking problems) -> split -> decide channels,
size and storage -> decode (once; cached on disk) -> normalisation statistics.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import warnings
from typing import Any, Callable

import torch
from PIL import Image

from ..errors import ConfigError, DataError
from .builtin_datasets import (
    BuiltinData,
    read_cifar,
    read_digits_builtin,
    read_fashion_mnist_cached,
    resolve_builtin,
)
from .bundle import DataBundle, Split
from .cache import decode_files, decode_files_cached
from .file_checks import screen_files
from .health import (
    MIN_PER_CLASS,
    HealthReport,
    check_scan,
    check_tensors,
    refuse_blocking,
    tensor_groups,
)
from .sources import Scan, _label_sort_key, scan_source
from .splits import stratified_split
from .transforms import SMALL_IMAGE, make_preprocess, to_channels

DEFAULT_IMAGE_SIZE = 224  # px: the largest default for folders (ImageNet-style models)
MEMORY_BUDGET_GB = 2.0  # decoded uint8 bytes below which a folder is kept in memory
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..1 units) of uint8 images (N, C, H, W).

    Computed exactly from each channel's 256-bin histogram, which needs no float copy of
    the dataset (Fashion-MNIST train: mean 0.2860, std 0.3530).
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for ch in range(images.shape[1]):
        hist = torch.bincount(images[:, ch].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum().clamp(min=1)
        m = (hist * values).sum() / total
        var = (hist * (values - m).square()).sum() / total
        mean.append(round(float(m), 4))
        std.append(round(float(var.clamp(min=1e-12).sqrt()), 4))
    return mean, std


def _digest(items) -> str:
    return hashlib.sha256("\n".join(map(str, items)).encode()).hexdigest()[:16]


def check_mode(check: Any) -> str | None:
    """``load_dataset``'s ``check`` argument -> ``fast``, ``full``, ``warn`` or None (off)."""
    modes = {True: "fast", False: None, None: None, "fast": "fast", "full": "full", "warn": "warn"}
    if check not in modes:
        raise ConfigError(f"check={check!r}: use True (fast, refuse blocking problems), 'full', 'warn' or False.")
    return modes[check]


# ---- built-in datasets -------------------------------------------------------------------
def _builtin_data(name: str, root: str | None, val_fraction: float, seed: int, download: bool):
    """(data, {split: indices into data.train}) for a built-in; digits brings its own split."""
    if name == "digits":
        data, idx = read_digits_builtin(val_fraction, seed)
        return data, idx, {"test": "fixed stratified 20% of digits (seed 0)"}
    data = read_fashion_mnist_cached(root, download) if name == "fashion-mnist" else read_cifar(name, root, download)
    x, y = data.train
    groups = tensor_groups(x).tolist()  # pixel-identical images stay on one side
    keep, held = stratified_split(y, val_fraction, seed, groups=groups)
    return data, {"train": keep, "val": held}, {"test": "official test set"}


def _load_builtin(name, root, *, val_fraction, seed, image_size, in_chans, check, log, mean, std,
                  resize, flip, min_per_class, download) -> DataBundle:  # fmt: skip
    data: BuiltinData
    data, idx, notes = _builtin_data(name, root, val_fraction, seed, download)
    x, y = data.train
    c = in_chans or x.shape[1]
    hflip = data.hflip if flip is None else bool(flip)

    def make(split_name, images, labels):
        if images is None or len(labels) == 0:
            return None
        return Split(split_name, labels, images=to_channels(images, c).contiguous(), hflip=hflip)

    train = make("train", x[idx["train"]], y[idx["train"]])
    val = make("val", x[idx["val"]], y[idx["val"]])
    test = make("test", *data.test) if data.test is not None else None
    health = None
    if check:
        splits = {s.name: (s.images, s.labels) for s in (train, val, test) if s is not None}
        report = check_tensors(name, splits, data.classes, min_per_class)
        log(report.summary())
        if report.blocking and check != "warn":
            refuse_blocking(report)
        health = {**report.to_dict(), "skipped": []}
    native = x.shape[-1]
    size = image_size or native
    if mean is None or std is None:
        mean, std = channel_stats(train.images)
    preprocess = make_preprocess(size, c, mean, std, resize)
    split_info = {
        "source": name, "layout": "builtin", "seed": seed, "val_fraction": val_fraction,
        "stratified": True, "val_from": "train", "stored_size": native, **data.info, **notes,
        "counts": {s.name: len(s) for s in (train, val, test) if s is not None},
        "val_sha256": _digest(idx["val"].tolist()),
    }  # fmt: skip
    return DataBundle(name, list(data.classes), train, val, test, c, preprocess, split_info, health)


# ---- folders and CSV manifests ------------------------------------------------------------
def _probe(paths: list[str], k: int = 64) -> tuple[int, int]:
    """(channels, median shorter side) from the headers of up to ``k`` evenly spaced files."""
    step = max(1, len(paths) // k)
    modes, sides = [], []
    for p in paths[::step][:k]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(p) as img:
                    modes.append(img.mode)
                    sides.append(min(img.size))
        except Exception:  # noqa: BLE001 - unreadable files are dealt with at decode time
            continue
    chans = 1 if modes and all(m in _GREY_MODES for m in modes) else 3
    side = int(statistics.median(sides)) if sides else DEFAULT_IMAGE_SIZE
    return chans, side


def _assign_splits(scan: Scan, report: HealthReport | None, val_fraction: float, seed: int):
    """{split: [(path, class name)]} with a stratified val split where the data has none."""
    excluded = report.excluded if report else set()
    entries = [e for e in scan.entries if e.path not in excluded]
    by_split: dict[str, list] = {}
    for e in entries:
        by_split.setdefault(e.split or "train", []).append((e.path, e.label))
    made_val = "val" not in by_split and val_fraction > 0 and by_split.get("train")
    if made_val:
        pool = by_split["train"]
        names = sorted({lbl for _, lbl in pool})
        labels = torch.tensor([names.index(lbl) for _, lbl in pool])
        groups = [report.groups.get(p, p) for p, _ in pool] if report else None
        keep, held = stratified_split(labels, val_fraction, seed, groups=groups)
        by_split["train"] = [pool[i] for i in keep.tolist()]
        by_split["val"] = [pool[i] for i in held.tolist()]
    return by_split, bool(made_val)


def _decode_splits(source, by_split: dict[str, list], index: dict[str, int], c: int, store: int, *,
                   memory: bool, hflip: bool, cache: bool, log) -> tuple[dict[str, Split], list]:  # fmt: skip
    """``({split: Split}, [(path, reason)] skipped)``: decoded into memory, or screened
    (streamed), so every image a split announces is one its loader can read."""
    splits: dict[str, Split] = {}
    skipped_all: list[tuple[str, str]] = []
    for name in ("train", "val", "test"):
        items = by_split.get(name)
        if not items:
            continue
        paths = [p for p, _ in items]
        labels = torch.tensor([index[lbl] for _, lbl in items], dtype=torch.int64)
        if memory:
            images, kept, skipped = decode_files_cached(paths, c, store, use_cache=cache, log=log)
            split = Split(name, labels[kept], images=images, hflip=hflip, skipped=skipped)
        else:
            kept, skipped = screen_files(paths, c, store)
            split = Split(name, labels[kept], paths=[paths[i] for i in kept], hflip=hflip, skipped=skipped)
        skipped_all += skipped
        if len(split) == 0:
            if name == "train":
                raise DataError(f"{source}: none of the {len(paths)} training files could be decoded.")
            log(f"warning: no readable {name} images; the {name} split is left out")
            continue
        splits[name] = split
    if skipped_all:
        log(f"skipped {len(skipped_all)} unreadable files, e.g. "
            f"{'; '.join(f'{p}: {r}' for p, r in skipped_all[:3])}")  # fmt: skip
    return splits, skipped_all


def _train_stats(train: Split, c: int, store: int) -> tuple[list[float], list[float]]:
    """Mean and std of the training images (of up to 512 evenly spaced files when streamed)."""
    if train.in_memory:
        return channel_stats(train.images)
    step = max(1, len(train.paths) // 512)
    sample, _, _ = decode_files(train.paths[::step][:512], c, store)
    return channel_stats(sample) if len(sample) else ([0.5] * c, [0.25] * c)


def _load_files(source, *, val_fraction, seed, image_size, in_chans, in_memory, check, log, mean, std,
                resize, flip, memory_budget_gb, min_per_class, cache) -> DataBundle:  # fmt: skip
    scan = scan_source(source)
    report = None
    if check:
        report = check_scan(scan, full=check == "full", min_per_class=min_per_class)
        log(report.summary())
        if report.blocking and check != "warn":
            refuse_blocking(report)
    by_split, made_val = _assign_splits(scan, report, val_fraction, seed)
    if not by_split.get("train"):
        raise DataError(f"{source}: no usable training images. Expected root/<class>/*.jpg or a CSV path,label.")
    names = {lbl for items in by_split.values() for _, lbl in items}
    names |= {c for cs in scan.class_dirs.values() for c in cs}
    classes = sorted(names, key=_label_sort_key(names)) if scan.kind.startswith("csv") else sorted(names)
    index = {c: i for i, c in enumerate(classes)}

    train_paths = [p for p, _ in by_split["train"]]
    probed_chans, side = _probe(train_paths)
    c = in_chans or probed_chans
    size = image_size or min(side, DEFAULT_IMAGE_SIZE)
    if size < 1:
        raise ConfigError(f"image_size={size!r} must be a positive number of pixels.")
    store = resize or (size if size <= SMALL_IMAGE else make_preprocess(size, c, [0] * c, [1] * c)["resize"])
    total = sum(len(v) for v in by_split.values())
    need_gb = total * c * store * store / 1e9
    if in_memory not in ("auto", True, False):
        raise ConfigError(f"in_memory={in_memory!r}: use 'auto', True or False.")
    memory = need_gb <= memory_budget_gb if in_memory == "auto" else bool(in_memory)
    hflip = True if flip is None else bool(flip)

    splits, skipped_all = _decode_splits(source, by_split, index, c, store, memory=memory, hflip=hflip,
                                         cache=cache, log=log)  # fmt: skip
    if mean is None or std is None:
        mean, std = _train_stats(splits["train"], c, store)
    preprocess = make_preprocess(size, c, mean, std, store)
    val = splits.get("val")
    split_info: dict[str, Any] = {
        "source": str(source), "layout": scan.kind, "seed": seed, "stratified": True,
        "val_fraction": val_fraction if made_val else None,
        "val_from": "train (stratified, duplicates kept together)" if made_val else "given",
        "storage": "memory" if memory else "files", "decoded_gb": round(need_gb, 3),
        "counts": {k: len(v) for k, v in splits.items()},
        "class_counts": {k: v.class_counts(len(classes)) for k, v in splits.items()},
        "val_sha256": _digest(sorted(scan.rel(p) for p, _ in by_split.get("val", []))),
    }  # fmt: skip
    health = None
    if report is not None:
        health = report.to_dict()
        health["skipped"] = [{"path": p, "reason": r} for p, r in skipped_all]
    log(f"data: {len(classes)} classes, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + f", {c}x{size}x{size} ({'in memory' if memory else 'streamed from files'})")  # fmt: skip
    return DataBundle(str(source), classes, splits["train"], val, splits.get("test"), c, preprocess, split_info, health)


def load_dataset(
    source: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    in_chans: int | None = None,
    in_memory: Any = "auto",
    check: Any = True,
    log: Callable[[str], Any] | None = print,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    resize: int | None = None,
    flip: bool | None = None,
    memory_budget_gb: float = MEMORY_BUDGET_GB,
    min_per_class: int = MIN_PER_CLASS,
    cache: bool = True,
    download: bool = True,
) -> DataBundle:
    """Loads, checks and splits a dataset.

    Args:
        source: an image folder (``root/train/<cls>/*`` + ``root/val/<cls>/*`` [+ ``test``], or
            ``root/<cls>/*``), a CSV manifest (``path,label[,split]``), or a built-in:
            ``fashion-mnist`` (or ``fashion-mnist:/dir``), ``digits``, ``cifar10``, ``cifar100``.
        val_fraction: share of each class held out for validation when the data has no val split.
        seed: the split depends only on this (recorded in ``split_info``).
        image_size: model input side; default: native for built-ins, the median shorter side
            (at most 224) for folders.
        in_chans: 1 or 3; default: 1 when every probed image is grey, else 3.
        in_memory: ``auto`` (decode folders under ``memory_budget_gb`` into uint8 tensors,
            cached on disk), True or False (stream from files).
        check: True runs the fast health check and refuses blocking problems; ``full`` also
            decodes every file first; ``warn`` logs problems but never refuses; False skips it.
        log: where progress and the check summary go (None: silent).
        mean, std: normalisation (e.g. from pretrained weights); default: from the train split.
        resize: shorter side before the centre crop (default: see ``make_preprocess``).
        flip: allow horizontal flips (default: off for digits, on otherwise).
        memory_budget_gb: decoded size under which ``auto`` keeps a folder in memory.
        min_per_class: threshold of the ``small_class`` warning.
        cache: reuse/write the decoded-image cache (``$RESLAB_CACHE_DIR``).
        download: allow downloading built-ins.
    Returns:
        A ``DataBundle``.
    Raises:
        DataError for missing data or blocking health problems; ConfigError for bad arguments.
    """
    log = log or (lambda msg: None)
    mode = check_mode(check)
    if mode == "fast":
        mode = True
    if in_chans not in (None, 1, 3):
        raise ConfigError(f"in_chans={in_chans!r}: use 1 (grey), 3 (RGB) or None (detect).")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r} must be a positive integer (pixels).")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} must be in [0, 1); e.g. 0.1 holds out 10%.")
    builtin = resolve_builtin(source)
    common = dict(val_fraction=val_fraction, seed=seed, image_size=image_size, in_chans=in_chans,
                  check=mode, log=log, mean=mean, std=std, resize=resize, flip=flip,
                  min_per_class=min_per_class)  # fmt: skip
    if builtin is not None:
        return _load_builtin(*builtin, download=download, **common)
    if not os.path.exists(str(source)):
        raise DataError(
            f"{source!r} is neither a file, a folder nor a built-in dataset. Use an image folder, "
            "a CSV manifest (path,label) or one of fashion-mnist, digits, cifar10, cifar100."
        )
    return _load_files(source, in_memory=in_memory, memory_budget_gb=memory_budget_gb, cache=cache, **common)
