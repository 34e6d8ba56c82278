"""Generated image folders for tests, benchmarks and demos (no download needed).

``make_image_folder`` writes clean class folders of random-but-distinct images;
``make_nasty_folder`` plants one of every problem the health check knows, so the check
and the loaders can be exercised on the mess real folders contain.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def random_image(rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth random image (upsampled noise: compresses like a photo, unlike pure noise)."""
    w, h = size
    c = 3 if mode == "RGB" else 1
    small = (rng.random((max(2, h // 8), max(2, w // 8), c)) * 255).astype(np.uint8)
    img = Image.fromarray(small[:, :, 0] if c == 1 else small).resize((w, h), Image.BILINEAR)
    return img.convert(mode)


def make_image_folder(
    root: str | os.PathLike,
    classes: dict[str, int] | list[str],
    *,
    per_class: int = 10,
    size: tuple[int, int] = (32, 32),
    fmt: str = "png",
    mode: str = "RGB",
    splits: dict[str, int] | None = None,
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """Writes ``root/[split/]<class>/<i>.<fmt>`` with distinct random images.

    Args:
        root: output folder.
        classes: class names (``per_class`` each) or ``{name: count}``.
        per_class: images per class when ``classes`` is a list.
        size: (width, height).
        fmt: ``png`` or ``jpg``.
        mode: ``RGB`` or ``L``.
        splits: ``{split: images per class}`` to write ``root/<split>/<class>/``; None writes
            ``root/<class>/``.
        seed: image content seed.
        quality: JPEG quality.
    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = classes if isinstance(classes, dict) else {c: per_class for c in classes}
    layout = splits.items() if splits else [(None, None)]
    for split, n_split in layout:
        for cls, n in counts.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_split if n_split is not None else n):
                img = random_image(rng, size, mode)
                kw = {"quality": quality} if fmt in ("jpg", "jpeg") else {}
                img.save(folder / f"{i:05d}.{fmt}", **kw)
    return root


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def make_nasty_folder(root: str | os.PathLike, seed: int = 0) -> dict[str, list[str]]:
    """Writes a train/val image folder with one of every problem kind planted.

    Returns:
        ``{problem kind: [paths relative to root]}`` of what was planted.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    make_image_folder(root / "train", {"cat": 12, "dog": 24, "bird": 2}, seed=seed)
    make_image_folder(root / "val", {"cat": 3, "dog": 3, "fish": 2}, seed=seed + 1)
    (root / "train" / "empty_class").mkdir(parents=True)
    cat = root / "train" / "cat"
    planted: dict[str, list[str]] = {}

    def plant(kind: str, path: Path) -> None:
        planted.setdefault(kind, []).append(str(path.relative_to(root)))

    buf = cat / "truncated.jpg"
    random_image(rng, (64, 64)).save(buf, quality=95)
    data = buf.read_bytes()
    buf.write_bytes(data[: len(data) // 2])
    plant("corrupt", buf)
    (cat / "zero.jpg").write_bytes(b"")
    plant("zero_byte", cat / "zero.jpg")
    (cat / "text.jpg").write_text("this is not a picture\n")
    plant("not_image", cat / "text.jpg")
    (cat / "notes.txt").write_text("labels checked by hand\n")
    plant("not_image", cat / "notes.txt")
    random_image(rng, (32, 32)).convert("CMYK").save(cat / "cmyk.jpg", quality=95)
    random_image(rng, (32, 32)).convert("RGBA").save(cat / "rgba.png")
    random_image(rng, (32, 32)).convert("P").save(cat / "palette.png")
    random_image(rng, (32, 32)).convert("LA").save(cat / "la.png")
    grey16 = (np.asarray(random_image(rng, (32, 32), "L")).astype(np.uint16) * 257)
    Image.fromarray(grey16).save(cat / "grey16.png")
    for name in ("cmyk.jpg", "rgba.png", "palette.png", "la.png", "grey16.png"):
        plant("mode", cat / name)
    rotated = random_image(rng, (40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated.save(cat / "rotated.jpg", exif=exif, quality=95)
    plant("exif_orientation", cat / "rotated.jpg")
    random_image(rng, (300, 20)).save(cat / "banner.png")
    plant("extreme_aspect", cat / "banner.png")
    (cat / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    plant("decompression_bomb", cat / "bomb.png")
    shutil.copy(cat / "00000.png", cat / "copy_of_00000.png")
    plant("duplicate", cat / "copy_of_00000.png")
    shutil.copy(root / "train" / "dog" / "00001.png", root / "val" / "dog" / "leaked.png")
    plant("leakage", root / "val" / "dog" / "leaked.png")
    (cat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    random_image(rng, (32, 32)).save(cat / ".hidden.png")
    plant("hidden", cat / ".DS_Store")
    plant("hidden", cat / ".hidden.png")
    plant("empty_class", root / "train" / "empty_class")
    plant("small_class", root / "train" / "bird")
    plant("class_mismatch", root / "val" / "fish")
    return planted
