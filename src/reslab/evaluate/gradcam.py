"""Grad-CAM (Selvaraju et al. 2017): which part of the image made the model say "cat"?

The gradient of the class score with respect to a convolutional layer's output says how
much each channel matters for that class; averaging it over space gives one weight per
channel, and the ReLU of the weighted sum of channels is a coarse heat map of the
evidence for the class, upsampled to the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """``(name, module)`` of the layer to explain; default the last stage.

    Args:
        model: a reslab ResNet (or any model with ``stage_names``).
        layer: a module name such as ``"layer3"`` or ``"layer4.1"`` (a block of a stage).
    """
    stages = list(getattr(model, "stage_names", []))
    if layer is None:
        if not stages:
            raise ConfigError("the model has no 'stage_names'; pass layer=<module name>.")
        layer = stages[-1]
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        last_block = f"{stages[-1]}.{len(getattr(model, stages[-1])) - 1}" if stages else None
        examples = stages + [last_block] if stages else []
        raise ConfigError(
            f"layer={layer!r} is not a module of this model; use a stage name "
            f"({', '.join(examples) or 'see model.named_modules()'}), or a block such as "
            f"'{stages[-1] if stages else 'layer4'}.0'."
        ) from None


def grad_cam_with_logits(
    model: nn.Module, x: torch.Tensor, target_class=None, layer: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM heat maps plus the logits and the classes they explain.

    Args:
        model: the classifier (its mode is restored afterwards; weights get no gradients).
        x: (B, C, H, W) normalised images.
        target_class: None (explain the predicted class), an int, or a (B,) tensor/list.
        layer: the layer to explain (see ``resolve_layer``).
    Returns:
        ``heatmaps`` (B, H, W) in 0..1, ``logits`` (B, num_classes) and ``targets`` (B,).
    """
    name, module = resolve_layer(model, layer)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ConfigError(f"grad_cam expects images (B, C, H, W), received shape {tuple(x.shape)}.")
    captured: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        captured.append(out)

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            # A leaf input that needs a gradient builds the graph even when every weight
            # is frozen (fine-tuned backbones), and torch.autograd.grad below leaves the
            # weights' .grad untouched.
            inp = x.detach().float().requires_grad_(True)
            logits = model(inp)  # (B, num_classes)
            if not captured:
                raise ConfigError(f"layer {name!r} did not run in the forward pass.")
            acts = captured[-1]  # (B, K, h, w)
            if acts.ndim != 4:
                raise ConfigError(
                    f"layer {name!r} outputs shape {tuple(acts.shape)}; Grad-CAM needs a "
                    "convolutional layer with (B, K, h, w) output."
                )
            b = logits.shape[0]
            if target_class is None:
                targets = logits.argmax(dim=1)
            else:
                targets = torch.as_tensor(target_class, device=logits.device).long().reshape(-1)
                targets = targets.expand(b) if targets.numel() == 1 else targets
                if targets.numel() != b or targets.min() < 0 or targets.max() >= logits.shape[1]:
                    raise ConfigError(
                        f"target_class={target_class!r} must be one class index in "
                        f"0..{logits.shape[1] - 1} or one per image ({b})."
                    )
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, acts)  # (B, K, h, w)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): channel importance
    cam = F.relu((weights * acts.detach().float()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).detach(), logits.detach(), targets.detach()


def grad_cam(
    model: nn.Module, x: torch.Tensor, target_class=None, layer: str | None = None
) -> torch.Tensor:
    """Grad-CAM heat maps of ``model`` on images ``x``.

    Args:
        model: a reslab ResNet (any classifier with the named ``layer``).
        x: (B, C, H, W) normalised images (or one image (C, H, W)).
        target_class: class to explain: None (the predicted one), an index, or one per image.
        layer: module name, default the last stage (``model.stage_names[-1]``); e.g.
            ``"layer3"`` for a finer map or ``"layer4.1"`` for one block.
    Returns:
        (B, H, W) heat maps in 0..1 at the input resolution (1 = strongest evidence).
    """
    return grad_cam_with_logits(model, x, target_class, layer)[0]


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undoes the input normalisation: (C, H, W) normalised -> (H, W, 3) uint8 for display."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    img = (x.detach().float().cpu() * s + m).clamp(0, 1)  # (C, H, W) in 0..1
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    elif img.shape[0] != 3:
        img = img[:3] if img.shape[0] > 3 else img.mean(0, keepdim=True).expand(3, -1, -1)
    return (img.permute(1, 2, 0) * 255).round().to(torch.uint8)  # (H, W, 3)


def overlay(
    image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.45, size: int | None = None
):
    """Blends a heat map (jet colour map) over an image.

    Args:
        image: (H, W, 3) uint8.
        heatmap: (H, W) in 0..1.
        alpha: weight of the heat map.
        size: optional display size of the longer side (small images are upscaled).
    Returns:
        A ``PIL.Image`` (RGB).
    """
    from matplotlib import colormaps
    from PIL import Image

    img = image.float() / 255
    hm = heatmap.float()
    if size and max(img.shape[:2]) != size:
        h, w = img.shape[:2]
        scale = size / max(h, w)
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        img = F.interpolate(img.permute(2, 0, 1)[None], size=hw, mode="nearest")[0].permute(1, 2, 0)
        hm = F.interpolate(hm[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
    colour = torch.from_numpy(colormaps["jet"](hm.clamp(0, 1).numpy())[..., :3]).float()
    out = (1 - alpha) * img + alpha * colour
    return Image.fromarray((out.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
