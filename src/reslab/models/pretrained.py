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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import WeightsError
from ..run_folder import RunFolder
from .catalog import EXAMPLES, HF_WEIGHT_FILES, parse_source, read_card, weight_meta
from .convert import (
    convert_hf_state_dict,
    detect_layout,
    hf_architecture,
    to_reslab_state_dict,
    unwrap_state_dict,
)
from .fetch import hf_cached_file, resolve_named
from .match import NBT, LoadReport, match_state_dict
from .normalisation import IMAGENET_MEAN, IMAGENET_STD, stats_for_channels
from .weights_file import check_weights_file, load_torch_file, read_weights_file

LOCAL_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


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
    named = isinstance(source, str) and parse_source(source) is not None
    if isinstance(source, (str, os.PathLike)) and not named:
        return _open_path(Path(source).expanduser())
    if not isinstance(source, str):
        raise WeightsError(f"source must be a path or a name, received {type(source).__name__}.")
    res = resolve_named(source, download=download, weights_dir=weights_dir, log=log)
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
        weights = next((path / f for f in HF_WEIGHT_FILES if (path / f).is_file()), None)
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
            f"{', '.join(EXAMPLES.values())}."
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
        "mean": list(pre.get("image_mean", IMAGENET_MEAN)),
        "std": list(pre.get("image_std", IMAGENET_STD)),
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
    _refuse_non_finite(src.state_dict, src.file or source)
    to_load, report = match_state_dict(model, src.state_dict, strict_head=strict_head)
    report.source, report.file, report.layout = str(source), str(src.file), src.layout
    report.notes.extend(src.notes)
    report.info = src.info
    with torch.no_grad():
        result = model.load_state_dict(to_load, strict=False)
    unexpected_missing = [k for k in result.missing_keys
                          if k not in report.skipped and not k.endswith(NBT)]
    if unexpected_missing or result.unexpected_keys:  # a bug guard: match_state_dict checked all
        raise WeightsError(f"internal mismatch while loading: missing {unexpected_missing}, "
                           f"unexpected {result.unexpected_keys}.")
    _follow_normalisation(model, (src.info or {}).get("preprocess"))
    if log:
        log(report.summary())
    return report


def _refuse_non_finite(state_dict: Mapping[str, torch.Tensor], where) -> None:
    """Weights holding NaN or inf train to NaN at the first step, which would then be blamed
    on the learning rate: refuse them here, naming the file and the tensors."""
    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise WeightsError(
            f"{where} holds NaN or infinite values in {len(bad)} tensor(s) ({shown}): these weights "
            "are broken (a run that diverged, or a damaged file). Use a checkpoint saved before "
            "the run diverged, or other weights."
        )


def _follow_normalisation(model: nn.Module, preprocess: Mapping | None) -> None:
    """Makes ``model.default_cfg`` report the loaded weights' mean and std (one value per
    input channel of the model): inputs must be normalised as the weights were trained."""
    cfg = getattr(model, "default_cfg", None)
    if not isinstance(cfg, dict) or not preprocess or not preprocess.get("mean"):
        return
    in_chans = int(cfg.get("input_size", (getattr(model, "in_chans", 3),))[0])
    cfg["mean"], cfg["std"] = stats_for_channels(preprocess["mean"], preprocess["std"], in_chans)


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
    parsed = parse_source(source) if isinstance(source, str) else None
    if parsed and parsed[0] == "reslab":
        return _card_info(read_card(parsed[1], weights_dir))
    if parsed:
        meta = weight_meta(str(source))
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
    if path.is_file() and check_weights_file(path) == "torch":
        obj = load_torch_file(path)
        if isinstance(obj, Mapping) and obj.get("model_args"):
            return _from_reslab_checkpoint(obj, path).info
    return None


def _cached_hf_json(repo: str, name: str) -> dict | None:
    p = hf_cached_file(repo, name)
    return json.loads(p.read_text()) if p else None
