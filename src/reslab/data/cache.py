"""Decode once, reuse forever: small datasets become one uint8 tensor kept on disk.

The cache file is a safetensors file (no pickle, so a tampered cache cannot run code)
named by a hash of everything that determines its contents: each file's path, size and
modification time plus the decode settings. Any change to the data gives a new key, so a
stale cache is never read; a damaged cache file is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torchvision.transforms.v2 import functional as TF

from .images import load_image_tensor, skip_reason
from .paths import cache_dir

CACHE_VERSION = 2  # 2: 16-bit images scaled by bit depth. Bump when the decode pipeline changes what ends up in the tensor


def file_fingerprint(paths: Iterable[str]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of each file; missing files get size -1."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, 0))
    return out


def cache_key(*parts: Any) -> str:
    """A stable hex key from JSON-serialisable parts (paths, sizes, settings)."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def cache_path(key: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or cache_dir()) / "decoded" / f"{key}.safetensors"


def load_cached(key: str, root=None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Returns ``(tensors, metadata)`` for ``key`` or None when absent or unreadable."""
    from safetensors.torch import load

    path = cache_path(key, root)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("reslab", "{}"))
        return load(path.read_bytes()), meta
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
        return None


def save_cached(key: str, tensors: dict[str, torch.Tensor], meta: dict, root=None) -> Path | None:
    """Writes the cache atomically; returns its path, or None when the folder is not writable."""
    from safetensors.torch import save

    from ..files import atomic_write_bytes

    path = cache_path(key, root)
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"reslab": json.dumps(meta)})
    try:
        atomic_write_bytes(path, lambda f: f.write(blob))
    except OSError:
        return None
    return path


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, size, size): shorter side to ``size`` (antialiased), then the
    centre square, the same geometry as ``Resize(size) + CenterCrop(size)``."""
    if x.shape[-2:] != (size, size):
        if min(x.shape[-2:]) != size:
            x = TF.resize(x, size, antialias=True)
        x = TF.center_crop(x, [size, size])
    return x


def decode_files(
    paths: list[str],
    in_chans: int,
    size: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """Decodes image files into one uint8 tensor, skipping (and naming) unreadable ones.

    Args:
        paths: image files.
        in_chans: 1 or 3.
        size: every image becomes (in_chans, size, size), see ``resize_square``.
        threads: decoder threads (Pillow and libjpeg release the GIL); default: CPU count.
        progress: optional ``callback(done, total)``.
    Returns:
        ``(images uint8 (K, C, size, size), kept int64 (K,) indices into paths,
        skipped [(path, reason)])``.
    """
    n = len(paths)
    out = torch.empty((n, in_chans, size, size), dtype=torch.uint8)
    ok = torch.zeros(n, dtype=torch.bool)
    skipped: list[tuple[str, str]] = []

    def work(i: int) -> None:
        try:
            out[i] = resize_square(load_image_tensor(paths[i], in_chans, target_size=size), size)
            ok[i] = True
        except Exception as e:  # noqa: BLE001 - any decoder failure: skip and say why
            skipped.append((paths[i], skip_reason(paths[i], e)))

    threads = threads or min(8, os.cpu_count() or 1)
    step = max(1, n // 20)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, _ in enumerate(pool.map(work, range(n)), 1):
            if progress and (done % step == 0 or done == n):
                progress(done, n)
    kept = torch.nonzero(ok).flatten()
    skipped.sort()
    return out[kept] if len(kept) < n else out, kept, skipped


def decode_files_cached(
    paths: list[str], in_chans: int, size: int, *, use_cache: bool = True, log=None
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """``decode_files`` through the on-disk cache (see the module docstring)."""
    key = cache_key("files", file_fingerprint(paths), in_chans, size)
    if use_cache:
        hit = load_cached(key)
        if hit is not None:
            tensors, meta = hit
            return tensors["images"], tensors["kept"], [tuple(s) for s in meta.get("skipped", [])]

    def progress(done, total):
        if log and total >= 2000:
            log(f"decoding images: {done}/{total}")

    images, kept, skipped = decode_files(paths, in_chans, size, progress=progress)
    if use_cache:
        where = save_cached(key, {"images": images, "kept": kept}, {"skipped": skipped})
        if log and where is None:
            log(f"note: could not write the image cache under {cache_dir()} (read-only?)")
    return images, kept, skipped


__all__ = [
    "cache_key", "cache_path", "decode_files", "decode_files_cached", "file_fingerprint",
    "load_cached", "resize_square", "save_cached",
]  # fmt: skip
