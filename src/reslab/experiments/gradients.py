"""Per-layer gradient norms: what the shortcut does to the backward pass.

For every convolution on the main path (stem, then each block's convs, input to output)
we measure ||dL/dW|| on one real batch, with BatchNorm in training mode as the optimizer
sees it. Two numbers per layer:

- ``grad_norm``: the Frobenius norm of dL/dW;
- ``relative``: ||dL/dW|| / ||W||, the size of an SGD step relative to the weight. A conv
  followed by BatchNorm is scale-invariant, so this ratio (not the raw norm) is what
  decides how fast a layer learns (van Laarhoven 2017, "L2 Regularization versus Batch
  and Weight Normalization").

What to expect, and why: He et al. 2015 (section 4.1) note that their BatchNorm plain
nets do *not* suffer from vanishing gradients. With BatchNorm, a deep plain net's gradient
instead *explodes* towards the input at initialisation (Yang et al. 2019, "A Mean Field
Theory of Batch Normalization"), and becomes noise-like ("shattered", Balduzzi et al.
2017). In a residual net y = x + F(x), so dy/dx = I + dF/dx: the identity term keeps the
gradient's scale nearly the same at every depth. The measured profile shows exactly this.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class LayerGradNorm:
    """Gradient statistics of one convolution.

    Attributes:
        name: parameter path, e.g. ``layer2.0.conv1``.
        depth: 1-based position among main-path convs, input to output.
        grad_norm: ||dL/dW|| (Frobenius).
        weight_norm: ||W||.
        relative: grad_norm / weight_norm.
    """

    name: str
    depth: int
    grad_norm: float
    weight_norm: float
    relative: float

    def to_dict(self) -> dict:
        return asdict(self)


def main_path_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The convolutions a plain net also has, in forward order (shortcut projections excluded).

    Leaving out ``downsample`` convs lets a residual net and its plain twin be compared
    layer for layer: both lists have the same length and shapes.
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and "downsample" not in name.split(".")
    ]


def conv_grad_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    train_mode: bool = True,
) -> list[LayerGradNorm]:
    """Per-layer gradient norms of the cross-entropy loss on one batch.

    Args:
        model: a reslab ``ResNet`` (any model with Conv2d layers works).
        x: normalised images (B, C, H, W) on the model's device.
        y: labels (B,) int64.
        train_mode: run BatchNorm with batch statistics, as during training (the default);
            the model's previous mode is restored afterwards.
    Returns:
        One ``LayerGradNorm`` per main-path conv, input to output.
    """
    convs = main_path_convs(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layers to measure.")
    was_training = model.training
    model.train(train_mode)
    saved = {id(p): p.grad for p in model.parameters()}
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, [m.weight for _, m in convs])
    finally:
        model.train(was_training)
        for p in model.parameters():
            p.grad = saved[id(p)]
    out = []
    for i, ((name, m), g) in enumerate(zip(convs, grads), start=1):
        gn = float(g.float().norm())
        wn = float(m.weight.detach().float().norm())
        out.append(LayerGradNorm(name, i, gn, wn, gn / wn if wn > 0 else math.inf))
    return out


def gradient_profile(
    model_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """Gradient norms at initialisation, averaged over several random initialisations.

    Args:
        model_fn: ``model_fn()`` builds a fresh model (called once per seed, after
            ``torch.manual_seed(seed)``), e.g. ``lambda: create_model("plain56", ...)``.
        x, y: one real batch, see ``conv_grad_norms``.
        seeds: initialisation seeds; the profile is the geometric mean over them (norms
            spread over orders of magnitude, so an arithmetic mean would be one seed's).
    Returns:
        ``{"names": [...], "grad_norm": [...], "relative": [...], "per_seed": [[...], ...]}``.
    """
    per_seed = []
    for s in seeds:
        torch.manual_seed(s)
        model = model_fn().to(x.device)
        per_seed.append(conv_grad_norms(model, x, y))
    names = [r.name for r in per_seed[0]]

    def gmean(key):
        return [
            math.exp(sum(math.log(max(getattr(run[i], key), 1e-30)) for run in per_seed) / len(per_seed))
            for i in range(len(names))
        ]

    return {
        "names": names,
        "grad_norm": gmean("grad_norm"),
        "relative": gmean("relative"),
        "per_seed": [[r.grad_norm for r in run] for run in per_seed],
    }


def spread(norms: list[float]) -> float:
    """max / min of a gradient-norm profile: 1 is perfectly even, large is exploding/vanishing."""
    return max(norms) / min(norms)


def early_late_ratio(norms: list[float], fraction: float = 0.25) -> float:
    """Mean norm of the first ``fraction`` of layers over that of the last ``fraction``.

    Above 1: gradients grow towards the input (explode); below 1: they shrink (vanish).
    """
    k = max(1, int(len(norms) * fraction))
    return (sum(norms[:k]) / k) / (sum(norms[-k:]) / k)


def real_batch(dataset: str, n: int, seed: int = 1, device: str = "cpu"):
    """A fixed, class-balanced batch of ``n`` normalised training images from ``dataset``.

    Returns:
        ``(x (n, C, H, W) float, y (n,) int64, bundle)``.
    """
    from ..data import load_dataset, make_loader
    from ..data.splits import stratified_subset

    # no health check: one batch is read, and a measurement should not refuse a dataset
    bundle = load_dataset(dataset, seed=0, check=False, log=None)
    idx = stratified_subset(bundle.train.labels, n, seed)
    loader = make_loader(
        bundle.train.subset(idx), batch_size=n, train=False, preprocess=bundle.preprocess, device=device
    )
    x, y = next(iter(loader))
    return x, y, bundle


def run_gradient_study(
    dataset: str = "fashion-mnist",
    *,
    models=("plain20", "plain56", "resnet20", "resnet56"),
    batch: int = 256,
    seeds: tuple[int, ...] = (0, 1, 2),
    out=None,
) -> dict:
    """Gradient-norm profiles at initialisation of several models on one real batch.

    Args:
        dataset: a ``load_dataset`` source.
        models: registered model names.
        batch: images in the batch.
        seeds: initialisations averaged (geometric mean).
        out: folder for ``gradients.json`` and ``grad_norms_init.png`` (None: write nothing).
    Returns:
        ``{"profiles": {model: gradient_profile(...)}, "summary": {model: {"early_late",
        "spread"}}, "machine": ...}``.
    """
    from pathlib import Path

    from ..models import create_model
    from . import plots
    from .tables import machine_info, write_json

    x, y, bundle = real_batch(dataset, batch)
    profiles = {}
    for name in models:
        def build(name=name):
            return create_model(name, num_classes=len(bundle.classes), in_chans=bundle.in_chans)

        profiles[name] = gradient_profile(build, x, y, seeds=seeds)
    summary = {
        m: {"early_late": early_late_ratio(p["grad_norm"]), "spread": spread(p["grad_norm"])}
        for m, p in profiles.items()
    }
    res = {"dataset": dataset, "batch": batch, "seeds": list(seeds), "profiles": profiles,
           "summary": summary, "machine": machine_info()}  # fmt: skip
    if out is not None:
        out = Path(out)
        write_json(out / "gradients.json", res)
        plots.plot_grad_norms(
            {m: p["grad_norm"] for m, p in profiles.items()}, out / "grad_norms_init.png",
            f"{dataset}: ||dL/dW|| per conv at initialisation ({len(seeds)} seeds, {batch} images)",
        )  # fmt: skip
        plots.plot_grad_norms(
            {m: p["relative"] for m, p in profiles.items()}, out / "grad_relative_init.png",
            f"{dataset}: ||dL/dW|| / ||W|| at initialisation", ylabel="||dL/dW|| / ||W||",
        )  # fmt: skip
    return res
