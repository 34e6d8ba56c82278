"""Random-number-generator state as tensors and plain types, so a checkpoint holding it
still loads with ``torch.load(weights_only=True)`` (which refuses NumPy arrays and
arbitrary tuples of objects).

Exact resume needs every generator the training step draws from: Python's ``random``,
NumPy's global generator, torch's CPU generator (dropout, stochastic depth) and each CUDA
device's generator. The data loaders draw from generators seeded by (seed, epoch, batch)
and need no saved state.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Returns the state of every global generator as tensors and plain values."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),  # 625 ints < 2**32
            "gauss": gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores the generators saved by ``capture_rng_state``.

    Args:
        state: the dict from ``capture_rng_state`` (as loaded from a checkpoint).
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["name"], keys, npst["pos"], npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda[:n]])


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (CPU and every CUDA device) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
