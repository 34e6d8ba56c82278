"""The weights catalog: what each named weight is (``torchvision:``, ``timm:``, ``hf:``,
``reslab:``), where it is published, and which weights are each architecture's default.

Every named weight is a typed record (``WeightMeta``) holding its download location and
the eval transforms it was trained with, like torchvision's ``Weights`` enums, so fine-tuning
and prediction can read ``resize``/``crop``/``mean``/``std`` from the weights themselves.
Fetching the files is ``reslab.models.fetch``'s job; reading them, ``reslab.models.pretrained``'s.

- ``torchvision:NAME.TAG`` -> a URL under download.pytorch.org (torch.hub's cache),
- ``timm:NAME.TAG``        -> a Hugging Face repository (``timm/NAME.TAG``) or a release URL,
- ``hf:ORG/REPO``          -> a Hugging Face repository (``config.json`` + weights),
- ``reslab:NAME``          -> ``NAME.safetensors`` + its card ``NAME.json`` in the weights folder
  (``reslab/weights`` inside the package; ``RESLAB_WEIGHTS_DIR`` overrides it).

Nothing here imports timm unless a timm name outside the table below needs it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from .normalisation import IMAGENET_MEAN, IMAGENET_STD, stats_for_channels
from .table import model_names

SCHEMES = ("torchvision", "timm", "hf", "reslab")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
        """The eval transform in reslab's ``preprocess`` format (see ``reslab.data``).

        Args:
            in_chans: the model's input channels; mean and std get one value per channel
                (a grayscale model gets the average of the RGB statistics).
        """
        mean, std = stats_for_channels(self.mean, self.std, in_chans)
        return {
            "input_size": [in_chans, self.crop, self.crop],
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(mean),
            "std": list(std),
            "interpolation": self.interpolation,
        }

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values, with its 3-channel ``preprocess``."""
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
                           f"{EXAMPLES[scheme]!r}.")
    return scheme, name


EXAMPLES = {
    "torchvision": "torchvision:resnet50.IMAGENET1K_V2",
    "timm": "timm:resnet50.a1_in1k",
    "hf": "hf:microsoft/resnet-50",
    "reslab": "reslab:resnet18_fashion_mnist",
}


def list_named_weights(scheme: str | None = None) -> list[str]:
    """Names of the named weights reslab knows without any optional library installed."""
    names = [m.source for table in (_TORCHVISION, _TIMM, _HF) for m in table.values()]
    return [n for n in names if scheme is None or n.startswith(scheme + ":")]


def default_weights(architecture: str) -> str | None:
    """The named weights ``create_model(architecture, pretrained=True)`` loads, or ``None``.

    torchvision's DEFAULT (its most accurate weights) first, then timm's default tag (for the
    ResNet-D family, which torchvision lacks), then reslab's own shipped weights
    (e.g. ``reslab:resnet20_fashion_mnist`` for ``resnet20``). Known without any optional
    library or network.
    """
    if architecture in _TV_DEFAULT:
        return _TV_DEFAULT[architecture].source
    if architecture in _TIMM_DEFAULT:
        return _TIMM_DEFAULT[architecture].source
    for name in list_reslab_weights():
        try:
            if read_card(name).get("architecture") == architecture:
                return f"reslab:{name}"
        except WeightsError:  # a broken card in RESLAB_WEIGHTS_DIR is not a default
            continue
    return None


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
    if arch not in model_names(family="imagenet"):
        raise WeightsError(
            f"timm:{name} is a {arch!r}, which reslab does not implement (squeeze-excitation, "
            "anti-aliasing and other timm-only ResNet variants have extra layers). reslab "
            f"loads timm weights for: {', '.join(model_names(family='imagenet'))}."
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
