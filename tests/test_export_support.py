"""Shared, cached helpers for the export / optimize / bench tests (this module holds no tests).

The model is a real one: resnet20 trained for a few seconds on scikit-learn's digits
(8x8 grey, through reslab's own data pipeline), so logits have the margins and ranges of
a trained network rather than of random weights.
"""

from __future__ import annotations

import contextlib
import functools

import torch

import reslab
from reslab.data import load_dataset, make_loader


@contextlib.contextmanager
def one_thread():
    """Runs the block on one CPU thread, then restores the setting.

    These tests push 8x8 images through small networks: every op is tiny, and a second
    OpenMP thread only adds synchronisation (10x slower per step on a busy 2-core machine).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def digits_bundle():
    return load_dataset("digits", log=None)


def split_tensors(
    split_name: str = "val", n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first n) preprocessed images and labels of a digits split."""
    bundle = digits_bundle()
    split = getattr(bundle, split_name)
    loader = make_loader(split, batch_size=256, train=False, preprocess=bundle.preprocess)
    xs, ys = zip(*[(x, y) for x, y in loader])
    x, y = torch.cat(xs), torch.cat(ys)
    return (x, y) if n is None else (x[:n], y[:n])


@functools.lru_cache(maxsize=None)
def _trained_state() -> dict:
    bundle = digits_bundle()
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loader = make_loader(
        bundle.train,
        batch_size=64,
        train=True,
        preprocess=bundle.preprocess,
        augment="none",
        seed=0,
    )
    model.train()
    for epoch in range(6):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_digits_model() -> torch.nn.Module:
    """A fresh copy of the trained resnet20 (eval mode), with classes and preprocess attached."""
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    model.load_state_dict(_trained_state())
    model.classes = digits_bundle().classes
    model.preprocess = digits_bundle().preprocess
    return model.eval()


def digits_checkpoint(path, model: torch.nn.Module | None = None, source: str = "digits") -> str:
    """Writes a reslab checkpoint of ``model`` (default: the trained digits model) naming ``source``."""
    from reslab.files import save_checkpoint

    model = model or trained_digits_model()
    bundle = digits_bundle()
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_args": model.model_args,
            "classes": list(bundle.classes),
            "preprocess": dict(bundle.preprocess),
            "config": {"data": {"source": source}},
            "metrics": {"val_acc": 0.9},
        },
        path,
    )
    return str(path)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()
