"""Untrusted upload bytes -> a checked PIL image, or a ``BadInput`` with the HTTP status to answer.

The server must survive whatever a client sends: empty bodies, text, truncated files,
and decompression bombs (a few kB of PNG that would decode to gigabytes). The pixel count
is read from the header before any pixel is decoded, against the same ``MAX_PIXELS`` limit
that training data uses (``reslab.data.images``).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.images import MAX_PIXELS, normalize_mode

# Uploads larger than this are refused before they are read whole (a 12 Mpx JPEG is ~5 MB).
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class BadInput(Exception):
    """A request the server refuses, with the HTTP status and a message for the client.

    Args:
        status: 400 (malformed), 413 (too large), 415 (not an image / wrong content type).
        message: what was received, what is expected, how to fix it.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_base64(text: object) -> bytes:
    """The bytes of a base64 string (a ``data:image/...;base64,`` prefix is allowed)."""
    if not isinstance(text, str) or not text:
        raise BadInput(400, 'JSON bodies must be {"image": "<base64 of the image file>"}; '
                            f"received image={type(text).__name__}.")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput(400, f"the 'image' field is not valid base64 ({e}).") from e


def decode_image(data: bytes, in_chans: int, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decodes an uploaded image file.

    Args:
        data: the file's bytes (PNG, JPEG, WebP, BMP, GIF...; the first frame of animations).
        in_chans: 1 for ``L``, 3 for ``RGB``: the model's input channels.
        max_bytes: the upload limit.
        max_pixels: the decompression-bomb limit (width x height).
    Returns:
        A PIL image in mode ``L`` or ``RGB``, EXIF orientation applied.
    Raises:
        BadInput: empty (400), too large (413), not an image (415), corrupt (400).
    """
    if not data:
        raise BadInput(400, "the upload is empty (0 bytes); send an image file.")
    if len(data) > max_bytes:
        raise BadInput(413, f"the upload is {len(data) / 1e6:.1f} MB; the limit is "
                            f"{max_bytes / 1e6:.1f} MB (start the server with a larger "
                            "--max-upload-mb, or send a smaller image).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb *warning*: checked below instead
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise BadInput(413, f"the image is {w}x{h} = {w * h / 1e6:.0f} Mpx, above the "
                                    f"{max_pixels / 1e6:.0f} Mpx decompression-bomb limit; "
                                    "resize it before sending.")
            img.load()
            img = ImageOps.exif_transpose(img)
    except BadInput:
        raise
    except UnidentifiedImageError as e:
        raise BadInput(415, f"the upload ({len(data)} bytes, starting {data[:8]!r}) is not an "
                            "image Pillow can read; send PNG, JPEG, WebP, BMP or GIF.") from e
    except Image.DecompressionBombError as e:
        raise BadInput(413, f"the image is above the {max_pixels / 1e6:.0f} Mpx decompression-bomb "
                            f"limit ({e}); resize it before sending.") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise BadInput(400, f"corrupt or truncated image ({type(e).__name__}: {e}).") from e
    return normalize_mode(img, in_chans)
