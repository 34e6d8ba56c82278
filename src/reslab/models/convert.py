"""Key converters: state dicts of timm and Hugging Face transformers ResNets -> reslab names.

reslab's ImageNet family uses torchvision's parameter names (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``) and timm's for ResNet-D
(``conv1.0`` .. ``conv1.6``, ``downsample.1/2``). timm's plain ResNets use those very
names, so a timm file needs only to be checked for layers reslab does not have. Hugging Face
transformers names the same tensors differently; the table below maps them one to one:

    resnet.embedder.embedder.convolution            -> conv1
    resnet.embedder.embedder.normalization          -> bn1
    resnet.encoder.stages.S.layers.M.layer.K.convolution    -> layer{S+1}.M.conv{K+1}
    resnet.encoder.stages.S.layers.M.layer.K.normalization  -> layer{S+1}.M.bn{K+1}
    resnet.encoder.stages.S.layers.M.shortcut.convolution   -> layer{S+1}.M.downsample.0
    resnet.encoder.stages.S.layers.M.shortcut.normalization -> layer{S+1}.M.downsample.1
    classifier.1                                    -> fc
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch

from ..errors import WeightsError
from .table import get_spec, model_names

# Wrappers used by training scripts around the real state dict, most specific first.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "net", "module")
# Prefixes added by DistributedDataParallel ("module.") and torch.compile ("_orig_mod.").
_PREFIXES = ("module.", "_orig_mod.")

_HF_STEM = re.compile(r"^embedder\.embedder\.(convolution|normalization)\.(.+)$")
_HF_LAYER = re.compile(
    r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.(convolution|normalization)\.(.+)$"
)
_HF_SHORTCUT = re.compile(
    r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(convolution|normalization)\.(.+)$"
)
_HF_HEAD = re.compile(r"^classifier\.1\.(.+)$")

# Parts of timm ResNet variants that reslab does not implement (their weights would be lost).
_TIMM_ONLY = {
    ".se.": "squeeze-excitation (seresnet*, ecaresnet*)",
    ".attn.": "attention blocks",
    ".aa.": "anti-aliased downsampling (resnetaa*, resnetblur*)",
    ".drop_block.": "DropBlock",
    "global_pool.": "a learned global pool",
}


def is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping of string keys to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Finds the model's state dict inside what a file held.

    Accepts a plain state dict, or one wrapped as ``{"model": ...}`` (reslab checkpoints),
    ``{"state_dict": ...}`` (Lightning, timm training checkpoints) and the like, with the
    ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes removed.

    Raises:
        WeightsError: when no state dict is found.
    """
    sd = obj
    if not is_state_dict(sd) and isinstance(sd, Mapping):
        for key in _WRAPPER_KEYS:
            if is_state_dict(sd.get(key)):
                sd = sd[key]
                break
    if not is_state_dict(sd):
        keys = list(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(
            f"found no state dict (a mapping of names to tensors) in the file; it holds {keys}. "
            f"Expected a state dict, or one under one of the keys {list(_WRAPPER_KEYS)}."
        )
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """``hf`` for transformers names, ``timm`` for a deep (ResNet-D) stem, else ``torchvision``."""
    if any(k.startswith(("resnet.embedder.", "embedder.embedder.", "resnet.encoder.")) for k in sd):
        return "hf"
    if "conv1.0.weight" in sd:
        return "timm"
    return "torchvision"


def convert_timm_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ResNet / ResNet-D state dict under reslab names.

    timm's ResNets already use torchvision's names (and reslab's ResNet-D uses timm's),
    so this only checks that no layer of a timm-only variant would be silently dropped.

    Raises:
        WeightsError: for squeeze-excitation, attention or anti-aliasing layers.
    """
    for marker, what in _TIMM_ONLY.items():
        found = [k for k in sd if marker in "." + k]
        if found:
            raise WeightsError(
                f"these timm weights contain {what} ({_preview(found)}), which reslab's ResNets do "
                "not have; loading them would silently drop those layers. Use a plain timm "
                "ResNet / ResNet-D checkpoint (timm:resnet50.a1_in1k, timm:resnet50d.ra2_in1k...)."
            )
    return dict(sd)


def convert_hf_state_dict(
    sd: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """A transformers ``ResNetForImageClassification`` / ``ResNetModel`` state dict, renamed.

    Args:
        sd: the transformers state dict (with or without the ``resnet.`` prefix).
        config: the model's ``config.json`` as a dict, when available; checked with
            ``check_hf_config`` because stride placement is invisible in the weights.
    Returns:
        The same tensors under torchvision/reslab names.
    Raises:
        WeightsError: for a config reslab cannot represent exactly or an unknown key.
    """
    if config is not None:
        check_hf_config(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        k = key[len("resnet."):] if key.startswith("resnet.") else key
        if m := _HF_STEM.match(k):
            new = f"{'conv1' if m[1] == 'convolution' else 'bn1'}.{m[2]}"
        elif m := _HF_LAYER.match(k):
            kind = "conv" if m[4] == "convolution" else "bn"
            new = f"layer{int(m[1]) + 1}.{m[2]}.{kind}{int(m[3]) + 1}.{m[5]}"
        elif m := _HF_SHORTCUT.match(k):
            idx = 0 if m[3] == "convolution" else 1
            new = f"layer{int(m[1]) + 1}.{m[2]}.downsample.{idx}.{m[4]}"
        elif m := _HF_HEAD.match(k):
            new = f"fc.{m[1]}"
        else:
            unknown.append(key)
            continue
        out[new] = value
    if unknown:
        raise WeightsError(
            f"these Hugging Face keys have no reslab equivalent: {_preview(unknown)}. reslab "
            "converts transformers' ResNetForImageClassification / ResNetModel weights only."
        )
    return out


def check_hf_config(config: Mapping[str, Any]) -> None:
    """Refuses a transformers ``ResNetConfig`` that reslab cannot reproduce exactly.

    The weights alone do not show where a block strides, so the config must say it:
    reslab (like torchvision, "ResNet v1.5") strides the 3x3 conv of a bottleneck and keeps
    the first stage at stride 1 after the max-pool.

    Raises:
        WeightsError: naming the setting, its value and what reslab needs.
    """
    model_type = config.get("model_type", "resnet")
    if model_type != "resnet":
        raise WeightsError(f"config.json says model_type={model_type!r}; reslab converts "
                           "transformers 'resnet' models only.")
    rules = {
        # key: (value reslab needs, transformers' default, why)
        "downsample_in_bottleneck": (False, False, "reslab strides the 3x3 conv of a bottleneck "
                                     "(ResNet v1.5), not the first 1x1 (v1)"),
        "downsample_in_first_stage": (False, False, "reslab's first stage keeps stride 1 after "
                                      "the stem's max-pool"),
        "hidden_act": ("relu", "relu", "reslab's blocks use ReLU"),
        "embedding_size": (64, 64, "reslab's 7x7 stem has 64 channels"),
    }
    bad = [
        f"{k}={config.get(k, default)!r} ({why}; needs {need!r})"
        for k, (need, default, why) in rules.items()
        if config.get(k, default) != need
    ]
    if bad:
        raise WeightsError(
            "this Hugging Face ResNet has a layout reslab cannot represent exactly: "
            + "; ".join(bad) + ". Loading it would give different outputs, so it is refused."
        )


def hf_architecture(config: Mapping[str, Any]) -> str | None:
    """The reslab model name matching a transformers ``ResNetConfig`` (``None`` if none does)."""
    depths = tuple(config.get("depths", (3, 4, 6, 3)))
    block = config.get("layer_type", "bottleneck")
    expansion = 4 if block == "bottleneck" else 1
    hidden = tuple(config.get("hidden_sizes", (256, 512, 1024, 2048)))
    for name in model_names(family="imagenet"):
        arch = get_spec(name).arch
        if (
            arch["block"] == block
            and tuple(arch["layers"]) == depths
            and arch.get("stem", "imagenet") == "imagenet"
            and arch.get("groups", 1) == 1
            and hidden == tuple(w * arch.get("width_per_group", 64) // 64 * expansion
                                for w in arch.get("widths", (64, 128, 256, 512)))
        ):
            return name
    return None


def to_reslab_state_dict(
    sd: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Detects the layout of ``sd`` and converts it to reslab names.

    Returns:
        ``(state_dict, layout)`` with layout ``torchvision``, ``timm`` or ``hf``.
    """
    layout = detect_layout(sd)
    if layout == "hf":
        return convert_hf_state_dict(sd, hf_config), layout
    return convert_timm_state_dict(sd), layout


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Adapts the first conv's weight (O, I, kH, kW) to ``in_chans`` input channels.

    As timm's ``adapt_input_conv``: for grayscale, summing over the colour channels keeps the
    response to a gray image (R = G = B) unchanged; for other counts the RGB filters are
    repeated and scaled by 3 / in_chans so the activation's magnitude stays the same.

    Returns:
        ``(new_weight, description)``.
    Raises:
        WeightsError: when the weights do not have 3 input channels (nothing to adapt from).
    """
    out_c, src_c, kh, kw = weight.shape
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        if src_c > 3:
            if src_c % 3:
                raise WeightsError(f"cannot adapt a first conv with {src_c} input channels to 1.")
            w = w.reshape(out_c, src_c // 3, 3, kh, kw).sum(dim=2)
            how = f"summed each RGB triple of {src_c} input channels -> {src_c // 3}"
        else:
            w = w.sum(dim=1, keepdim=True)
            how = f"summed over {src_c} input channels -> 1 (grayscale)"
    elif src_c == 3:
        repeat = math.ceil(in_chans / 3)
        w = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / float(in_chans))
        how = f"repeated 3 input channels to {in_chans} and scaled by 3/{in_chans}"
    else:
        raise WeightsError(
            f"cannot adapt a first conv with {src_c} input channels to in_chans={in_chans}; "
            "only 3-channel weights can be adapted (to any count), or any multiple of 3 to 1."
        )
    return w.to(dtype), how


def _preview(keys: list[str], n: int = 12) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" ... and {len(keys) - n} more" if len(keys) > n else "")
