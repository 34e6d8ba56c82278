"""Pretrained weights in, safely: ``load_pretrained(model, source)`` and ``weights_info(source)``.

Safety: files are read with safetensors or ``torch.load(weights_only=True)`` (through
``reslab.files.load_checkpoint``), which cannot run code; a file that carries
pickled Python objects is refused with an explanation instead of being trusted.

Matching: every tensor of the model must be found in the weights with the same shape, with
two deliberate exceptions, both reported:

- the head (``fc``): weights for 1000 classes into a model with N classes keep the model's
  freshly initialised head (transfer learning); the report names the skipped keys;
- the first conv: 3-channel weights into a model with ``in_chans != 3`` are adapted
  (summed over channels for grayscale, as timm's ``adapt_input_conv``).

Anything else that does not match is an error listing the keys.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import WeightsError
from ..run_folder import RunFolder
from . import hub
from .convert import (
    adapt_input_conv,
    convert_hf_state_dict,
    detect_layout,
    hf_architecture,
    is_state_dict,
    to_reslab_state_dict,
    unwrap_state_dict,
)

LOCAL_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_NBT = "num_batches_tracked"  # BatchNorm's step counter: absent from old and frozen-BN files


@dataclass
class LoadReport:
    """What ``load_pretrained`` did, key by key.

    Attributes:
        source: the source as given.
        file: the local file read.
        layout: ``torchvision``, ``timm``, ``hf`` or ``reslab`` (a reslab checkpoint/card).
        loaded: model keys whose values came from the weights.
        skipped: key -> reason, for weights not loaded (a different head) and model keys left
            as initialised (a head the weights do not have).
        adapted: key -> how it was changed to fit (the first conv for another ``in_chans``).
        notes: anything else worth knowing (assumptions, metadata).
        info: ``weights_info`` of the source (preprocess, num_classes...), when known.
    """

    source: str
    file: str | None = None
    layout: str = ""
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None

    @property
    def head_loaded(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        """A few human-readable lines (what the CLI and ``log`` print)."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.layout} layout"
                 + (f", {self.file})" if self.file and str(self.file) != str(self.source) else ")")]
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        lines += [f"  adapted {k}: {how}" for k, how in self.adapted.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ---- reading files ---------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    """``safetensors``, ``torch`` (zip or legacy pickle container) or ``unknown``, by content."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")  # safetensors: u64 header size, then JSON
        if 0 < n < path.stat().st_size:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def read_weights_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads tensors from a file without running any code from it.

    Args:
        path: a ``.safetensors`` file, or a PyTorch file (``.pth``/``.pt``/``.bin``/``.ckpt``)
            holding a state dict, possibly wrapped (``{"model": ...}``, ``{"state_dict": ...}``).
    Returns:
        ``(state_dict, extras)``: extras holds ``model_args``/``classes``/``preprocess`` of a
        reslab checkpoint (empty otherwise).
    Raises:
        WeightsError: unreadable, pickle-carrying, or holding no state dict.
    """
    from ..files import load_checkpoint

    path = Path(path)
    kind = _sniff(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except SafetensorError as e:
            raise WeightsError(f"{path} is not a readable .safetensors file ({e}).") from e
    if kind == "unknown":
        raise WeightsError(
            f"{path} is neither a PyTorch file nor a .safetensors file (its first bytes are "
            "not either format's); it may be truncated, an HTML error page or another format."
        )
    try:
        obj = load_checkpoint(path)  # torch.load(weights_only=True), refusing pickled objects
    except (RuntimeError, EOFError, OSError) as e:
        raise WeightsError(f"could not read {path}: {type(e).__name__}: {e}. The file may be "
                           "truncated or corrupted; download it again.") from e
    extras = {}
    if isinstance(obj, Mapping) and "model" in obj:
        extras = {k: obj[k] for k in ("model_args", "classes", "preprocess") if k in obj}
        # An EMA run evaluates (and so picks its best epoch by) the averaged weights: use them,
        # as reslab.models.checkpoint.model_from_checkpoint does.
        ema = obj.get("ema")
        ema_on = bool(((obj.get("config") or {}).get("ema") or {}).get("enabled"))
        if ema_on and isinstance(ema, Mapping) and is_state_dict(ema.get("model")):
            extras["ema"] = True
            return unwrap_state_dict(ema["model"]), extras
    return unwrap_state_dict(obj), extras


@dataclass
class _Source:
    """A source resolved to tensors plus what is known about them."""

    state_dict: dict[str, torch.Tensor]
    file: Path
    layout: str
    architecture: str | None = None
    info: dict | None = None
    notes: list[str] = field(default_factory=list)


def _open_source(source, *, download, weights_dir, log) -> _Source:
    named = isinstance(source, str) and hub.parse_source(source) is not None
    if isinstance(source, (str, os.PathLike)) and not named:
        return _open_path(Path(source).expanduser())
    if not isinstance(source, str):
        raise WeightsError(f"source must be a path or a name, received {type(source).__name__}.")
    res = hub.resolve_named(source, download=download, weights_dir=weights_dir, log=log)
    sd, extras = read_weights_file(res.path)
    if res.card is not None:  # reslab:NAME
        return _Source(sd, res.path, "reslab", res.card["architecture"], info=_card_info(res.card))
    meta = res.meta
    if meta.layout == "hf":
        return _from_hf(sd, res.path, res.hf_config, res.hf_preprocessor, meta)
    sd, _ = to_reslab_state_dict(sd)
    return _Source(sd, res.path, meta.layout, meta.architecture, info=meta.to_dict())


def _open_path(path: Path) -> _Source:
    if path.is_dir():
        run = RunFolder(path)
        if run.checkpoints.is_dir() and (run.best.is_file() or run.last.is_file()):
            file = RunFolder.resolve_checkpoint(path)[0]  # a reslab run folder: best.pt, else last.pt
            sd, extras = read_weights_file(file)
            return _from_reslab_checkpoint({"model": sd, **extras}, file)
        # A Hugging Face folder (save_pretrained, hf download --local-dir): its weights file,
        # read with the config.json beside it when the keys are transformers'.
        weights = next((path / f for f in hub.HF_WEIGHT_FILES if (path / f).is_file()), None)
        if weights is not None:
            return _open_path(weights)
        raise WeightsError(
            f"{path} is a folder, but neither a reslab run folder (checkpoints/best.pt) nor a "
            "Hugging Face model folder (model.safetensors or pytorch_model.bin, + config.json)."
        )
    if not path.exists():
        raise WeightsError(
            f"weights source {str(path)!r} is neither an existing file nor a known name. Expected "
            f"a file ({', '.join(LOCAL_SUFFIXES)}), a run folder, or a name such as "
            f"{', '.join(hub._EXAMPLES.values())}."
        )
    sd, extras = read_weights_file(path)
    if extras.get("model_args"):
        return _from_reslab_checkpoint({"model": sd, **extras}, path)
    if detect_layout(sd) == "hf":
        # The config.json beside transformers weights says where blocks stride.
        return _from_hf(sd, path, _json_beside(path, "config.json"),
                        _json_beside(path, "preprocessor_config.json"), None)
    sd, layout = to_reslab_state_dict(sd)
    return _Source(sd, path, layout)


def _json_beside(path: Path, name: str) -> dict | None:
    other = path.parent / name
    return json.loads(other.read_text()) if other.is_file() else None


def _from_reslab_checkpoint(ckpt: Mapping, file: Path) -> _Source:
    sd = unwrap_state_dict(ckpt["model"] if "model" in ckpt else ckpt)
    args = dict(ckpt.get("model_args") or {})
    info = {
        "source": str(file),
        "architecture": args.get("name"),
        "model_args": args,
        "num_classes": args.get("num_classes"),
        "classes": list(ckpt.get("classes") or []),
        "preprocess": dict(ckpt.get("preprocess") or {}) or None,
    }
    notes = ["EMA weights (the ones the run evaluated)"] if ckpt.get("ema") is True else []
    return _Source(sd, file, "reslab", args.get("name"), info=info, notes=notes)


def _from_hf(sd, file, config, preprocessor, meta) -> _Source:
    notes = []
    if config is None:
        notes.append("no config.json found with the weights: assumed transformers' defaults "
                     "(downsample_in_bottleneck=False, the stride on the 3x3 as in reslab)")
    sd = convert_hf_state_dict(sd, config)
    arch = hf_architecture(config) if config else (meta.architecture if meta else None)
    info = meta.to_dict() if meta is not None else {"source": str(file)}
    if config:
        info["architecture"] = arch
        info["num_classes"] = config.get("num_labels") or len(config.get("id2label", {})) or None
        if config.get("id2label"):
            labels = config["id2label"]
            info["classes"] = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
    if preprocessor:
        info["preprocess"] = _hf_preprocess(preprocessor, info.get("preprocess"))
    return _Source(sd, file, "hf", arch or None, info=info, notes=notes)


def _hf_preprocess(pre: Mapping, fallback: Mapping | None) -> dict:
    """reslab ``preprocess`` from a transformers ``preprocessor_config.json``."""
    size = pre.get("size", {})
    short = size.get("shortest_edge") if isinstance(size, Mapping) else size
    crop = short or (size.get("height") if isinstance(size, Mapping) else None) or 224
    crop_pct = pre.get("crop_pct")
    # ConvNextImageProcessor (used by microsoft/resnet-*): below 384 px it resizes the short
    # side to shortest_edge / crop_pct, then centre-crops shortest_edge.
    resize = int(crop / crop_pct) if crop_pct else crop
    resample = {2: "bilinear", 3: "bicubic"}.get(pre.get("resample"), "bilinear")
    base = dict(fallback or {})
    base.update({
        "input_size": [3, crop, crop],
        "resize": resize,
        "crop": crop,
        "mean": list(pre.get("image_mean", hub.IMAGENET_MEAN)),
        "std": list(pre.get("image_std", hub.IMAGENET_STD)),
        "interpolation": resample,
    })
    return base


def _card_info(card: Mapping) -> dict:
    args = dict(card.get("model_args") or {})
    return {
        "architecture": card["architecture"],
        "model_args": args,
        "num_classes": args.get("num_classes", len(card.get("classes") or []) or None),
        "classes": list(card.get("classes") or []),
        "preprocess": card.get("preprocess"),
        "accuracy": card.get("accuracy"),
        "sha256": card.get("sha256"),
    }


# ---- matching --------------------------------------------------------------------------------
def _head_prefix(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else getattr(model, "fc", None)
    if head is None:
        return None
    for name, m in model.named_modules():
        if m is head and name:
            return name + "."
    return None


def _first_conv_key(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name + ".weight"
    return None


def _shape_summary(sd: Mapping[str, torch.Tensor]) -> str:
    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := re.match(r"layer(\d+)\.(\d+)\.", k):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    depth = tuple(len(blocks[i]) for i in sorted(blocks))
    conv = next((tuple(v.shape) for k, v in sd.items() if k in ("conv1.weight", "conv1.0.weight")),
                None)
    fc = tuple(sd["fc.weight"].shape) if "fc.weight" in sd else None
    return f"blocks per stage {depth}, first conv {conv}, fc {fc}"


def _preview(keys, n: int = 20) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... and {len(keys) - n} more" if len(keys) > n else "")


def match_state_dict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], *, strict_head: bool = False
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Checks ``sd`` against ``model`` and returns the tensors to load plus a report.

    Args:
        model: the target model.
        sd: weights under reslab names.
        strict_head: refuse a head that does not match instead of skipping it.
    Returns:
        ``(to_load, report)`` with ``report.loaded/skipped/adapted`` filled.
    Raises:
        WeightsError: listing missing, unexpected and mismatched keys.
    """
    report = LoadReport(source="")
    target = model.state_dict()
    head = _head_prefix(model)
    first_conv = _first_conv_key(model)

    def is_head(k: str) -> bool:
        # "fc." is the head of the weights even when the model has none (num_classes=0).
        return k.startswith("fc.") or (head is not None and k.startswith(head))

    body_t = {k for k in target if not is_head(k) and not k.endswith(_NBT)}
    body_s = {k for k in sd if not is_head(k) and not k.endswith(_NBT)}
    missing = sorted(body_t - body_s)
    unexpected = sorted(body_s - body_t)
    mismatched = []
    to_load: dict[str, torch.Tensor] = {}
    for k in sorted(body_t & body_s):
        src, dst = sd[k], target[k]
        if src.shape == dst.shape:
            to_load[k] = src
        elif k == first_conv and src.ndim == 4 and src.shape[0] == dst.shape[0] \
                and src.shape[2:] == dst.shape[2:]:
            to_load[k], how = adapt_input_conv(dst.shape[1], src)
            report.adapted[k] = how
        else:
            mismatched.append(f"{k} {tuple(src.shape)} -> model {tuple(dst.shape)}")
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the weights ({len(missing)}): {_preview(missing)}")
        if unexpected:
            parts.append(f"not in the model ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            parts.append(f"different shapes ({len(mismatched)}): {_preview(mismatched)}")
        raise WeightsError(
            "the weights do not fit this model.\n  " + "\n  ".join(parts)
            + f"\n  weights: {_shape_summary(sd)}\n  model:   {_shape_summary(target)}\n"
            "Build the architecture the weights were made for (reslab models lists them); only "
            "the head (fc) and the first conv's input channels are adapted automatically."
        )
    # Running statistics' step counters: copy when both have them, else leave the model's.
    for k in target.keys() & sd.keys():
        if k.endswith(_NBT) and not is_head(k):
            to_load[k] = sd[k]

    head_t = {k: v for k, v in target.items() if is_head(k) and head is not None}
    head_s = {k: v for k, v in sd.items() if is_head(k)}
    same = head_t.keys() == head_s.keys() and all(
        v.shape == head_s[k].shape for k, v in head_t.items()
    )
    if head_t or head_s:
        if same:
            to_load.update(head_s)
        elif strict_head:
            raise WeightsError(
                f"the head does not match (strict_head=True): weights {_shapes(head_s)}, model "
                f"{_shapes(head_t)}. Build the model with the weights' number of classes, or "
                "pass strict_head=False to keep a fresh head."
            )
        else:
            for k, v in head_s.items():
                want = f"model {tuple(head_t[k].shape)}" if k in head_t else "model has no such key"
                report.skipped[k] = f"weights {tuple(v.shape)} vs {want}: not loaded"
            for k in head_t:
                if k not in head_s:
                    report.skipped[k] = "not in the weights: left as initialised"
                else:
                    report.skipped[k] += ", the model's freshly initialised head is kept"
    report.loaded = sorted(k for k in to_load if k in target)
    return to_load, report


def _shapes(sd: Mapping[str, torch.Tensor]) -> str:
    return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in sd.items()) + "}" if sd else "none"


# ---- public API ------------------------------------------------------------------------------
def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike,
    *,
    strict_head: bool = False,
    log: Callable[[str], None] | None = print,
    weights_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> LoadReport:
    """Loads weights from ``source`` into ``model`` in place.

    Args:
        model: a reslab model (``create_model``); its ``in_chans``/``num_classes`` may differ
            from the weights' (first conv adapted, head kept fresh, both reported).
        source: a file (``.pth``/``.pt``/``.bin``/``.safetensors``) in torchvision, timm or
            Hugging Face layout, a reslab checkpoint or run folder, a transformers model folder,
            or a name: ``torchvision:resnet50.IMAGENET1K_V2``, ``timm:resnet50.a1_in1k``,
            ``hf:microsoft/resnet-50``, ``reslab:NAME``.
        strict_head: raise instead of skipping a head of another size.
        log: receives the report's summary lines (``None``: silent).
        weights_dir: folder of ``reslab:`` weights (default: ``RESLAB_WEIGHTS_DIR``, else
            the package's).
        download: ``False`` never downloads; ``None`` (default) downloads missing named
            weights into the owning library's cache unless ``RESLAB_OFFLINE=1``.
    Returns:
        A ``LoadReport`` saying which keys were loaded, skipped (head) or adapted (first conv).
    Raises:
        WeightsError: unknown/missing source (with how to get it), unsafe file, a layout reslab
            cannot represent, or keys that do not fit (listed).
    """
    src = _open_source(source, download=download, weights_dir=weights_dir, log=log)
    model_arch = (getattr(model, "default_cfg", None) or {}).get("architecture")
    if src.architecture and model_arch and src.architecture != model_arch:
        raise WeightsError(
            f"{source} holds weights for {src.architecture!r}, but the model is {model_arch!r}. "
            f"Build it with reslab.create_model({src.architecture!r}, num_classes=..., "
            f"in_chans=...) (or pass pretrained=... to create_model)."
        )
    to_load, report = match_state_dict(model, src.state_dict, strict_head=strict_head)
    report.source, report.file, report.layout = str(source), str(src.file), src.layout
    report.notes.extend(src.notes)
    report.info = src.info
    with torch.no_grad():
        result = model.load_state_dict(to_load, strict=False)
    unexpected_missing = [k for k in result.missing_keys
                          if k not in report.skipped and not k.endswith(_NBT)]
    if unexpected_missing or result.unexpected_keys:  # a bug guard: match_state_dict checked all
        raise WeightsError(f"internal mismatch while loading: missing {unexpected_missing}, "
                           f"unexpected {result.unexpected_keys}.")
    if log:
        log(report.summary())
    return report


def weights_info(
    source: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None
) -> dict[str, Any] | None:
    """What is known about ``source`` without loading it into a model.

    Args:
        source: a name (``torchvision:``/``timm:``/``hf:``/``reslab:``), a reslab checkpoint,
            run folder or Hugging Face model folder; plain weight files give ``None``.
        weights_dir: folder of ``reslab:`` weights.
    Returns:
        A dict with at least ``preprocess`` (``input_size``, ``resize``, ``crop``, ``mean``,
        ``std``, ``interpolation``) and ``num_classes`` when known, plus ``architecture`` and,
        where published, ``top1``, ``params``, ``classes``; ``None`` when nothing is known.
    """
    parsed = hub.parse_source(source) if isinstance(source, str) else None
    if parsed and parsed[0] == "reslab":
        return _card_info(hub.read_card(parsed[1], weights_dir))
    if parsed:
        meta = hub.weight_meta(str(source))
        info = meta.to_dict()
        if meta.layout == "hf":
            pre = _cached_hf_json(meta.hf_repo, "preprocessor_config.json")
            if pre:
                info["preprocess"] = _hf_preprocess(pre, info["preprocess"])
        return info
    path = Path(source).expanduser()
    if not path.exists():
        _open_path(path)  # raises the same "neither a file nor a known name" error as loading
    if path.is_dir():
        if (path / "checkpoints").is_dir() or (path / "config.json").is_file():
            return _open_path(path).info
        return None
    if path.is_file() and _sniff(path) == "torch":
        from ..files import load_checkpoint

        obj = load_checkpoint(path)
        if isinstance(obj, Mapping) and obj.get("model_args"):
            return _from_reslab_checkpoint(obj, path).info
    return None


def _cached_hf_json(repo: str, name: str) -> dict | None:
    p = hub.hf_cached_file(repo, name)
    return json.loads(p.read_text()) if p else None
