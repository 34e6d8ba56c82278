"""How close two models' logits are: the check run after every export and optimisation.

Two numbers say it: the largest absolute difference of any logit (scaled by the largest
reference logit, so a tolerance means the same for small and large logits) and the
fraction of images whose top-1 class agrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from ..engine.progress import track

# Tolerances per number format: (max |diff| / max(1, max |reference logit|), min top-1 agreement).
# bf16 keeps 8 bits of mantissa (relative error ~4e-3 per op, growing through ~50 layers);
# int8 adds quantisation noise of about 1/255 of each activation range per layer.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 0.99),
    "fp16": (5e-2, 0.95),
    "bf16": (1e-1, 0.95),
    "int8": (3e-1, 0.90),
}


@dataclass(frozen=True)
class ParityReport:
    """Agreement of a candidate's logits with a reference's on the same images.

    Attributes:
        max_abs_diff: largest |candidate - reference| over every logit.
        rel_diff: ``max_abs_diff / max(1, max |reference|)``.
        top1_agreement: fraction of images with the same top-1 class (0..1).
        n: number of images compared.
        precision: the number format judged (picks the tolerance).
        tolerance: the allowed ``rel_diff`` and minimum ``top1_agreement``.
        source: where the images came from (e.g. ``fashion-mnist val`` or ``generated``).
    """

    max_abs_diff: float
    rel_diff: float
    top1_agreement: float
    n: int
    precision: str
    tolerance: tuple[float, float]
    source: str = ""

    @property
    def passed(self) -> bool:
        max_rel, min_agree = self.tolerance
        return self.rel_diff <= max_rel and self.top1_agreement >= min_agree

    def describe(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        max_rel, min_agree = self.tolerance
        src = f" on {self.n} {self.source} images" if self.source else f" on {self.n} images"
        return (
            f"parity {verdict}{src}: max |logit diff| {self.max_abs_diff:.3g} "
            f"(relative {self.rel_diff:.3g}, allowed {max_rel:g}), top-1 agreement "
            f"{100 * self.top1_agreement:.2f}% (required {100 * min_agree:g}%) [{self.precision}]"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def compare_logits(
    reference: torch.Tensor, candidate: torch.Tensor, precision: str = "fp32", source: str = ""
) -> ParityReport:
    """Compares two (N, num_classes) logit tensors.

    Args:
        reference: logits of the trusted model (PyTorch eager fp32).
        candidate: logits of the exported or optimised model on the same images.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``; selects the tolerance.
        source: a few words naming the images, for the printed line.
    Returns:
        A ``ParityReport``; ``.passed`` applies the tolerance of ``precision``.
    """
    if reference.shape != candidate.shape:
        raise ValueError(
            f"logit shapes differ: reference {tuple(reference.shape)}, "
            f"candidate {tuple(candidate.shape)}; the artifact does not compute the same head."
        )
    ref = reference.detach().float().cpu()
    cand = candidate.detach().float().cpu()
    if not torch.isfinite(cand).all():
        diff = float("inf")
    else:
        diff = (ref - cand).abs().max().item() if ref.numel() else 0.0
    scale = max(1.0, ref.abs().max().item() if ref.numel() else 1.0)
    agree = (ref.argmax(1) == cand.argmax(1)).float().mean().item() if len(ref) else 1.0
    return ParityReport(
        max_abs_diff=diff,
        rel_diff=diff / scale,
        top1_agreement=agree,
        n=len(ref),
        precision=precision,
        tolerance=TOLERANCES[precision],
        source=source,
    )


@torch.no_grad()
def run_batches(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 64,
    label: str = "parity",
) -> torch.Tensor:
    """Applies ``fn`` to ``images`` (N, C, H, W) in batches; returns (N, K) fp32 logits on CPU.
    A progress bar named ``label`` shows on a terminal."""
    starts = range(0, len(images), batch_size)
    outs = [torch.as_tensor(fn(images[i : i + batch_size])).float().cpu()
            for i in track(starts, label)]  # fmt: skip
    return torch.cat(outs) if outs else torch.empty(0)


def batches_of(
    data, limit: int | None = None
) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalises the ways images are passed around here into ``(x, y_or_None)`` batches.

    Accepts a tensor (N, C, H, W), a tuple ``(images, labels)`` of tensors, or an iterable
    (e.g. a reslab loader) yielding tensors or ``(x, y)`` pairs. Stops after ``limit`` images.
    """
    if isinstance(data, torch.Tensor):
        data = [(data, None)]
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = [data]
    seen = 0
    for item in data:
        x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        if limit is not None:
            x = x[: max(0, limit - seen)]
            y = y[: len(x)] if y is not None else None
        if len(x) == 0:
            break
        seen += len(x)
        yield x, y
        if limit is not None and seen >= limit:
            break
