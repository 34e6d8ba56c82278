"""Matching a state dict to a model, key by key: what loads, what is skipped (a head of
another size), what is adapted (the first conv for another ``in_chans``); ``LoadReport``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from .convert import adapt_input_conv

NBT = "num_batches_tracked"  # BatchNorm's step counter: absent from old and frozen-BN files


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

    body_t = {k for k in target if not is_head(k) and not k.endswith(NBT)}
    body_s = {k for k in sd if not is_head(k) and not k.endswith(NBT)}
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
        if k.endswith(NBT) and not is_head(k):
            to_load[k] = sd[k]

    to_load.update(_match_head(target, sd, is_head, head is not None, strict_head, report))
    report.loaded = sorted(k for k in to_load if k in target)
    return to_load, report


def _shapes(sd: Mapping[str, torch.Tensor]) -> str:
    return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in sd.items()) + "}" if sd else "none"


def _match_head(target, sd, is_head, model_has_head: bool, strict_head: bool,
                report: LoadReport) -> dict[str, torch.Tensor]:
    """The head's tensors to load: all of them when both heads have the same shapes; else
    none, with each key's reason in ``report.skipped`` (or an error when ``strict_head``)."""
    head_t = {k: v for k, v in target.items() if is_head(k) and model_has_head}
    head_s = {k: v for k, v in sd.items() if is_head(k)}
    same = head_t.keys() == head_s.keys() and all(
        v.shape == head_s[k].shape for k, v in head_t.items()
    )
    if head_t or head_s:
        if same:
            return head_s
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
    return {}
