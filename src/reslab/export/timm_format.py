"""``--format timm``: weights that ``timm.create_model`` loads into its own ResNet.

reslab's ImageNet family keeps timm's parameter names (torchvision's, and timm's for
ResNet-D), so the file is the state dict itself. timm needs to be told the class count in
two places: ``num_classes`` builds the head, and ``pretrained_cfg_overlay``'s
``num_classes`` stops timm from discarding a head whose size differs from ImageNet's::

    import timm
    model = timm.create_model("resnet50", pretrained=True, num_classes=10, in_chans=3,
                              pretrained_cfg_overlay=dict(file="export/timm/model.safetensors",
                                                          num_classes=10))

``config.json`` is timm's Hub format (architecture, class names, the ``pretrained_cfg`` with
input size, mean, std and crop), so the folder can also be pushed and loaded as
``timm.create_model("hf-hub:user/name", pretrained=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigError
from ..files import write_json
from .hf import _NEUTRAL, architecture_of, load_for_export, logit_gap

# reslab models that timm has under the same name with the same layers.
TIMM_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet18d",
              "resnet34d", "resnet50d", "resnet101d", "wide_resnet50_2", "wide_resnet101_2",
              "resnext50_32x4d", "resnext101_32x8d")


def timm_name(model: nn.Module) -> str:
    """The timm model name of ``model``; ``ConfigError`` when timm has no identical network."""
    name = model.model_args["name"]
    changed = sorted(k for k in model.model_args if k not in ("name", "num_classes", "in_chans")
                     and k not in _NEUTRAL and k != "norm_layer")
    norm = model.model_args.get("norm_layer", "batchnorm")
    if name not in TIMM_NAMES or changed or norm not in ("batchnorm", "frozen_batchnorm"):
        why = (f"timm has no {name!r} with reslab's layers" if name not in TIMM_NAMES else
               f"its architecture was changed ({', '.join(changed) or f'norm_layer={norm}'})")
        raise ConfigError(
            f"cannot export {name} for timm: {why}. timm holds the ImageNet family unchanged: "
            f"{', '.join(TIMM_NAMES)}. Use --format onnx (any reslab model) instead."
        )
    return name


def timm_config(model: nn.Module, classes: list[str], preprocess: dict) -> dict:
    """timm's Hub ``config.json`` for the exported weights."""
    arch = architecture_of(model)
    return {
        "architecture": timm_name(model),
        "num_classes": len(classes),
        "num_features": int(model.num_features),
        "label_names": list(classes),
        "pretrained_cfg": {
            "tag": "reslab",
            "input_size": list(preprocess["input_size"]),
            "interpolation": "bilinear",
            "crop_pct": int(preprocess["crop"]) / int(preprocess["resize"]),
            "crop_mode": "center",
            "mean": list(preprocess["mean"]),
            "std": list(preprocess["std"]),
            "num_classes": len(classes),
            "first_conv": "conv1.0" if arch.get("stem") == "deep" else "conv1",
            "classifier": "fc",
        },
    }


def export_timm(checkpoint: str | os.PathLike | dict, out: str | os.PathLike,
                log: Callable[[str], None] | None = print) -> Path:
    """Writes ``model.safetensors`` + timm's ``config.json`` and checks timm's logits.

    Args:
        checkpoint: a checkpoint file, a run folder or a loaded checkpoint dict.
        out: the folder to write.
        log: where progress goes.
    Returns:
        The folder.
    Raises:
        ConfigError: for a model timm has no identical network for (before writing).
        ParityError: when timm's logits differ from reslab's by more than 1e-4.
    """
    say = log or (lambda _m: None)
    model, classes, preprocess, _ckpt = load_for_export(checkpoint)
    config = timm_config(model, classes, preprocess)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_json(out / "config.json", config)
    diff = check_timm(model, out / "model.safetensors", config, preprocess)
    say(f"wrote {out}/ for timm.create_model({config['architecture']!r}, pretrained=True, "
        f"num_classes={len(classes)}, pretrained_cfg_overlay=dict(file=..., num_classes="
        f"{len(classes)})); "
        + (f"max |logit diff| vs reslab {diff:.2e}" if diff is not None else "timm absent, not checked"))
    return out


def load_timm(file: str | os.PathLike, config: dict) -> nn.Module:
    """The exported weights in timm's own model (what a timm user runs)."""
    import timm

    k = int(config["num_classes"])
    return timm.create_model(
        config["architecture"], pretrained=True, num_classes=k,
        in_chans=int(config["pretrained_cfg"]["input_size"][0]),
        pretrained_cfg_overlay={"file": str(file), "num_classes": k},
    ).eval()


def check_timm(model: nn.Module, file: Path, config: dict, preprocess: dict,
               atol: float = 1e-4) -> float | None:
    """Largest |logit difference| between timm's load of ``file`` and ``model`` (None: no timm)."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return None
    return logit_gap(load_timm(file, config), model, preprocess, atol, "timm", file)
