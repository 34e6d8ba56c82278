"""Named weights: ``torchvision:``, ``timm:``, ``hf:`` and ``reslab:`` sources, their
metadata, and where each lives on disk.

Every named weight is a typed record (``WeightMeta``) holding its download location and
the eval transforms it was trained with, like torchvision's ``Weights`` enums, so fine-tuning
and prediction can read ``resize``/``crop``/``mean``/``std`` from the weights themselves.

Files are fetched through the owning library's cache and never copied elsewhere:

- ``torchvision:NAME.TAG`` -> ``$TORCH_HOME/hub/checkpoints/<file of the URL>`` (torch.hub),
- ``timm:NAME.TAG``        -> the Hugging Face cache (``timm/NAME.TAG``), else torch.hub's,
- ``hf:ORG/REPO``          -> the Hugging Face cache (``config.json`` + weights),
- ``reslab:NAME``          -> ``NAME.safetensors`` + ``NAME.json`` in the weights folder
  (``reslab/weights`` inside the package; ``RESLAB_WEIGHTS_DIR`` overrides it).

Nothing here imports timm, transformers or huggingface_hub unless a call needs them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import WeightsError
from ..files import hash_file

SCHEMES = ("torchvision", "timm", "hf", "reslab")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class WeightMeta:
    """What is known about one named set of weights before downloading it.

    Attributes:
        source: the full name, e.g. ``torchvision:resnet50.IMAGENET1K_V2``.
        architecture: the reslab model it loads into, e.g. ``resnet50``.
        layout: key layout of the file: ``torchvision``, ``timm`` or ``hf``.
        url: direct download URL (torch.hub cache), if any.
        hf_repo: Hugging Face repository holding the file, if any.
        files: candidate file names inside ``hf_repo``, best first.
        num_classes: size of the classifier the weights were trained with.
        resize, crop: eval transform: resize the short side to ``resize``, centre-crop ``crop``.
        interpolation: ``bilinear`` or ``bicubic``.
        top1: ImageNet-1k top-1 accuracy in percent, when published by the owner.
        params: number of parameters, when published by the owner.
    """

    source: str
    architecture: str | None
    layout: str
    url: str | None = None
    hf_repo: str | None = None
    files: tuple[str, ...] = ()
    num_classes: int = 1000
    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    top1: float | None = None
    params: int | None = None

    def preprocess(self, in_chans: int = 3) -> dict[str, Any]:
        """The eval transform in reslab's ``preprocess`` format (see ``reslab.data``)."""
        return {
            "input_size": [in_chans, self.crop, self.crop],
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["preprocess"] = self.preprocess()
        return d


# ---- torchvision: the official weights, mirrored from torchvision.models.*_Weights --------
# (tests check every row against torchvision's own enums)
_TV_URL = "https://download.pytorch.org/models/"


def _tv(arch: str, tag: str, sha: str, top1: float, params: int) -> WeightMeta:
    """torchvision names its files ARCH-<first 8 hex digits of their SHA-256>.pth."""
    # V1 recipes evaluate at resize 256, the V2 recipe ("How to train state-of-the-art models
    # using TorchVision's latest primitives", 2021) at resize 232; both crop 224, bilinear.
    return WeightMeta(
        source=f"torchvision:{arch}.{tag}",
        architecture=arch,
        layout="torchvision",
        url=f"{_TV_URL}{arch}-{sha}.pth",
        resize=256 if tag.endswith("V1") else 232,
        top1=top1,
        params=params,
    )


_TORCHVISION: dict[str, WeightMeta] = {
    m.source.split(":", 1)[1]: m
    for m in (
        _tv("resnet18", "IMAGENET1K_V1", "f37072fd", 69.758, 11689512),
        _tv("resnet34", "IMAGENET1K_V1", "b627a593", 73.314, 21797672),
        _tv("resnet50", "IMAGENET1K_V1", "0676ba61", 76.13, 25557032),
        _tv("resnet50", "IMAGENET1K_V2", "11ad3fa6", 80.858, 25557032),
        _tv("resnet101", "IMAGENET1K_V1", "63fe2227", 77.374, 44549160),
        _tv("resnet101", "IMAGENET1K_V2", "cd907fc2", 81.886, 44549160),
        _tv("resnet152", "IMAGENET1K_V1", "394f9c45", 78.312, 60192808),
        _tv("resnet152", "IMAGENET1K_V2", "f82ba261", 82.284, 60192808),
        _tv("wide_resnet50_2", "IMAGENET1K_V1", "95faca4d", 78.468, 68883240),
        _tv("wide_resnet50_2", "IMAGENET1K_V2", "9ba9bcbe", 81.602, 68883240),
        _tv("wide_resnet101_2", "IMAGENET1K_V1", "32ee1156", 78.848, 126886696),
        _tv("wide_resnet101_2", "IMAGENET1K_V2", "d733dc28", 82.51, 126886696),
        _tv("resnext50_32x4d", "IMAGENET1K_V1", "7cdf4587", 77.618, 25028904),
        _tv("resnext50_32x4d", "IMAGENET1K_V2", "1a0047aa", 81.198, 25028904),
        _tv("resnext101_32x8d", "IMAGENET1K_V1", "8ba56ff5", 79.312, 88791336),
        _tv("resnext101_32x8d", "IMAGENET1K_V2", "110c445d", 82.834, 88791336),
    )
}
# torchvision's DEFAULT: the most accurate weights of each architecture.
_TV_DEFAULT = {
    arch: max((m for m in _TORCHVISION.values() if m.architecture == arch), key=lambda m: m.top1)
    for arch in {m.architecture for m in _TORCHVISION.values()}
}


# ---- timm: a few popular tags, so they resolve without timm installed ---------------------
# With timm installed, any ResNet tag resolves through timm's own pretrained configs.
_TIMM_REL = "https://github.com/huggingface/pytorch-image-models/releases/download/"
_RW_REL = "https://github.com/rwightman/pytorch-image-models/releases/download/"


def _timm(name: str, url: str, crop_pct: float, img: int = 224) -> WeightMeta:
    return WeightMeta(
        source=f"timm:{name}",
        architecture=name.split(".")[0],
        layout="timm",
        url=url,
        hf_repo=f"timm/{name}",
        files=HF_WEIGHT_FILES,
        # timm's eval transform: resize the short side to floor(img / crop_pct), crop img.
        resize=math.floor(img / crop_pct),
        crop=img,
        interpolation="bicubic",
    )


_TIMM: dict[str, WeightMeta] = {
    m.source.split(":", 1)[1]: m
    for m in (
        _timm("resnet18.a1_in1k", _TIMM_REL + "v0.1-rsb-weights/resnet18_a1_0-d63eafa0.pth", 0.95),
        _timm("resnet34.a1_in1k", _TIMM_REL + "v0.1-rsb-weights/resnet34_a1_0-46f8f793.pth", 0.95),
        _timm("resnet50.a1_in1k", _RW_REL + "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth", 0.95),
        _timm("resnet101.a1h_in1k", _RW_REL + "v0.1-rsb-weights/resnet101_a1h-36d3f2aa.pth", 0.95),
        _timm("resnet152.a1h_in1k", _RW_REL + "v0.1-rsb-weights/resnet152_a1h-dc400468.pth", 0.95),
        _timm("resnet18d.ra2_in1k", _RW_REL + "v0.1-weights/resnet18d_ra2-48a79e06.pth", 0.875),
        _timm("resnet34d.ra2_in1k", _RW_REL + "v0.1-weights/resnet34d_ra2-f8dcfcaf.pth", 0.875),
        _timm("resnet50d.ra2_in1k", _RW_REL + "v0.1-weights/resnet50d_ra2-464e36ba.pth", 0.875),
        _timm("resnet101d.ra2_in1k", _RW_REL + "v0.1-weights/resnet101d_ra2-2803ffab.pth", 0.95,
              img=256),
    )
}
_TIMM_DEFAULT = {n.split(".")[0]: m for n, m in _TIMM.items()}


# ---- Hugging Face transformers: Microsoft's ResNets -------------------------------------
def _hf(depth: int) -> WeightMeta:
    # Their preprocessor: ConvNextImageProcessor with crop_pct 0.875, shortest_edge 224,
    # bicubic. A cached preprocessor_config.json, when present, overrides these values.
    return WeightMeta(
        source=f"hf:microsoft/resnet-{depth}",
        architecture=f"resnet{depth}",
        layout="hf",
        hf_repo=f"microsoft/resnet-{depth}",
        files=HF_WEIGHT_FILES,
        resize=256,
        crop=224,
        interpolation="bicubic",
    )


_HF: dict[str, WeightMeta] = {m.hf_repo: m for m in map(_hf, (18, 34, 50, 101, 152))}


# ---- names ---------------------------------------------------------------------------------
def parse_source(source: str) -> tuple[str, str] | None:
    """Splits ``"scheme:name"`` into ``(scheme, name)``; ``None`` when ``source`` has no scheme."""
    if not isinstance(source, str) or ":" not in source:
        return None
    scheme, _, name = source.partition(":")
    if scheme not in SCHEMES:
        return None
    if not name:
        raise WeightsError(f"{source!r} names no weights after {scheme + ':'!r}; e.g. "
                           f"{_EXAMPLES[scheme]!r}.")
    return scheme, name


_EXAMPLES = {
    "torchvision": "torchvision:resnet50.IMAGENET1K_V2",
    "timm": "timm:resnet50.a1_in1k",
    "hf": "hf:microsoft/resnet-50",
    "reslab": "reslab:resnet18_fashion_mnist",
}


def list_named_weights(scheme: str | None = None) -> list[str]:
    """Names of the named weights reslab knows without any optional library installed."""
    names = [m.source for table in (_TORCHVISION, _TIMM, _HF) for m in table.values()]
    return [n for n in names if scheme is None or n.startswith(scheme + ":")]


def weight_meta(source: str) -> WeightMeta | None:
    """The ``WeightMeta`` of a ``torchvision:``/``timm:``/``hf:`` name (``None`` otherwise).

    Raises:
        WeightsError: for an unknown name, listing the known ones.
    """
    parsed = parse_source(source)
    if parsed is None or parsed[0] == "reslab":
        return None
    scheme, name = parsed
    if scheme == "torchvision":
        return _torchvision_meta(name)
    if scheme == "timm":
        return _timm_meta(name)
    return _hf_meta(name)


def _torchvision_meta(name: str) -> WeightMeta:
    arch, _, tag = name.partition(".")
    if tag in ("", "DEFAULT") and arch in _TV_DEFAULT:
        return _TV_DEFAULT[arch]
    if name in _TORCHVISION:
        return _TORCHVISION[name]
    known = ", ".join(sorted(_TORCHVISION)) + ", or ARCH.DEFAULT"
    raise WeightsError(
        f"Unknown torchvision weights {name!r}. reslab knows torchvision's ResNet weights: {known}."
    )


def _timm_meta(name: str) -> WeightMeta:
    from .registry import list_models

    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        get_pretrained_cfg = None
    if get_pretrained_cfg is None:
        meta = _TIMM.get(name) or _TIMM_DEFAULT.get(name)
        if meta is None:
            raise WeightsError(
                f"timm:{name} is not among the timm weights reslab knows without timm "
                f"({', '.join(sorted(_TIMM))}). Install timm to resolve any timm tag: "
                "pip install 'reslab[interop]'."
            )
        return meta
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # timm: "Invalid pretrained tag (x) for resnet50."
        raise WeightsError(
            f"timm:{name}: {e} List the tags with timm.list_pretrained('resnet50*')."
        ) from e
    if cfg is None:
        raise WeightsError(f"timm knows no pretrained weights named {name!r}.")
    arch = cfg.architecture
    if arch not in list_models(family="imagenet"):
        raise WeightsError(
            f"timm:{name} is a {arch!r}, which reslab does not implement (squeeze-excitation, "
            "anti-aliasing and other timm-only ResNet variants have extra layers). reslab "
            f"loads timm weights for: {', '.join(list_models(family='imagenet'))}."
        )
    img = int(cfg.input_size[-1])
    return WeightMeta(
        source=f"timm:{arch}.{cfg.tag}" if cfg.tag else f"timm:{arch}",
        architecture=arch,
        layout="timm",
        url=cfg.url or None,
        hf_repo=cfg.hf_hub_id or None,
        files=(cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_WEIGHT_FILES,
        num_classes=int(cfg.num_classes),
        resize=math.floor(img / cfg.crop_pct),
        crop=img,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        interpolation=cfg.interpolation,
    )


def _hf_meta(repo: str) -> WeightMeta:
    if repo in _HF:
        return _HF[repo]
    # An unknown repository may still hold a transformers ResNet: its config.json decides.
    return WeightMeta(source=f"hf:{repo}", architecture=None, layout="hf", hf_repo=repo,
                      files=HF_WEIGHT_FILES)


# ---- caches ------------------------------------------------------------------------------
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
            f"{source!r} is not a named source; expected one like {list(_EXAMPLES.values())}."
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
    import torch.hub

    m = torch.hub.HASH_REGEX.search(dst.name)
    if log:
        log(f"downloading {meta.url} to {dst}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        prefix = m.group(1) if m else None  # torchvision names files NAME-<sha256 prefix>.pth
        torch.hub.download_url_to_file(meta.url, str(dst), prefix, progress=False)
    except Exception as e:  # no network, proxy, disk full, hash mismatch: all need the same advice
        raise WeightsError(
            f"{meta.source}: could not download {meta.url} ({type(e).__name__}: {e}). "
            f"Expected file: {dst}.\n{how}"
        ) from e
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


# ---- reslab's own weights ------------------------------------------------------------------
def default_weights_dir() -> Path:
    """``RESLAB_WEIGHTS_DIR`` when set, else the ``weights`` folder shipped inside the package."""
    env = os.environ.get("RESLAB_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "weights"


def list_reslab_weights(weights_dir: str | os.PathLike | None = None) -> list[str]:
    """Names usable as ``reslab:NAME`` (every ``NAME.json`` card in the weights folder)."""
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def read_card(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The model card ``NAME.json`` of ``reslab:NAME``.

    Raises:
        WeightsError: when the card is missing or lacks ``architecture`` or ``sha256``.
    """
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    card_path = folder / f"{name}.json"
    if not card_path.is_file():
        known = list_reslab_weights(folder)
        raise WeightsError(
            f"reslab:{name} not found: no {card_path}. Available in {folder}: "
            f"{', '.join(known) or 'none'}. reslab's weights ship inside the package "
            "(reinstall it: pip install -e .); set RESLAB_WEIGHTS_DIR to use another folder."
        )
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{card_path} is not valid JSON ({e}).") from e
    missing = [k for k in ("architecture", "sha256") if k not in card]
    if missing:
        raise WeightsError(f"{card_path} lacks {missing}; a card needs at least 'architecture' "
                           "and the 'sha256' of the .safetensors file (sha256sum FILE).")
    return card


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


