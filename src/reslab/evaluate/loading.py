"""From a path on disk to a model ready to judge: a checkpoint file or a run folder in,
the model with its classes, preprocessing, config and (fitted) temperature out; and the
evaluation data, checked against the model's classes before any image is read.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import check_preprocess
from ..errors import ConfigError, DataError, WeightsError
from ..models.checkpoint import model_from_checkpoint, read_checkpoint
from ..run_folder import RunFolder

TEMPERATURE_FILE = "temperature.json"


@dataclass
class LoadedRun:
    """A trained model and what was saved with it."""

    model: nn.Module
    classes: list[str]
    preprocess: dict
    config: dict
    checkpoint_path: Path
    run_dir: Path | None  # the run folder when the checkpoint lives in one
    temperature: float | None = None  # from the run's temperature.json, if fitted
    checkpoint: dict = field(default_factory=dict, repr=False)  # everything but the weights

    @property
    def train_precision(self) -> str:
        """The precision training evaluated with (``config.precision``; ``auto`` resolves
        the same way on the same kind of machine)."""
        return str(self.config.get("precision") or "auto")

    @property
    def eval_batch_size(self) -> int:
        """The batch size training evaluated with (``data.eval_batch_size``, else twice the
        training batch), so a re-evaluation sees the same batches."""
        data = self.config.get("data") or {}
        return int(data.get("eval_batch_size") or 2 * int(data.get("batch_size") or 128))

    @property
    def as_trained(self) -> dict:
        """``evaluate(..., **run.as_trained)``: precision, batch size and the eager model that
        training evaluated with, so the number matches the training log's."""
        return {"precision": self.train_precision, "batch_size": self.eval_batch_size, "eager": True}

    @property
    def data_source(self) -> str | None:
        """The dataset the run was trained on (``config.data.source``), if recorded."""
        src = (self.config.get("data") or {}).get("source")
        return str(src) if src else None


def preprocess_of(model: nn.Module) -> dict:
    """The model's saved ``preprocess``, or one derived from its ``default_cfg``."""
    pre = getattr(model, "preprocess", None)
    if pre:
        return dict(pre)
    cfg = getattr(model, "default_cfg", None) or {}
    if "input_size" not in cfg:
        raise WeightsError(
            "the model has no 'preprocess' (input size, mean, std); load it with "
            "reslab.models.checkpoint.model_from_checkpoint or pass preprocess=..."
        )
    c, h, w = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct", 1.0))
    mean, std = list(cfg["mean"]), list(cfg["std"])
    if c != len(mean):  # e.g. a 1-channel model with ImageNet's 3-channel statistics
        mean, std = [sum(mean) / len(mean)] * c, [sum(std) / len(std)] * c
    return {
        "input_size": [c, h, w],
        "resize": int(round(h / crop_pct)),
        "crop": h,
        "mean": mean,
        "std": std,
        "interpolation": "bilinear",
    }


def read_temperature(run_dir: Path | None) -> float | None:
    """The temperature saved by ``reslab evaluate --calibrate``, if any."""
    if run_dir is None or not (run_dir / TEMPERATURE_FILE).exists():
        return None
    try:
        t = float(json.loads((run_dir / TEMPERATURE_FILE).read_text())["temperature"])
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(
            f"{run_dir / TEMPERATURE_FILE} is not valid ({e}); delete it or rerun "
            "`reslab evaluate --calibrate`."
        ) from e
    return t if t > 0 else None


def write_temperature(path: Path, temperature: float, **info) -> Path:
    """Saves a fitted temperature as JSON (``{"temperature": T, ...}``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"temperature": temperature, **info}, indent=2))
    return path


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRun:
    """Loads a checkpoint file or a run folder (``checkpoints/best.pt``) for inference.

    Args:
        path: a ``.pt`` checkpoint or a run folder.
        device: where to put the model.
    Returns:
        A ``LoadedRun`` with the model in eval mode.
    """
    ckpt_path, run = RunFolder.resolve_checkpoint(path)
    run_dir = run.path if run else None
    ckpt = read_checkpoint(ckpt_path, map_location="cpu")
    model = model_from_checkpoint(ckpt).to(device).eval()
    classes = list(ckpt.get("classes") or [])
    if not classes and run_dir is not None and (run_dir / "classes.json").exists():
        classes = [str(c) for c in json.loads((run_dir / "classes.json").read_text())]
    n = getattr(model, "num_classes", 0)
    if not classes:
        classes = [str(i) for i in range(n)]
    if len(classes) != n:
        raise WeightsError(
            f"{ckpt_path} lists {len(classes)} classes but its classifier has {n} outputs; "
            "the checkpoint is inconsistent."
        )
    model.classes = classes
    preprocess = check_preprocess(preprocess_of(model), str(ckpt_path))
    model.preprocess = preprocess
    heavy = ("model", "optimizer", "scheduler", "ema", "scaler")
    meta = {k: v for k, v in ckpt.items() if k not in heavy}
    return LoadedRun(
        model=model,
        classes=classes,
        preprocess=preprocess,
        config=dict(ckpt.get("config") or {}),
        checkpoint_path=ckpt_path,
        run_dir=run_dir,
        temperature=read_temperature(run_dir),
        checkpoint=meta,
    )


def label_map_for(data_classes: list[str], model_classes: list[str]) -> torch.Tensor | None:
    """Maps the data's label indices onto the model's; None when they already agree.

    Raises:
        DataError: when the class sets differ (names what is missing on each side).
    """
    if list(data_classes) == list(model_classes):
        return None
    missing = [c for c in model_classes if c not in data_classes]
    extra = [c for c in data_classes if c not in model_classes]
    if extra or len(set(data_classes)) != len(data_classes):
        def show(xs):
            return ", ".join(map(repr, xs[:8])) + (" ..." if len(xs) > 8 else "")

        raise DataError(
            f"the data's classes do not match the checkpoint's. The checkpoint knows "
            f"{len(model_classes)} classes ({show(list(model_classes))}); the data has "
            f"{len(data_classes)} ({show(list(data_classes))}). In the data but not the model: "
            f"{show(extra) or 'none'}; in the model but not the data: {show(missing) or 'none'}. "
            "Evaluate on data with the same class folders (names must match exactly), or "
            "fine-tune the model on these classes first."
        )
    # The data covers a subset of the model's classes (or the same set in another order).
    index = {c: i for i, c in enumerate(model_classes)}
    return torch.tensor([index[c] for c in data_classes], dtype=torch.long)


def load_eval_data(run: LoadedRun, source: str | None, *, check: bool = False,
                   log=logging.getLogger("reslab.evaluate").info):  # fmt: skip
    """Loads the dataset a run is judged on, split exactly as in training.

    The train/val split of a folder without ``val/`` depends on ``val_fraction`` and the
    seed, so both are taken from the run's config: the "val" split here is the one the
    run never trained on.

    Args:
        run: the loaded run.
        source: a dataset source (folder, CSV, built-in name); default: the run's own.
        check: also run the data health check (``bundle.health``).
    Returns:
        ``(bundle, label_map)``: the ``DataBundle`` and the data -> model label mapping.
    """
    from ..data import load_dataset

    source = source or run.data_source
    if not source:
        raise ConfigError(
            f"no data given and {run.checkpoint_path} does not record its dataset; "
            "pass --data (an image folder, a CSV manifest or a built-in name such as "
            "fashion-mnist)."
        )
    data_cfg = run.config.get("data") or {}
    in_chans, h, w = run.preprocess["input_size"]
    bundle = load_dataset(
        source,
        val_fraction=float(data_cfg.get("val_fraction", 0.1)),
        seed=int(run.config.get("seed", 0)),
        image_size=data_cfg.get("image_size"),
        in_chans=in_chans,
        check=check,
        log=log,
    )
    return bundle, label_map_for(list(bundle.classes), run.classes)


def pick_split(bundle, split: str | None):
    """The split to evaluate: ``split`` if given, else test when present, else val."""
    if split not in (None, "test", "val", "train"):
        raise ConfigError(f"split={split!r}; expected test, val or train.")
    name = split or ("test" if getattr(bundle, "test", None) is not None else "val")
    s = getattr(bundle, name, None)
    if s is None or len(s) == 0:
        have = [n for n in ("train", "val", "test") if getattr(bundle, n, None) is not None]
        raise DataError(
            f"the dataset {bundle.source!r} has no {name!r} split (it has: {', '.join(have)}). "
            f"Use --split {'val' if 'val' in have else have[0]}."
        )
    return name, s
