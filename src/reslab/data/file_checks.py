"""Per-file inspections behind the health check.

Cheap ones (used before every training run): the first bytes of a file (does its content
look like an image at all?) and exact-duplicate detection by size, then content hash;
``screen_files`` for streamed splits (is each JPEG/PNG complete?).
Full ones (``reslab check``): open and decode the file to find truncation, odd modes,
EXIF rotation, extreme sizes and decompression bombs.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from ..files import hash_file
from .images import MAX_PIXELS, load_image_tensor, skip_reason

_MAGIC = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"), (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"), (0, b"MM\x00*"),  # TIFF
    (8, b"WEBP"),
    (0, b"P1"), (0, b"P2"), (0, b"P3"), (0, b"P4"), (0, b"P5"), (0, b"P6"),  # PNM
)  # fmt: skip
MIN_SIDE = 8  # px: smaller images carry almost no information for a CNN
MAX_SIDE = 16384  # px: larger sides are almost always scans or panoramas that need cropping
MAX_ASPECT = 6.0  # a centre crop of a 6:1 image keeps only 1/6 of it
EXIF_ORIENTATION = 0x0112


def looks_like_image(path: str) -> bool:
    """True when the first bytes match a known image signature (JPEG, PNG, GIF, BMP, ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[off : off + len(sig)] == sig for off, sig in _MAGIC)


def duplicate_groups(paths: list[str], sizes: list[int]) -> dict[str, str]:
    """Exact duplicates: ``{path: content hash}`` for every file that has a twin.

    Only files sharing a byte size are hashed, so a folder without duplicates costs one
    ``stat`` per file (already done by the scan).
    """
    by_size: dict[int, list[str]] = defaultdict(list)
    for p, s in zip(paths, sizes):
        if s > 0:
            by_size[s].append(p)
    candidates = [p for group in by_size.values() if len(group) > 1 for p in group]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        hashes = dict(zip(candidates, pool.map(_safe_hash, candidates)))
    by_hash: dict[str, list[str]] = defaultdict(list)
    for p, h in hashes.items():
        if h is not None:
            by_hash[h].append(p)
    return {p: h for h, group in by_hash.items() if len(group) > 1 for p in group}


def _safe_hash(path: str) -> str | None:
    try:
        return hash_file(path, "blake2b", digest_size=16)
    except OSError:
        return None


def inspect_image(path: str) -> list[tuple[str, str]]:
    """Opens and decodes one file, returning ``[(problem kind, detail)]`` (empty: all good).

    Kinds: ``corrupt``, ``decompression_bomb``, ``mode``, ``exif_orientation``,
    ``extreme_size``, ``extreme_aspect``.
    """
    found: list[tuple[str, str]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    return [("decompression_bomb", f"{w}x{h} = {w * h / 1e6:.0f} Mpx")]
                if img.mode not in ("RGB", "L"):
                    found.append(("mode", img.mode))
                orientation = img.getexif().get(EXIF_ORIENTATION)
                if orientation not in (None, 1):
                    found.append(("exif_orientation", f"EXIF orientation {orientation}"))
                if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
                    found.append(("extreme_size", f"{w}x{h}"))
                if max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
                    found.append(("extreme_aspect", f"{w}x{h} (aspect {max(w, h) / max(1, min(w, h)):.1f})"))
                img.load()
    except Image.DecompressionBombError as e:
        return [("decompression_bomb", str(e))]
    except Exception as e:  # noqa: BLE001 - every decoder failure is a "corrupt" finding
        found.append(("corrupt", f"{type(e).__name__}: {e}"))
    return found


def inspect_images(paths: list[str], threads: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """``inspect_image`` over many files with a thread pool (Pillow decoders release the GIL)."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(paths, pool.map(inspect_image, paths)))


def _ends_complete(path: str) -> bool | None:
    """True when a JPEG ends with its end-of-image marker or a PNG with its IEND chunk
    (a truncated file does not); None for other formats (no cheap answer)."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, os.path.getsize(path) - 64))
        tail = f.read().rstrip(b"\x00\r\n ")  # some writers pad after the end marker
    if head.startswith(b"\xff\xd8\xff"):
        return tail.endswith(b"\xff\xd9")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" in tail[-12:]
    return None


def _screen(path: str, in_chans: int, size: int) -> str | None:
    """Why ``path`` cannot be read (None: it can). A complete JPEG/PNG whose header Pillow
    reads costs two small reads; anything else is decoded to be sure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
            if w * h <= MAX_PIXELS and _ends_complete(path):
                return None
            load_image_tensor(path, in_chans, target_size=size)  # raises the reason
    except Exception as e:  # noqa: BLE001 - any failure here is the reason to skip
        return skip_reason(path, e)
    return None


def screen_files(paths: list[str], in_chans: int, size: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Finds the files a streaming loader could not decode, before training starts.

    Streamed splits are not decoded up front, so without this a truncated file would be
    dropped mid-epoch and validation would run on fewer images than announced.

    Args:
        paths: image files.
        in_chans, size: what the loader will decode them to (for the fallback decode).
    Returns:
        ``(indices of readable files, [(path, reason)] of the others)``.
    """
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(lambda p: _screen(p, in_chans, size), paths))
    kept = [i for i, r in enumerate(reasons) if r is None]
    return kept, sorted((p, r) for p, r in zip(paths, reasons) if r is not None)
