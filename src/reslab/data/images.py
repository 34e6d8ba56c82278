"""Reading one image file the same way everywhere: EXIF orientation applied, every mode
(CMYK, P, RGBA, LA, I;16, ...) normalised to L or RGB, and a ``DataError`` for files that
cannot be read, so callers can skip them by name instead of crashing.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip
# Pillow's own decompression-bomb threshold (89.5 Mpx, a 9459 x 9459 RGB image, ~270 MB).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_JPEG_MAGIC = b"\xff\xd8\xff"


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the extension is one reslab reads (the content is checked on load)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8-bit ``L`` by bit depth, never by the image's
    own maximum, so one stored value means one brightness in every file.

    ``I;16*`` is 0..65535; ``I`` (32-bit; older Pillow reads 16-bit PNGs as ``I``) is taken
    as 16-bit when its values fit in 0..65535, else as 0..2**32-1. Float (``F``) images
    carry no bit depth: 0..1 when no value exceeds 1, else already 0..255.
    """
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        arr = arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr
    elif img.mode in _16BIT_MODES or not arr.size or float(arr.max()) <= 65535:
        arr = arr * (255.0 / 65535.0)  # 65535 -> 255: the same as value / 257
    else:
        arr = arr * (255.0 / 4294967295.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def normalize_mode(img: Image.Image, in_chans: int | None = None) -> Image.Image:
    """Converts any Pillow mode to ``L`` or ``RGB``.

    Transparent images are composited over white (what a person sees), because the colour
    hidden under fully transparent pixels is arbitrary, often black.

    Args:
        img: a loaded image.
        in_chans: 1 for ``L``, 3 for ``RGB``, None to keep grey images grey.
    Returns:
        An ``L`` or ``RGB`` image.
    """
    mode = img.mode
    if mode in (*_16BIT_MODES, "I", "F"):
        img = _to_8bit(img)
    elif mode == "1":
        img = img.convert("L")
    elif mode == "P" or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
        if mode in ("LA", "La"):
            img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    if in_chans == 1 and img.mode != "L":
        img = img.convert("L")
    elif in_chans == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    elif in_chans not in (None, 1, 3):
        raise DataError(f"in_chans={in_chans!r}: images can be read with 1 (grey) or 3 (RGB) channels.")
    return img


def open_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Opens and fully decodes ``path`` with Pillow, EXIF orientation applied.

    Args:
        path: the file.
        draft_size: when set, a JPEG is decoded directly at the smallest 1/2, 1/4 or 1/8
            scale whose shorter side stays >= this (libjpeg's DCT scaling; several times
            faster for photos much larger than the training size).
    Returns:
        The decoded image, in its own mode.
    Raises:
        DataError for empty, non-image, truncated, corrupt or decompression-bomb files.
    """
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: the file is empty (0 bytes).")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette warnings: handled below
            img = Image.open(path)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DataError(
                    f"{path}: {w}x{h} = {w * h / 1e6:.0f} Mpx exceeds the {MAX_PIXELS / 1e6:.0f} Mpx "
                    "decompression-bomb limit; resize it or remove it."
                )
            if draft_size and img.format == "JPEG":
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft(img.mode, (int(w / scale) + 1, int(h / scale) + 1))
            img.load()
            img = ImageOps.exif_transpose(img)
        return img
    except DataError:
        raise
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not an image Pillow can read ({e}).") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: decompression bomb ({e}).") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise DataError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e}).") from e


def load_image(path: str | os.PathLike, in_chans: int | None = None) -> Image.Image:
    """Loads an image for a model: EXIF-transposed, mode normalised.

    Args:
        path: image file (any format Pillow reads).
        in_chans: 1 gives ``L``, 3 gives ``RGB``; None keeps grey images grey.
    Returns:
        A PIL image in mode ``L`` or ``RGB``.
    Raises:
        DataError when the file cannot be read as an image.
    """
    return normalize_mode(open_image(path), in_chans)


def skip_reason(path: str | os.PathLike, error: BaseException) -> str:
    """Why a file was skipped, without repeating its path (for ``(path, reason)`` lists)."""
    msg = str(error) if isinstance(error, DataError) else f"{type(error).__name__}: {error}"
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """``L``/``RGB`` PIL image -> uint8 tensor (C, H, W)."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def _decode_jpeg_fast(path: str, in_chans: int | None) -> torch.Tensor | None:
    """libjpeg-turbo through torchvision (faster than Pillow for a full-size decode).

    Returns None for anything unusual (CMYK, odd channel counts), so Pillow handles it.
    """
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = read_file(path)
    if data.numel() < 4 or bytes(data[:3].tolist()) != _JPEG_MAGIC:
        return None
    x = decode_jpeg(data, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    if x.shape[0] not in (1, 3):
        return None
    return x


def load_image_tensor(
    path: str | os.PathLike, in_chans: int | None = None, target_size: int | None = None
) -> torch.Tensor:
    """Decodes ``path`` to a uint8 tensor (C, H, W) as fast as this machine allows.

    Photos at least twice ``target_size`` go through Pillow's JPEG draft mode (decode at
    1/2..1/8 scale); other JPEGs through torchvision's libjpeg-turbo decoder; every other
    format and odd mode through ``load_image``. Values match ``load_image`` up to JPEG
    decoder rounding.

    Args:
        path: image file.
        in_chans: channels wanted (1 or 3); None keeps grey images grey.
        target_size: the shorter side the caller will resize to (enables draft decoding).
    Returns:
        uint8 tensor (C, H, W).
    Raises:
        DataError when the file cannot be read as an image.
    """
    path = str(path)
    if path.lower().endswith((".jpg", ".jpeg")):
        try:
            with Image.open(path) as probe:
                w, h = probe.size
                small_enough = target_size is None or min(w, h) < 2 * target_size
                plain = probe.format == "JPEG" and probe.mode in ("L", "RGB")
                if w * h > MAX_PIXELS:
                    plain = False  # let open_image raise its decompression-bomb error
            x = _decode_jpeg_fast(path, in_chans) if (small_enough and plain) else None
        except Exception:  # noqa: BLE001 - any failure here falls back to Pillow's diagnosis
            x = None
        if x is not None:
            if in_chans == 3 and x.shape[0] == 1:
                x = x.expand(3, -1, -1).contiguous()
            elif in_chans == 1 and x.shape[0] == 3:
                return pil_to_uint8(normalize_mode(open_image(path), 1))
            return x
    return pil_to_uint8(normalize_mode(open_image(path, draft_size=target_size), in_chans))
