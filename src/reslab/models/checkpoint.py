"""From a reslab checkpoint (a file, a run folder or a loaded dict) back to its model."""

from __future__ import annotations

import os

from torch import nn

from ..errors import WeightsError
from ..run_folder import RunFolder
from .registry import create_model
from .weights_file import load_torch_file


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A reslab checkpoint file, or a run folder's best (else last) one, read safely: an empty,
    truncated, HTML or pickle-carrying file is a ``WeightsError`` that says what it is.

    Args:
        path: a ``.pt`` file or a run folder.
        map_location: where tensors land.
    """
    return load_torch_file(RunFolder.resolve_checkpoint(path)[0], map_location)


def model_from_checkpoint(ckpt: dict | str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuilds the model recorded in a reslab checkpoint and loads its weights (strict).

    Uses the EMA weights when the checkpoint has them and ``config`` says EMA was evaluated.

    Args:
        ckpt: a loaded checkpoint dict, a checkpoint file, or a run folder.
        map_location: where tensors land when ``ckpt`` is a path.
    Returns:
        The model, with ``model.classes`` and ``model.preprocess`` set from the checkpoint.
    """
    where = "this checkpoint"
    if not isinstance(ckpt, dict):
        path = RunFolder.resolve_checkpoint(ckpt)[0]
        where = str(path)
        ckpt = load_torch_file(path, map_location)  # empty, HTML, truncated: a WeightsError
    if not isinstance(ckpt, dict) or "model_args" not in ckpt:
        raise WeightsError(
            f"{where} has no 'model_args', so the architecture is unknown; "
            "build the model with reslab.create_model(...) and use reslab.load_pretrained."
        )
    args = dict(ckpt["model_args"])
    name = args.pop("name")
    model = create_model(name, **args)
    weights = ckpt["model"]
    ema_on = bool(((ckpt.get("config") or {}).get("ema") or {}).get("enabled"))
    if ema_on and isinstance(ckpt.get("ema"), dict) and "model" in ckpt["ema"]:
        weights = ckpt["ema"]["model"]  # last.pt of an EMA run: the evaluated weights
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:  # another architecture's (or a damaged) state dict
        lines = [ln.strip() for ln in str(e).splitlines()[1:4] if ln.strip()]
        raise WeightsError(
            f"{where} says its model is {name!r} ({args}), but its weights do not fit that "
            f"model: {' '.join(lines)[:600]}. The checkpoint is inconsistent (saved from "
            "another architecture or edited); use the run's own checkpoint, or build the "
            "right model with reslab.create_model(...) and reslab.load_pretrained(model, file)."
        ) from e
    model.classes = list(ckpt.get("classes") or [])
    model.preprocess = dict(ckpt.get("preprocess") or {})
    return model

