"""The download of named weights: each file found in, or fetched into, its owner's cache.

Files are fetched through the owning library's cache and never copied elsewhere:

- ``torchvision:NAME.TAG`` -> ``$TORCH_HOME/hub/checkpoints/<file of the URL>`` (torch.hub),
- ``timm:NAME.TAG``        -> the Hugging Face cache (``timm/NAME.TAG``), else torch.hub's,
- ``hf:ORG/REPO``          -> the Hugging Face cache (``config.json`` + weights),
- ``reslab:NAME``          -> the weights folder, verified against its card's SHA-256.

What each name is comes from ``reslab.models.catalog``. Nothing here imports
huggingface_hub unless a download needs it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..download import DownloadError, download_file
from ..errors import DataError, WeightsError
from ..files import hash_file
from .catalog import EXAMPLES, WeightMeta, default_weights_dir, parse_source, read_card, weight_meta

_TRUE = ("1", "true", "yes", "on")
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX


def torch_hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (like huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def hf_cached_file(repo: str, filename: str, revision: str = "main") -> Path | None:
    """The cached ``filename`` of ``repo`` in the Hugging Face cache, or ``None``.

    The cache layout is ``models--ORG--NAME/refs/<revision>`` (a commit hash) and
    ``models--ORG--NAME/snapshots/<hash>/<filename>``; this is the lookup of
    ``huggingface_hub.try_to_load_from_cache``, done without importing it.
    """
    root = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    path = root / "snapshots" / commit / filename
    return path if path.is_file() else None


def offline() -> bool:
    """True when the environment forbids downloads (``RESLAB_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("RESLAB_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass
class Resolved:
    """A named source turned into a local file."""

    path: Path
    meta: WeightMeta | None = None
    card: dict[str, Any] | None = None
    hf_config: dict[str, Any] | None = None
    hf_preprocessor: dict[str, Any] | None = None


def resolve_named(
    source: str,
    *,
    download: bool | None = None,
    weights_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
) -> Resolved:
    """Finds (or, when online, downloads into the owner's cache) the file of a named source.

    Args:
        source: ``torchvision:...``, ``timm:...``, ``hf:...`` or ``reslab:...``.
        download: ``False`` never downloads; ``None`` downloads unless ``RESLAB_OFFLINE=1``
            or ``HF_HUB_OFFLINE=1``.
        weights_dir: folder of ``reslab:`` weights (default: ``RESLAB_WEIGHTS_DIR``, else
            the package's).
        log: where progress messages go (``None``: silent).
    Returns:
        A ``Resolved`` with the local path and what is known about the weights.
    Raises:
        WeightsError: unknown name, or missing and not downloadable, saying how to get it.
    """
    scheme, name = parse_source(source) or (None, None)
    if scheme is None:
        raise WeightsError(
            f"{source!r} is not a named source; expected one like {list(EXAMPLES.values())}."
        )
    if scheme == "reslab":
        path, card = resolve_reslab(name, weights_dir)
        return Resolved(path, card=card)
    may_download = (download is None and not offline()) or download is True
    meta = weight_meta(source)
    if scheme == "torchvision":
        return Resolved(_torch_hub_file(meta, may_download, log), meta)
    if scheme == "timm":
        if meta.hf_repo:
            path = _hf_file(meta, may_download, log, fallback_url=meta.url)
        else:
            path = _torch_hub_file(meta, may_download, log)
        return Resolved(path, meta)
    path = _hf_file(meta, may_download, log)
    config = _hf_json(meta.hf_repo, "config.json", may_download)
    pre = _hf_json(meta.hf_repo, "preprocessor_config.json", may_download)
    return Resolved(path, meta, hf_config=config, hf_preprocessor=pre)


def _torch_hub_file(meta: WeightMeta, may_download: bool, log) -> Path:
    dst = torch_hub_checkpoint_path(meta.url)
    if dst.is_file():
        return dst
    how = (
        f"On a machine with internet, run\n"
        f"  curl -L -o {dst.name} {meta.url}\n"
        f"and copy the file to {dst} (torch.hub's cache; set TORCH_HOME to move it)."
    )
    if not may_download:
        raise WeightsError(f"{meta.source} is not in the local cache: {dst} does not exist, and "
                           f"downloads are off (offline).\n{how}")
    # torchvision names its files NAME-<first hex digits of their SHA-256>.pth: check them.
    m = _HASH_PREFIX.search(dst.name)
    if log:
        log(f"downloading {meta.url} to {dst}")
    try:
        download_file(meta.url, dst, sha256_prefix=m.group(1) if m else None, how_to_fix=how)
    except (DownloadError, DataError) as e:  # no answer, no network, a corrupted file
        raise WeightsError(f"{meta.source}: {e}") from e
    return dst


def _hf_file(meta: WeightMeta, may_download: bool, log, fallback_url: str | None = None) -> Path:
    for fname in meta.files:
        hit = hf_cached_file(meta.hf_repo, fname)
        if hit is not None:
            return hit
    if fallback_url and torch_hub_checkpoint_path(fallback_url).is_file():
        return torch_hub_checkpoint_path(fallback_url)
    repo_dir = hf_cache_dir() / ("models--" + meta.hf_repo.replace("/", "--"))
    files = f"{meta.files[0]} config.json" if meta.layout == "hf" else meta.files[0]
    local = meta.hf_repo.split("/")[-1]
    how = (
        "On a machine with internet, run\n"
        f"  hf download {meta.hf_repo} {files} --local-dir {local}\n"
        f"then pass that folder (or the file in it) as the source, or copy that machine's "
        f"{repo_dir.name} folder (in ~/.cache/huggingface/hub) into {hf_cache_dir()} "
        "(set HF_HUB_CACHE to use another cache)."
    )
    if fallback_url:
        how += (f"\nOr download {fallback_url} and place it at "
                f"{torch_hub_checkpoint_path(fallback_url)}.")
    if not may_download:
        raise WeightsError(
            f"{meta.source} is not in the local cache (looked for {', '.join(meta.files)} "
            f"under {repo_dir}) and downloads are off (offline).\n{how}"
        )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise WeightsError(f"{meta.source} needs huggingface_hub to download: pip install "
                           f"'reslab[interop]'.\n{how}") from e
    why = _unreachable(_hf_endpoint())
    if why:
        raise WeightsError(f"{meta.source} is not in the local cache and {why}.\n{how}")
    errors = []
    for fname in meta.files:
        try:
            if log:
                log(f"downloading {meta.hf_repo}/{fname} into {hf_cache_dir()}")
            return Path(hf_hub_download(meta.hf_repo, fname, cache_dir=hf_cache_dir()))
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            errors.append(f"{fname}: {type(e).__name__}: {first_line}")
            if not _missing_in_repo(e):  # a network or permission problem: other names fail too
                break
    raise WeightsError(f"{meta.source}: could not download ({'; '.join(errors)}).\n{how}")


def _hf_endpoint() -> str:
    """The Hub's address; mirrors (e.g. HF_ENDPOINT=https://hf-mirror.com) replace it."""
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _missing_in_repo(error: Exception) -> bool:
    """True when huggingface_hub says the repository has no such file (so try the next name)."""
    names = {c.__name__ for c in type(error).__mro__}
    return "EntryNotFoundError" in names and "LocalEntryNotFoundError" not in names


def _unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why ``url``'s host cannot be reached, or ``None``.

    huggingface_hub retries a failed connection for about 20 s per file; offline, one quick
    connection attempt says the same at once. Skipped behind a proxy, where only the proxy
    can connect.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{parts.hostname} cannot be reached ({e.strerror or e})"


def _hf_json(repo: str, filename: str, may_download: bool) -> dict[str, Any] | None:
    path = hf_cached_file(repo, filename)
    if path is None and may_download and not _unreachable(_hf_endpoint()):
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(repo, filename, cache_dir=hf_cache_dir()))
        except Exception:  # optional file: its absence is reported by the caller
            path = None
    return json.loads(path.read_text()) if path is not None else None


def resolve_reslab(
    name: str, weights_dir: str | os.PathLike | None = None
) -> tuple[Path, dict[str, Any]]:
    """The verified ``NAME.safetensors`` of ``reslab:NAME`` and its card.

    Raises:
        WeightsError: missing file, or a SHA-256 that differs from the card's.
    """
    card = read_card(name, weights_dir)
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise WeightsError(f"reslab:{name}: the card exists but {path} does not; reinstall reslab "
                           "or restore the file.")
    digest = hash_file(path)
    if digest != card["sha256"].lower():
        raise WeightsError(
            f"reslab:{name}: {path} has SHA-256 {digest}, but its card says {card['sha256']}: "
            "the file is corrupted or was replaced. Reinstall reslab."
        )
    return path, card


