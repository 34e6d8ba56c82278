"""Shared helpers for the evaluate / predict / report tests (no tests of its own).

``digits_run`` trains a small CIFAR-style ResNet on scikit-learn's digits for a few
seconds with ``reslab.engine.fit``, which writes a real run folder (config.yaml,
classes.json, metrics.jsonl, summary.json, checkpoints/best.pt). It is trained once per
test session and shared through ``functools.lru_cache``.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

import reslab

EPOCHS = 4
ARCH = dict(widths=(8, 16, 32), layers=(1, 1, 1))  # a 8-layer resnet20 variant: trains in seconds


@contextlib.contextmanager
def torch_threads(n: int):
    """Runs the block with ``n`` intra-op threads (tiny models gain nothing from more, and
    on a shared 2-core machine extra threads only spin), restoring the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _train_digits(run_dir: Path) -> Path:
    """A real run of ``reslab.engine.fit``: 4 epochs of a small resnet20 variant on digits."""
    from reslab.config import load_config
    from reslab.engine import fit

    cfg = load_config(None, overrides={
        "data": {"source": "digits", "batch_size": 64, "augment": "none"},
        "model": {"name": "resnet20"},
        "optim": {"name": "adamw", "lr": 5e-3, "weight_decay": 1e-4},
        "schedule": {"name": "constant"},
        "epochs": EPOCHS, "seed": 0, "threads": 1, "precision": "fp32", "out": str(run_dir),
    })  # fmt: skip
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1, **ARCH)
    fit(cfg, model=model)
    return run_dir


@functools.lru_cache(maxsize=None)
def _cached_run(base: str) -> Path:
    with torch_threads(1):
        return _train_digits(Path(base) / "digits-run")


def digits_run(tmp_path_factory) -> Path:
    """The shared trained run folder (read-only by convention: copy it before writing)."""
    return _cached_run(str(tmp_path_factory.getbasetemp()))


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder that a test may write into."""
    import shutil

    shutil.copytree(src, dst)
    return dst
