"""Fashion-MNIST (Xiao et al. 2017) from its four standard idx ``.gz`` files.

Where the files are looked for, in order:
  1. an explicit folder (``fashion-mnist:/dir`` or ``root=``),
  2. the user data folder ``$RESLAB_DATA_DIR/fashion-mnist`` (default ``~/.cache/reslab``),
  3. the Debian package's folder ``/usr/share/datasets/fashion-mnist``
     (``apt-get install dataset-fashion-mnist``),
  4. a download into the folder of step 1 or 2, each file kept only if its md5 matches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import torch

from ..download import download_file
from ..errors import DataError
from .paths import data_dir

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://ossci-datasets.s3.amazonaws.com/fashion-mnist/",
)
# md5 of the published .gz files (Zalando's README), and sha256 of their decompressed idx
# payload, which stays the same when a distribution re-compresses them (Debian does).
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}  # fmt: skip
_IDX_DTYPES = {0x08: np.uint8}


def parse_idx(raw: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decodes an idx file (LeCun's MNIST format): magic, big-endian dims, then the data.

    Args:
        raw: the decompressed file contents.
        path: shown in error messages.
    Returns:
        A uint8 array of the stored shape, e.g. (N, 28, 28) images or (N,) labels.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an idx file (its first bytes are {raw[:4]!r}).")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES or ndim < 1:
        raise DataError(f"{path}: idx type 0x{dtype_code:02x} with {ndim} dims is not uint8 data.")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes) but {len(raw) - header} bytes follow; "
            "the file is truncated. Delete it and get it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"could not read {path}: {e}. Delete it and get it again.") from e


def _find_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (gzipped or not), or None if any is missing."""
    found = {}
    for key, (name, _, _) in FILES.items():
        for candidate in (folder / name, folder / name[:-3]):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _download(folder: Path, mirrors=MIRRORS) -> dict[str, Path]:
    errors = []
    for key, (name, md5, _) in FILES.items():
        if (folder / name).is_file():
            continue
        for mirror in mirrors:
            try:
                download_file(mirror + name, folder / name, md5=md5)
                break
            except (urllib.error.URLError, OSError, DataError) as e:
                errors.append(f"{mirror}{name}: {e}")
        else:
            raise OSError("; ".join(errors[-len(mirrors):]))
    return _find_in(folder)


def locate(root: str | os.PathLike | None = None, download: bool = True) -> dict[str, Path]:
    """Finds (or downloads) the four Fashion-MNIST files.

    Args:
        root: an explicit folder to read from (and download into when files are missing).
        download: allow a download when the files are nowhere on disk.
    Returns:
        ``{"train_images": Path, "train_labels": ..., "test_images": ..., "test_labels": ...}``.
    Raises:
        DataError naming the three ways to provide the files when none works.
    """
    user_dir = data_dir() / "fashion-mnist"
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        candidates = [user_dir, data_dir(), SYSTEM_DIR]
    for folder in candidates:
        found = _find_in(folder)
        if found:
            return found
    target = candidates[0]
    why = "downloads are off"
    if download:
        try:
            return _download(target)
        except OSError as e:
            why = f"the download failed ({e})"
    names = ", ".join(name for name, _, _ in FILES.values())
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"Fashion-MNIST files not found (looked in {looked}) and {why}. Provide them in one of "
        f"three ways: (1) put {names} in a folder and use 'fashion-mnist:/that/folder'; "
        f"(2) copy them to {user_dir} (or set RESLAB_DATA_DIR); (3) on Debian/Ubuntu run "
        "'sudo apt-get install dataset-fashion-mnist' (files land in /usr/share/datasets/"
        "fashion-mnist). With internet access reslab downloads them and checks their md5."
    )


def read_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> dict:
    """Reads Fashion-MNIST into uint8 tensors.

    Args:
        root: explicit folder, see ``locate``.
        download: allow a download when the files are nowhere on disk.
    Returns:
        ``{"train": (images uint8 (60000, 1, 28, 28), labels int64 (60000,)), "test": (...),
        "folder": str, "verified": bool}``; ``verified`` says the contents match the published
        dataset's sha256 (False for other files in the same format, e.g. a subset).
    Raises:
        DataError for missing, truncated or inconsistent files, or official-size files whose
        contents differ from the published ones.
    """
    paths = locate(root, download=download)
    arrays, verified = {}, True
    for key, path in paths.items():
        raw = _read(path)
        arrays[key] = parse_idx(raw, str(path))
        if hashlib.sha256(raw).hexdigest() != FILES[key][2]:
            verified = False
            official = 60000 if key.startswith("train") else 10000
            if len(arrays[key]) == official:
                raise DataError(
                    f"{path} has the size of the published Fashion-MNIST file but different "
                    "contents (sha256 mismatch): it is corrupted. Delete it and get it again."
                )
    out = {"folder": str(paths["train_images"].parent), "verified": verified}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST {split}: {images.shape} images but {labels.shape} labels; "
                "expected (N, 28, 28) and (N,). The files do not belong together."
            )
        if labels.size and labels.max() >= len(CLASSES):
            raise DataError(f"Fashion-MNIST {split}: label {labels.max()} is not in 0..9.")
        out[split] = (
            torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 28, 28) -> (N, 1, 28, 28)
            torch.from_numpy(labels.astype(np.int64)),
        )
    return out


def write_idx_gz(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Writes a uint8 array as a gzipped idx file (the inverse of ``parse_idx``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path
