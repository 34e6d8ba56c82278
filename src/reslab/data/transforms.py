"""Preprocessing and augmentation presets (torchvision.transforms.v2).

``preprocess`` is the small dict saved in every checkpoint that says how an image becomes
a model input; ``eval_transform(preprocess)`` rebuilds that pipeline anywhere (predict,
export, the eval loader). Training augmentation is described by an ``AugmentSpec`` so the
per-image (streaming) and per-batch (in-memory) loaders do the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torchvision.transforms import v2

from ..errors import ConfigError

SMALL_IMAGE = 64  # px: at or below this, pad-and-crop and no resize margin (CIFAR style)
RESIZE_RATIO = 232 / 224  # torchvision's V2 ImageNet recipes evaluate at resize 232, crop 224


def make_preprocess(
    image_size: int,
    in_chans: int,
    mean: list[float] | tuple[float, ...],
    std: list[float] | tuple[float, ...],
    resize: int | None = None,
) -> dict[str, Any]:
    """The preprocess record saved with every checkpoint.

    Args:
        image_size: the model input side (the crop).
        in_chans: 1 or 3.
        mean, std: per-channel normalisation in 0..1 units (length ``in_chans``).
        resize: shorter side before the centre crop; default: ``image_size`` for small images
            (native resolution), else ``image_size * 232 / 224``.
    Returns:
        ``{"input_size": [C, H, W], "resize", "crop", "mean", "std", "interpolation"}``.
    """
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans={in_chans!r}: use 1 (grey) or 3 (RGB).")
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) == 1 and in_chans == 3:
        mean, std = mean * 3, std * 3
    elif len(mean) == 3 and in_chans == 1:
        # grey = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as Pillow's convert("L"))
        mean = [0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2]]
        std = [0.299 * std[0] + 0.587 * std[1] + 0.114 * std[2]]
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"mean/std have {len(mean)}/{len(std)} values for in_chans={in_chans}.")
    if resize is None:
        resize = image_size if image_size <= SMALL_IMAGE else int(round(image_size * RESIZE_RATIO))
    if resize < image_size:
        raise ConfigError(f"resize={resize} is smaller than the crop {image_size}; use resize >= crop.")
    return {
        "input_size": [int(in_chans), int(image_size), int(image_size)],
        "resize": int(resize),
        "crop": int(image_size),
        "mean": mean,
        "std": std,
        "interpolation": "bilinear",
    }


def adapt_preprocess(preprocess: dict, in_chans: int | None = None, mean=None, std=None) -> dict:
    """A copy of ``preprocess`` for another channel count or normalisation (e.g. pretrained)."""
    c = in_chans or preprocess["input_size"][0]
    return make_preprocess(
        preprocess["crop"], c, mean or preprocess["mean"], std or preprocess["std"], preprocess["resize"]
    )


class _ToChannels(torch.nn.Module):
    """uint8 (C, H, W) -> ``in_chans`` channels (grey <-> RGB, Pillow's weights)."""

    def __init__(self, in_chans: int):
        super().__init__()
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels(x, self.in_chans)


def to_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Converts uint8 or float images (..., C, H, W) between 1 and 3 channels."""
    c = x.shape[-3]
    if c == in_chans:
        return x
    if c == 1 and in_chans == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if c == 3 and in_chans == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=x.device).view(3, 1, 1)
        grey = (x.float() * w).sum(dim=-3, keepdim=True)
        return grey.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else grey
    raise ConfigError(f"cannot convert {c}-channel images to in_chans={in_chans}; use 1 or 3.")


def eval_transform(preprocess: dict) -> Callable:
    """The deterministic eval pipeline: PIL image -> normalised float tensor (C, H, W).

    Resize the shorter side to ``resize``, centre-crop ``crop``, convert channels to
    ``input_size[0]``, scale to 0..1 and normalise with ``mean``/``std``.
    """
    from .images import normalize_mode, pil_to_uint8

    c = preprocess["input_size"][0]
    pipeline = v2.Compose([
        v2.Resize(preprocess["resize"], interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        v2.CenterCrop(preprocess["crop"]),
        _ToChannels(c),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(preprocess["mean"], preprocess["std"]),
    ])  # fmt: skip

    def transform(img) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            img = pil_to_uint8(normalize_mode(img, c))
        return pipeline(img)

    return transform


@dataclass(frozen=True)
class AugmentSpec:
    """What training augmentation does.

    Attributes:
        crop: ``pad`` (pad-and-crop translation, He et al. 2015 for 32 px), ``rrc``
            (RandomResizedCrop, Szegedy et al. 2015) or ``none`` (centre crop).
        pad: pixels of zero padding for ``pad``.
        scale, ratio: RandomResizedCrop's area and aspect ranges.
        flip: random horizontal flip (off where it changes the meaning, e.g. digits).
        policy: None, ``trivial`` (TrivialAugmentWide, Mueller & Hutter 2021) or
            ``randaugment`` (Cubuk et al. 2020), applied per image on uint8.
    """

    crop: str = "pad"
    pad: int = 4
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    policy: str | None = None


AUGMENT_NAMES = ("default", "none", "flip", "crop", "trivial", "randaugment")


def resolve_augment(augment: Any, preprocess: dict, hflip: bool = True) -> AugmentSpec:
    """Turns ``make_loader``'s ``augment`` argument into an ``AugmentSpec``.

    Args:
        augment: ``default`` (crop suited to the image size + flip where allowed), ``none``,
            ``flip``, ``crop``, ``trivial``, ``randaugment``, a bool, or a dict overriding
            ``AugmentSpec`` fields (e.g. ``{"flip": False, "pad": 2}``).
        preprocess: the preprocess record (its crop size chooses pad vs RandomResizedCrop).
        hflip: whether the dataset allows flips (``Split.hflip``).
    """
    crop = preprocess["crop"]
    small = crop <= SMALL_IMAGE
    base = AugmentSpec(
        crop="pad" if small else "rrc",
        pad=max(1, int(round(crop / 8))),  # 4 px for 32 px images as in He et al. 2015
        scale=(0.35, 1.0) if small else (0.08, 1.0),
        flip=hflip,
    )
    if augment is True or augment is None:
        augment = "default"
    if augment is False:
        augment = "none"
    if isinstance(augment, dict):
        unknown = set(augment) - set(AugmentSpec.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"augment has unknown keys {sorted(unknown)}; use {list(AugmentSpec.__dataclass_fields__)}.")
        fields = {**base.__dict__, **augment}
        fields["scale"], fields["ratio"] = tuple(fields["scale"]), tuple(fields["ratio"])
        spec = AugmentSpec(**fields)
    elif isinstance(augment, str) and augment.lower() in AUGMENT_NAMES:
        name = augment.lower()
        spec = {
            "default": base,
            "none": AugmentSpec(crop="none", flip=False),
            "flip": AugmentSpec(crop="none", flip=True),
            "crop": AugmentSpec(**{**base.__dict__, "flip": False}),
            "trivial": AugmentSpec(**{**base.__dict__, "policy": "trivial"}),
            "randaugment": AugmentSpec(**{**base.__dict__, "policy": "randaugment"}),
        }[name]
    else:
        raise ConfigError(f"augment={augment!r} is not one of {AUGMENT_NAMES} or a dict of AugmentSpec fields.")
    if spec.crop not in ("pad", "rrc", "none"):
        raise ConfigError(f"augment crop={spec.crop!r}: use pad, rrc or none.")
    if spec.policy not in (None, "trivial", "randaugment"):
        raise ConfigError(f"augment policy={spec.policy!r}: use null, trivial or randaugment.")
    return spec


def policy_transform(policy: str | None):
    """The v2 auto-augment policy for ``AugmentSpec.policy`` (None: no policy)."""
    if policy is None:
        return None
    return v2.TrivialAugmentWide() if policy == "trivial" else v2.RandAugment()


def train_transform(preprocess: dict, spec: AugmentSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image training pipeline for the streaming loader: uint8 (C, H, W) -> uint8 (C', crop, crop).

    Normalisation and random erasing happen afterwards on whole batches, on the device.
    """
    crop, c = preprocess["crop"], preprocess["input_size"][0]
    bilinear = v2.InterpolationMode.BILINEAR
    ops: list = []
    if spec.crop == "rrc":
        ops.append(v2.RandomResizedCrop(crop, scale=spec.scale, ratio=spec.ratio, interpolation=bilinear, antialias=True))
    else:
        ops += [v2.Resize(preprocess["resize"], interpolation=bilinear, antialias=True), v2.CenterCrop(crop)]
        if spec.crop == "pad":
            ops.append(v2.RandomCrop(crop, padding=spec.pad))
    if spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    ops.append(_ToChannels(c))
    policy = policy_transform(spec.policy)
    if policy is not None:
        ops.append(policy)
    return v2.Compose(ops)


def eval_tensor_transform(preprocess: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image eval pipeline on uint8 tensors: resize, centre crop, channels (no normalising)."""
    bilinear = v2.InterpolationMode.BILINEAR
    return v2.Compose([
        v2.Resize(preprocess["resize"], interpolation=bilinear, antialias=True),
        v2.CenterCrop(preprocess["crop"]),
        _ToChannels(preprocess["input_size"][0]),
    ])  # fmt: skip


def check_preprocess(preprocess: Any, where: str = "the checkpoint") -> dict:
    """Validates a saved ``preprocess`` record before anything is built from it.

    Args:
        preprocess: the record (``input_size`` [C, H, W]; optional ``resize``, ``crop``,
            ``mean``/``std`` with C or 1 entries).
        where: what holds it, for the message.
    Returns:
        The record, unchanged.
    Raises:
        ConfigError naming the broken field, what it holds and what is expected.
    """

    def broken(field: str, expected: str) -> ConfigError:
        got = preprocess.get(field) if isinstance(preprocess, dict) else preprocess
        return ConfigError(f"{where} holds a broken preprocess record: {field}={got!r}, expected "
                           f"{expected}. Use a checkpoint reslab saved, or repair its "
                           "'preprocess' entry.")  # fmt: skip

    if not isinstance(preprocess, dict):
        raise broken("preprocess", "a mapping with input_size, resize, crop, mean and std")
    size = preprocess.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 3
            and all(isinstance(v, int) and v > 0 for v in size)):  # fmt: skip
        raise broken("input_size", "[C, H, W], three positive integers")
    for key in ("resize", "crop"):
        value = preprocess.get(key)
        if value is not None and not (isinstance(value, int) and value > 0):
            raise broken(key, "a positive integer (pixels)")
    for key in ("mean", "std"):
        value = preprocess.get(key)
        if value is None:
            continue
        ok = isinstance(value, (list, tuple)) and len(value) in (1, size[0])
        ok = ok and all(isinstance(v, (int, float)) and (key == "mean" or v > 0) for v in value)
        if not ok:
            raise broken(key, f"a list of {size[0]} number(s){', all > 0' if key == 'std' else ''}")
    return preprocess
