"""The built-in datasets as uint8 tensors: Fashion-MNIST, digits, CIFAR-10/100.

Each reader returns a ``BuiltinData`` with the official train (and test) tensors; the
train/val split is made by ``load_dataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..download import download_and_extract
from ..errors import DataError
from . import digits as _digits
from . import fashion_mnist as _fm
from .cache import cache_key, file_fingerprint, load_cached, save_cached
from .paths import data_dir

BUILTINS = ("fashion-mnist", "digits", "cifar10", "cifar100")


@dataclass
class BuiltinData:
    """Official splits of a built-in dataset.

    Attributes:
        train, test: ``(images uint8 (N, C, H, W), labels int64 (N,))``; test may be None.
        classes: index -> name.
        hflip: whether a mirrored image keeps its class (False for digits).
        info: provenance (folder, verification) recorded in ``split_info``.
    """

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None
    classes: list[str]
    hflip: bool = True
    info: dict = field(default_factory=dict)


def parse_builtin(source: str) -> tuple[str, str | None] | None:
    """``"fashion-mnist:/dir"`` -> ``("fashion-mnist", "/dir")``; None if not a built-in."""
    name, _, root = str(source).partition(":")
    key = name.lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}
    key = aliases.get(key, key)
    if key not in BUILTINS:
        return None
    return key, (root or None)


def resolve_builtin(source: str | os.PathLike) -> tuple[str, str | None] | None:
    """The built-in dataset ``source`` names, or None when it is a file or folder.

    The rule: anything spelled as a path (``./digits``, ``/data/digits``) is a path; a bare
    built-in name (``digits``) or one with a colon (``digits:``, ``fashion-mnist:/dir``)
    is the built-in. A bare name that is also a file or folder here is ambiguous and
    refused, so a folder never silently replaces the built-in (or the other way round).

    Raises:
        DataError for a bare built-in name that also exists as a path.
    """
    text = str(source)
    builtin = parse_builtin(text)
    if builtin is None or not os.path.exists(text):
        return builtin
    if ":" in text:
        return builtin
    kind = "folder" if os.path.isdir(text) else "file"
    raise DataError(
        f"{text!r} names both the built-in dataset {builtin[0]} and the {kind} "
        f"{os.path.abspath(text)}. Say which one: ./{text} (a path) for the {kind}, or "
        f"{text}: (with a colon) for the built-in, e.g. --data ./{text} or --data {text}:."
    )


def read_fashion_mnist_cached(root: str | None = None, download: bool = True) -> BuiltinData:
    """Fashion-MNIST through the decoded-tensor cache (gunzip takes ~1 s; the cache ~50 ms)."""
    paths = _fm.locate(root, download=download)
    key = cache_key("fashion-mnist", file_fingerprint(str(p) for p in paths.values()))
    hit = load_cached(key)
    if hit is not None:
        t, meta = hit
        data = {"train": (t["train_x"], t["train_y"]), "test": (t["test_x"], t["test_y"]), **meta}
    else:
        data = _fm.read_fashion_mnist(root, download=download)
        tensors = {
            "train_x": data["train"][0], "train_y": data["train"][1],
            "test_x": data["test"][0], "test_y": data["test"][1],
        }  # fmt: skip
        save_cached(key, tensors, {"folder": data["folder"], "verified": data["verified"]})
    info = {"folder": data["folder"], "sha256_verified": bool(data["verified"])}
    return BuiltinData(data["train"], data["test"], list(_fm.CLASSES), hflip=True, info=info)


def read_digits_builtin(val_fraction: float, seed: int) -> tuple[BuiltinData, dict]:
    """Digits with its fixed test hold-out; returns the data and the split indices."""
    images, labels = _digits.read_digits()
    idx = _digits.digits_splits(val_fraction, seed)
    data = BuiltinData(
        train=(images, labels),
        test=(images[idx["test"]], labels[idx["test"]]),
        classes=list(_digits.CLASSES),
        hflip=False,  # a mirrored 2 or 5 is not a digit any more
        info={"source": "sklearn.datasets.load_digits", "test": "fixed stratified 20% (seed 0)"},
    )
    return data, idx


def read_cifar(name: str, root: str | None = None, download: bool = True) -> BuiltinData:
    """CIFAR-10/100 through torchvision (which checks the archive's md5 before unpickling).

    Args:
        name: ``cifar10`` or ``cifar100``.
        root: folder holding (or receiving) ``cifar-10-batches-py`` / ``cifar-100-python``;
            default ``$RESLAB_DATA_DIR/<name>``.
        download: allow a download when absent.
    """
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    folder = Path(root).expanduser() if root else data_dir() / name
    sets = {}
    how = (f"Either connect to the internet once (reslab downloads it and torchvision checks its "
           f"md5), or download {cls.url} yourself, unpack it into {folder} (giving "
           f"{folder / cls.base_folder}) and use '{name}:{folder}'.")  # fmt: skip
    for split in ("train", "test"):
        try:
            ds = cls(str(folder), train=split == "train", download=False)
        except RuntimeError:
            if not download:
                raise DataError(f"{name} is not in {folder} and downloads are off. {how}") from None
            try:  # through reslab.download: timeouts, bounded retries and the md5 checked
                download_and_extract(cls.url, folder, md5=cls.tgz_md5, how_to_fix=how)
                ds = cls(str(folder), train=split == "train", download=False)
            except Exception as e:  # noqa: BLE001 - offline: URLError, timeouts, ...
                raise DataError(
                    f"{name} is not in {folder} and the download failed ({type(e).__name__}: {e}). {how}"
                ) from e
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        sets[split] = (x, torch.as_tensor(ds.targets, dtype=torch.int64))  # (N,32,32,3)->(N,3,32,32)
    return BuiltinData(sets["train"], sets["test"], list(ds.classes), info={"folder": str(folder)})


def builtin_splits_for_check(name: str, root: str | None = None) -> tuple[dict, list[str]]:
    """The published splits of a built-in, for ``check_dataset``."""
    if name == "digits":
        data, idx = read_digits_builtin(0.1, 0)
        x, y = data.train
        return {k: (x[v], y[v]) for k, v in idx.items()}, data.classes
    data = read_fashion_mnist_cached(root) if name == "fashion-mnist" else read_cifar(name, root)
    return {"train": data.train, "test": data.test}, data.classes
