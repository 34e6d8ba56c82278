"""Downloads with checksum verification: a file is only kept once its hash matches."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..files import hash_file


def verify_file(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Raises ``DataError`` unless ``path`` has the expected checksum(s).

    Args:
        path: the file to check.
        md5, sha256: expected hex digests; those given are checked.
    """
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = hash_file(path, algorithm)
        if got != expected.lower():
            raise DataError(
                f"{path}: {algorithm} is {got}, expected {expected}. The file is corrupted or "
                "not the published one; delete it and download it again."
            )


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Downloads ``url`` to ``dest`` atomically, keeping it only if the checksum matches.

    Args:
        url: http(s) or file URL.
        dest: final path; written through a temporary file and renamed.
        md5, sha256: expected digests (at least one should be given for data files).
        timeout: seconds before giving up on an unresponsive server.
    Returns:
        ``dest`` as a Path.
    Raises:
        OSError (``urllib.error.URLError``) when offline; DataError on a checksum mismatch.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        verify_file(tmp, md5=md5, sha256=sha256)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
