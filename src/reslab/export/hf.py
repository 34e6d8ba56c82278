"""``--format hf``: a folder that Hugging Face transformers loads as its own ResNet.

    from transformers import AutoImageProcessor, AutoModelForImageClassification
    model = AutoModelForImageClassification.from_pretrained("export/hf")   # ResNetForImageClassification
    processor = AutoImageProcessor.from_pretrained("export/hf")            # resize, crop, mean/std

The weights are reslab's, renamed by the inverse of ``reslab.models.convert``'s table
(torchvision names -> transformers names), in ``model.safetensors``; ``config.json``
carries the architecture and the labels, ``preprocessor_config.json`` the preprocessing.
transformers' ResNet expresses the torchvision-style ImageNet ResNets (basic or bottleneck
blocks, 7x7 stem, projection shortcuts, ResNet v1.5 strides) at any depth, width and input
channel count; ResNet-D, ResNeXt, Wide ResNets, pre-activation and CIFAR-stem models are
refused with the reason, before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigError, ReslabError
from ..files import write_json
from .artifact import ParityError, _preprocess_of

_STEM = re.compile(r"^(conv1|bn1)\.(.+)$")
_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(conv|bn)(\d+)\.(.+)$")
_SHORTCUT = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.([01])\.(.+)$")
_HEAD = re.compile(r"^fc\.(.+)$")
_KIND = {"conv": "convolution", "bn": "normalization"}
# Settings that change only training, not what the eval-mode network computes.
_NEUTRAL = {"zero_init_residual", "drop_rate", "drop_path_rate", "block_drop_rate",
            "grad_checkpointing", "stem_width"}


def load_for_export(checkpoint) -> tuple[nn.Module, list[str], dict, dict]:
    """``(model, classes, preprocess, checkpoint)`` from a checkpoint, run folder or dict."""
    from ..models.checkpoint import model_from_checkpoint, read_checkpoint

    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint(checkpoint)
    model = model_from_checkpoint(checkpoint).eval()
    classes = list(checkpoint.get("classes") or [str(i) for i in range(model.num_classes)])
    return model, classes, _preprocess_of(model, checkpoint), checkpoint


def architecture_of(model: nn.Module) -> dict:
    """The full ``ResNet`` arguments of a registered model: its table row plus overrides."""
    from ..models.registry import get_spec

    args = dict(model.model_args)
    name = args.pop("name")
    args.pop("num_classes", None)
    args.pop("in_chans", None)
    return {"name": name, **get_spec(name).arch, **args}


def hf_config(model: nn.Module, classes: list[str]) -> dict:
    """transformers' ``ResNetConfig`` (as a dict) for ``model``.

    Raises:
        ConfigError: naming each setting transformers' ResNet cannot express.
    """
    arch = architecture_of(model)
    block = arch["block"]
    need = {"block": (block in ("basic", "bottleneck"), "basic or bottleneck (no pre-activation)"),
            "stem": (arch.get("stem", "imagenet") == "imagenet", "imagenet (7x7 conv + max-pool)"),
            "stem_out": (arch.get("stem_out") in (None, 64), "64 channels"),
            "shortcut": (arch.get("shortcut", "B") == "B", "B (1x1 projection)"),
            "residual": (arch.get("residual", True) is True, "True"),
            "groups": (arch.get("groups", 1) * arch.get("width_per_group", 64) == 64,
                       "groups x width_per_group = 64 (no ResNeXt / Wide ResNet)"),
            "norm_layer": (arch.get("norm_layer", "batchnorm") in ("batchnorm", "frozen_batchnorm"),
                           "batchnorm")}
    bad = [f"{k}={arch.get(k)!r} (needs {want})" for k, (ok, want) in need.items() if not ok]
    if bad:
        raise ConfigError(
            f"{arch['name']} cannot be written as a Hugging Face ResNet: " + "; ".join(bad)
            + ". transformers' ResNetForImageClassification holds torchvision-style ResNets "
            "(resnet18/34/50/101/152 and their depth or width variants); export this model "
            "with --format onnx instead (or --format timm for ResNet-D, ResNeXt and Wide ResNets)."
        )
    expansion = 4 if block == "bottleneck" else 1
    widths = arch.get("widths", (64, 128, 256, 512))
    return {
        "architectures": ["ResNetForImageClassification"],
        "model_type": "resnet",
        "num_channels": int(model.in_chans),
        "embedding_size": 64,
        "hidden_sizes": [int(w) * expansion for w in widths],
        "depths": [int(n) for n in arch["layers"]],
        "layer_type": block,
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False,
        "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: i for i, c in enumerate(classes)},
        "torch_dtype": "float32",
    }


def to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """reslab (torchvision) names -> transformers ``ResNetForImageClassification`` names;
    the inverse of ``reslab.models.convert.convert_hf_state_dict``."""
    out = {}
    for key, value in sd.items():
        if m := _STEM.match(key):
            new = f"resnet.embedder.embedder.{'convolution' if m[1] == 'conv1' else 'normalization'}.{m[2]}"
        elif m := _LAYER.match(key):
            new = (f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[4]) - 1}."
                   f"{_KIND[m[3]]}.{m[5]}")
        elif m := _SHORTCUT.match(key):
            part = "convolution" if m[3] == "0" else "normalization"
            new = f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.{part}.{m[4]}"
        elif m := _HEAD.match(key):
            new = f"classifier.1.{m[1]}"
        else:
            raise ConfigError(f"parameter {key!r} has no place in a Hugging Face ResNet.")
        out[new] = value.detach().float().contiguous()
    return out


def hf_preprocessor(preprocess: dict) -> dict:
    """``preprocessor_config.json``: ConvNeXt's processor does reslab's resize-then-centre-crop
    (shorter side to ``crop / crop_pct``, then ``crop`` x ``crop``), as microsoft/resnet-50's does."""
    crop, resize = int(preprocess["crop"]), int(preprocess["resize"])
    return {
        "image_processor_type": "ConvNextImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": crop},
        # transformers truncates shortest_edge / crop_pct with int(); the half pixel makes
        # that land on ``resize`` exactly instead of one below it through rounding error.
        "crop_pct": crop / (resize + 0.5),
        "resample": 2,  # PIL bilinear, as reslab's eval transform
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocess["mean"]),
        "image_std": list(preprocess["std"]),
    }


def _readme(name: str, classes: list[str], preprocess: dict, metrics: dict) -> str:
    acc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items()
                    if k in ("val_acc", "test_acc") and isinstance(v, (int, float))) or "not recorded"
    return (f"---\nlibrary_name: transformers\npipeline_tag: image-classification\ntags:\n"
            f"- reslab\n- resnet\n---\n\n# {name} (trained with reslab)\n\n"
            f"- classes ({len(classes)}): {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}\n"
            f"- input: {'x'.join(map(str, preprocess['input_size']))}, mean {preprocess['mean']}, "
            f"std {preprocess['std']}\n- accuracy: {acc}\n\n```python\n"
            "from transformers import AutoImageProcessor, AutoModelForImageClassification\n"
            "model = AutoModelForImageClassification.from_pretrained(\"<this folder or repo>\")\n"
            "processor = AutoImageProcessor.from_pretrained(\"<this folder or repo>\")\n```\n")


def export_hf(checkpoint: str | os.PathLike | dict, out: str | os.PathLike,
              log: Callable[[str], None] | None = print) -> Path:
    """Writes a transformers-loadable folder and checks its logits against reslab's.

    Args:
        checkpoint: a checkpoint file, a run folder or a loaded checkpoint dict.
        out: the folder to write.
        log: where progress goes.
    Returns:
        The folder.
    Raises:
        ConfigError: for an architecture transformers cannot express (before writing).
        ParityError: when transformers' logits differ from reslab's by more than 1e-4.
    """
    say = log or (lambda _m: None)
    model, classes, preprocess, ckpt = load_for_export(checkpoint)
    config = hf_config(model, classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state_dict(model.state_dict()), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    write_json(out / "config.json", config)
    write_json(out / "preprocessor_config.json", hf_preprocessor(preprocess))
    (out / "README.md").write_text(_readme(config_name(model), classes, preprocess,
                                           dict(ckpt.get("metrics") or {})))
    diff = check_hf(model, out, preprocess)
    say(f"wrote {out}/ (transformers ResNetForImageClassification); "
        + (f"max |logit diff| vs reslab {diff:.2e}" if diff is not None else
           "transformers is not installed here, logits not checked"))
    return out


def config_name(model: nn.Module) -> str:
    return str(model.model_args.get("name", "resnet"))


def check_hf(model: nn.Module, folder: Path, preprocess: dict, atol: float = 1e-4) -> float | None:
    """Loads ``folder`` with transformers and compares logits with ``model`` (fp32, eval).

    Returns:
        The largest absolute logit difference, or None when transformers is absent.
    """
    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        return None
    theirs = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    return logit_gap(lambda x: theirs(pixel_values=x).logits, model, preprocess, atol,
                     "transformers", folder)


def logit_gap(theirs: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, preprocess: dict,
              atol: float, library: str, where: Path) -> float:
    """Largest |logit difference| between another library's load of an export and ``model``
    on two seeded random inputs (fp32, eval).

    Raises:
        ParityError: above ``atol``; the export is left at ``where`` for inspection.
    """
    x = torch.randn(2, *preprocess["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (theirs(x) - model.eval()(x)).abs().max().item()
    if diff > atol:
        raise ParityError(f"{library}'s logits differ from reslab's by {diff:.2e} (> {atol}); "
                          f"{where} is left for inspection, do not publish it.")
    return diff


# ---- pushing a folder to the Hugging Face Hub -------------------------------------------
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_MODEL_FILES = ("model.safetensors", "model.onnx", "model.pt", "model.pt2")
_SKIP = ("__pycache__", ".git", ".cache")


class PushError(ReslabError):
    """The Hub could not be reached or refused the upload."""


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """The files ``push_folder`` uploads: every file of an export folder except hidden ones
    and caches, relative to the folder, sorted.

    Raises:
        ConfigError: when the folder is missing or holds no model file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; push a folder written by `reslab export`.")
    if not any((root / f).exists() for f in _MODEL_FILES):
        raise ConfigError(f"{root} holds none of {', '.join(_MODEL_FILES)}; write it with "
                          "`reslab export --format hf` (or timm, onnx) first.")
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") or part in _SKIP for part in rel.parts):
            files.append(rel.as_posix())
    return files


def push_folder(folder: str | os.PathLike, repo: str, *, token: str | None = None,
                private: bool = False, message: str | None = None,
                endpoint: str | None = None) -> str:
    """Uploads an export folder to a Hugging Face Hub model repository (created if needed).

    Args:
        folder: a folder from ``reslab export`` (hf, timm or onnx).
        repo: ``user/name`` or ``org/name``.
        token: a Hub token; default: ``HF_TOKEN`` or the one saved by ``hf auth login``.
        private: create the repository private.
        message: the commit message.
        endpoint: the Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
    Returns:
        The URL of the uploaded commit.
    Raises:
        ConfigError: bad folder or repo id (before any network call).
        PushError: the Hub is unreachable or refused (says what to do next).
    """
    files = files_to_upload(folder)
    if not _REPO_ID.match(repo):
        raise ConfigError(f"--repo {repo!r} is not a Hub repository id; expected user/name, "
                          "e.g. --repo alice/resnet18-flowers.")
    from huggingface_hub import HfApi

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                 allow_patterns=files,
                                 commit_message=message or f"Upload {len(files)} files from reslab")
    except Exception as e:  # the hub client raises many types; say which kind of failure
        raise PushError(_push_failure(e, endpoint, repo)) from e
    return str(getattr(info, "commit_url", info))


def _push_failure(error: Exception, endpoint: str, repo: str) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    what = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if status in (401, 403):
        return (f"the Hub at {endpoint} refused the upload to {repo} ({what}). Log in with "
                "`hf auth login`, or set HF_TOKEN / pass --token with a token that can write "
                "to this repository.")
    if status is not None:
        return f"the Hub at {endpoint} answered HTTP {status} for {repo} ({what}). Nothing was uploaded."
    return (f"could not reach the Hugging Face Hub at {endpoint} ({what}). Nothing was uploaded; "
            "check the network connection (or HF_ENDPOINT / HF_HUB_OFFLINE), then rerun.")
