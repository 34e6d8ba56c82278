"""Reading an image out of an HTTP request, whatever form the client chose, within limits.

Three forms are accepted on ``/predict`` and ``/explain``:

* ``multipart/form-data`` with a file field ``image`` (what a browser form and
  ``curl -F image=@cat.jpg`` send);
* ``application/json`` ``{"image": "<base64>", "topk": 3}``;
* the raw file with ``Content-Type: image/png`` (``curl --data-binary @cat.png``).

The body is read in chunks and refused with 413 as soon as it passes the limit, so a
client cannot make the server buffer an unbounded upload.
"""

from __future__ import annotations

import json

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .decode import BadInput, decode_base64

# Room for the multipart boundaries, part headers and small form fields around the file.
ENVELOPE_BYTES = 64 * 1024
_FILE_TYPES = ("image/", "application/octet-stream")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``BadInput(413)`` once more than ``limit`` bytes arrive."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadInput(413, f"the request body is {int(declared) / 1e6:.1f} MB; the limit is "
                            f"{limit / 1e6:.1f} MB. Send a smaller image.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(413, f"the request body passed the {limit / 1e6:.1f} MB limit; "
                                "send a smaller image.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _from_multipart(request: Request, limit: int) -> tuple[bytes, dict]:
    body = await read_body(request, limit + ENVELOPE_BYTES)

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16,
                                     max_part_size=ENVELOPE_BYTES).parse()
    except MultiPartException as e:
        raise BadInput(400, f"malformed multipart body ({e}).") from e
    try:
        upload = form.get("image") or form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadInput(400, "no file in the form: send the image as a multipart file field "
                                f"named 'image' (received fields: {sorted(form.keys()) or 'none'}).")
        ctype = (upload.content_type or "application/octet-stream").lower()
        if not ctype.startswith(_FILE_TYPES):
            raise BadInput(415, f"the uploaded file {upload.filename!r} has Content-Type {ctype}; "
                                "expected an image (image/png, image/jpeg, ...).")
        data = await upload.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    return data, fields


async def image_from_request(request: Request, limit: int) -> tuple[bytes, dict]:
    """The uploaded image's bytes and the other fields sent with it (``topk``, ``class``...).

    Args:
        request: the HTTP request.
        limit: the largest image file accepted, in bytes.
    Raises:
        BadInput: 400 (malformed), 413 (too large) or 415 (wrong content type).
    """
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _from_multipart(request, limit)
    if kind == "application/json":
        body = await read_body(request, limit * 4 // 3 + ENVELOPE_BYTES)  # base64 is 4/3 larger
        try:
            obj = json.loads(body)
        except ValueError as e:
            raise BadInput(400, f"the body is not valid JSON ({e}).") from e
        if not isinstance(obj, dict):
            raise BadInput(400, 'expected a JSON object {"image": "<base64>"}; received '
                                f"{type(obj).__name__}.")
        return decode_base64(obj.get("image")), {k: v for k, v in obj.items() if k != "image"}
    if kind.startswith("image/") or kind == "application/octet-stream":
        return await read_body(request, limit), {}
    raise BadInput(415, f"Content-Type {ctype or '(none)'} is not accepted; send "
                        "multipart/form-data with a file field 'image', JSON "
                        '{"image": "<base64>"}, or the raw file with Content-Type image/*.')
