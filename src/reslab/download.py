"""Every download reslab makes (datasets and weights): a timeout on each connection and read,
a bounded number of attempts with backoff, a checksum before the file is kept, and a message
that names the URL, what happened and where to put the file by hand.

A server that accepts the connection and then never answers is the case this module exists
for: ``urllib`` without a timeout waits forever there. Here every blocking socket operation
(connecting, reading the headers, each read of the body) gives up after ``timeout`` seconds,
so one attempt waits at most ``timeout`` for each step, and the whole download at most
``attempts`` such waits plus the backoff between them.
"""

from __future__ import annotations

import logging
import os
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DataError
from .files import hash_file

log = logging.getLogger("reslab.download")

TIMEOUT_S = 10.0  # seconds any connect or read may wait; RESLAB_DOWNLOAD_TIMEOUT overrides
ATTEMPTS = 3  # tries per URL (a missing file, HTTP 4xx, is not retried); RESLAB_DOWNLOAD_ATTEMPTS
BACKOFF_S = 1.0  # seconds before the 2nd attempt; doubled before each later one


class DownloadError(OSError):
    """A download that failed after its attempts; the message says what to do instead.

    An ``OSError`` (like ``urllib``'s own errors), so callers that already handle a
    failed network keep doing so.
    """


def verify_file(
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
) -> None:
    """Raises ``DataError`` unless ``path`` has the expected checksum(s).

    Args:
        path: the file to check.
        md5, sha256: expected hex digests; those given are checked.
        sha256_prefix: the first hex digits of the SHA-256 (torchvision names its weight
            files ``NAME-<first 8 digits>.pth``).
    """
    checks = [("md5", md5, False), ("sha256", sha256, False), ("sha256", sha256_prefix, True)]
    for algorithm, expected, prefix in checks:
        if expected is None:
            continue
        got = hash_file(path, algorithm)
        ok = got.startswith(expected.lower()) if prefix else got == expected.lower()
        if not ok:
            raise DataError(
                f"{path}: {algorithm} is {got}, expected {expected}{'...' if prefix else ''}. "
                "The file is corrupted or not the published one; delete it and download it again."
            )


def _setting(variable: str, default: float) -> float:
    """A positive number from the environment, else ``default``."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DataError(f"{variable}={raw!r} is not a positive number; unset it or set e.g. "
                        f"{variable}={default:g}.")
    return value


def _what_happened(error: BaseException, timeout: float) -> str:
    """One short phrase for a failed attempt."""
    if isinstance(error, (socket.timeout, TimeoutError)) or "timed out" in str(error):
        return f"no answer within {timeout:g} s (timed out)"
    if isinstance(error, urllib.error.HTTPError):
        return f"the server answered HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"could not connect ({error.reason})"
    return f"{type(error).__name__}: {error}"


def _retryable(error: BaseException) -> bool:
    """A missing or forbidden file stays so; anything else (timeouts, resets, 5xx) may pass."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return True


def _fetch_once(url: str, tmp: str, timeout: float) -> None:
    """One attempt: ``url`` into ``tmp``, every socket operation bounded by ``timeout``."""
    with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        out.writelines(iter(lambda: resp.read(1 << 20), b""))


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    timeout: float | None = None,
    attempts: int | None = None,
    backoff: float = BACKOFF_S,
    how_to_fix: str | None = None,
) -> Path:
    """Downloads ``url`` to ``dest`` atomically, keeping it only if the checksum matches.

    Args:
        url: http(s) or file URL.
        dest: final path; written through a temporary file beside it and renamed.
        md5, sha256, sha256_prefix: expected digests (see ``verify_file``).
        timeout: seconds each connect or read may wait (a silent server gives up here);
            default ``RESLAB_DOWNLOAD_TIMEOUT``, else 10.
        attempts: tries in all (at least 1), default ``RESLAB_DOWNLOAD_ATTEMPTS``, else 3;
            waits ``backoff``, ``2 * backoff``... between them.
        how_to_fix: what the user can do instead (default: place the file at ``dest``).
    Returns:
        ``dest`` as a Path.
    Raises:
        DownloadError: every attempt failed; names the URL, what happened and what to do.
        DataError: the file arrived but its checksum differs (it is not kept).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    timeout = _setting("RESLAB_DOWNLOAD_TIMEOUT", TIMEOUT_S) if timeout is None else timeout
    attempts = _setting("RESLAB_DOWNLOAD_ATTEMPTS", ATTEMPTS) if attempts is None else attempts
    attempts = max(int(attempts), 1)
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        try:
            log.info("downloading %s to %s", url, dest)
            _fetch_once(url, tmp, timeout)
            verify_file(tmp, md5=md5, sha256=sha256, sha256_prefix=sha256_prefix)
            os.replace(tmp, dest)
            return dest
        except (OSError, urllib.error.URLError) as e:  # socket.timeout is an OSError too
            failures.append(_what_happened(e, timeout))
            if attempt == attempts or not _retryable(e):
                break
            wait = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; trying again in %g s (attempt %d of %d)",
                        url, failures[-1], wait, attempt + 1, attempts)
            time.sleep(wait)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    fix = how_to_fix or (f"Download it on a machine with internet access and place it at "
                         f"{dest}.")
    raise DownloadError(
        f"could not download {url}: {failures[-1]} "
        f"({len(failures)} attempt{'s' if len(failures) > 1 else ''}). {fix}"
    )


def download_and_extract(
    url: str, folder: str | os.PathLike, *, md5: str | None = None, **kwargs
) -> Path:
    """Downloads a ``.tar.gz`` archive into ``folder`` (kept, so a rerun skips the download)
    and unpacks it there, refusing members that would land outside ``folder``.

    Args:
        url: the archive's URL.
        folder: where the archive is saved and unpacked.
        md5: its expected md5.
        **kwargs: ``timeout``, ``attempts``, ``backoff``, ``how_to_fix`` of ``download_file``.
    Returns:
        The archive's path.
    """
    folder = Path(folder)
    archive = folder / os.path.basename(url.split("?")[0])
    if not archive.is_file():
        download_file(url, archive, md5=md5, **kwargs)
    else:
        verify_file(archive, md5=md5)
    with tarfile.open(archive, "r:*") as tar:
        _extract_inside(tar, folder)
    return archive


def _extract_inside(tar: tarfile.TarFile, folder: Path) -> None:
    """Unpacks ``tar`` into ``folder``, refusing members that would land outside it."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12 (PEP 706)
        # "data" refuses absolute paths, "..", links out of the folder and device files.
        tar.extractall(folder, filter="data")
        return
    root = folder.resolve()
    for member in tar.getmembers():
        target = (folder / member.name).resolve()
        if root not in target.parents and target != root or member.issym() or member.islnk():
            raise DataError(f"{member.name!r} in the archive would unpack outside {folder} "
                            "or is a link; refusing the archive.")
    tar.extractall(folder)
