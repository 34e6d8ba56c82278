"""Running a trained model over many images, as fast as the machine allows.

``fast_model`` is the one seam between evaluate / predict and the export module's
``optimize_for_inference`` (BatchNorm folded into the convolutions, channels_last, bf16
where the CPU has native bf16). Where that path is unavailable or fails, it falls back
to eager PyTorch in the precision ``reslab.device`` picks, and says why.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn

from ..device import resolve_precision
from ..engine.progress import track

Logits = Callable[[torch.Tensor], torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _eager(model: nn.Module, precision: str) -> tuple[Logits, str]:
    prec = resolve_precision(model_device(model), precision)
    if prec.channels_last:
        # A copy: the caller's model keeps its layout (Grad-CAM and training use it as is).
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()  # BatchNorm running statistics, no dropout; the mode is restored after
        try:
            if prec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with prec.autocast():
                return model(x).float()
        finally:
            model.train(was_training)

    return run, f"eager {prec.describe()}"


# torch.compile spends tens of seconds building kernels (40-60 s even for a small resnet20
# on this project's 2-core CPU); it pays back only on long jobs. Below this much work
# (images x multiply-accumulates per image; 20 T is ~5,000 images of resnet50 at 224 px)
# the eager optimised path (BatchNorm folded, bf16 weights, channels_last) is used.
COMPILE_MIN_MACS = 2e13


def _worth_compiling(model: nn.Module, example: torch.Tensor, num_images: int | None) -> bool:
    if not num_images:
        return False
    from ..models import count_macs

    try:
        macs = count_macs(model, tuple(example.shape[1:]))
    except Exception:  # not a model we can profile: be conservative
        return False
    return num_images * macs >= COMPILE_MIN_MACS


def fast_model(
    model: nn.Module,
    example_input: torch.Tensor,
    precision: str = "auto",
    log=None,
    num_images: int | None = None,
) -> tuple[Logits, str]:
    """Returns ``(fn, description)`` where ``fn(x) -> float32 logits`` runs ``model`` for inference.

    Args:
        model: a trained model (left unchanged).
        example_input: one real batch (B, C, H, W), used to prepare and check the fast path.
        precision: ``auto``, ``fp32`` or ``bf16``; ``fp32`` always runs the eager fp32 model,
            the exact reference.
        log: optional ``print``-like callable for what was chosen and any fallback.
        num_images: how many images will run; graph compilation is used only for long jobs.
    Returns:
        The callable and a one-line description of the path taken.
    """
    if precision == "fp32":
        return _eager(model, precision)
    try:
        from ..export.optimize import optimize_for_inference
    except ImportError:  # an install without the export module: eager autocast
        return _eager(model, precision)
    backend = "auto" if _worth_compiling(model, example_input, num_images) else "eager"
    try:
        fast = optimize_for_inference(model, example_input, precision=precision, backend=backend,
                                      log=log or (lambda _msg: None))
    except Exception as e:  # any unsupported path: stay correct, say why, use eager
        if log:
            log(f"note: fast inference path unavailable ({type(e).__name__}: {e}); "
                "using eager PyTorch")
        return _eager(model, precision)

    def run(x: torch.Tensor) -> torch.Tensor:
        return fast(x).float()

    info = getattr(fast, "info", None)
    return run, f"optimize_for_inference: {info.describe() if info is not None else precision}"


def inference_fn(
    model: nn.Module,
    example_input: torch.Tensor,
    precision: str = "auto",
    *,
    eager: bool = False,
    log=None,
    num_images: int | None = None,
) -> tuple[Logits, str]:
    """``fast_model``, or with ``eager=True`` the path training evaluates with: the eager
    model under ``precision``'s autocast, so the numbers equal the training log's."""
    if eager:
        fn, how = _eager(model, precision)
        return fn, f"{how}, as in training"
    return fast_model(model, example_input, precision, log=log, num_images=num_images)


def collect_logits(
    fn: Logits, batches: Iterable, tta: bool = False, label_map: torch.Tensor | None = None,
    total: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``fn`` over ``(x, y)`` batches and gathers the logits and labels on the CPU.

    Args:
        fn: ``x -> logits``.
        batches: an iterable of ``(x (B, C, H, W), y (B,))``.
        tta: average the logits of each image and its horizontal mirror (test-time
            augmentation; the flip is the augmentation every ResNet recipe trains with).
        label_map: optional (num_data_classes,) tensor mapping data labels to model classes.
        total: batches expected, for the progress bar shown on a terminal.
    Returns:
        ``logits`` (N, num_classes) float32 and ``labels`` (N,) int64, both on the CPU.
    """
    all_logits, all_labels = [], []
    for x, y in track(batches, "evaluate", total):
        out = fn(x)
        if tta:
            out = 0.5 * (out + fn(torch.flip(x, dims=[3])))
        all_logits.append(out.float().cpu())
        y = y.cpu().long()
        all_labels.append(label_map[y] if label_map is not None else y)
    if not all_logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)
