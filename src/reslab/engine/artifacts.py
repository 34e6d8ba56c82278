"""What a run leaves for people and other tools: the epoch log line, ``summary.json``,
``model.safetensors`` and ``RunResult``, ``fit``'s return value.

Training and the cached linear head both write these through the functions here, so every
run folder has the same files and every log the same lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..files import atomic_write_bytes, write_json
from ..run_folder import RunFolder


@dataclass
class RunResult:
    """What ``fit`` returns.

    Attributes:
        run_dir: the run folder.
        best_metric: best validation accuracy (0..1), or the last train accuracy without val.
        best_epoch: 1-based epoch of ``best_metric``.
        history: one dict per epoch, as in ``metrics.jsonl``.
        wall_time_s: seconds from start to end (summed over resumes).
        images_per_s: training images per second of training time.
        final: last epoch's metrics plus ``test_acc``/``test_loss`` and how the run ended.
    """

    run_dir: Path
    best_metric: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    images_per_s: float = 0.0
    final: dict[str, Any] = field(default_factory=dict)


def format_duration(seconds: float) -> str:
    """``"1h02m03s"`` or ``"2m05s"``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    return f"{s // 60}m{s % 60:02d}s"


def epoch_line(row: Mapping[str, Any], epochs: int, best: bool) -> str:
    """The one log line per epoch, from a ``metrics.jsonl`` row.

    Args:
        row: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``/``val_acc`` (or None),
            ``lr``, ``images_per_s``, ``seconds``.
        epochs: the run's epoch count.
        best: this epoch gave the best metric so far.
    """
    parts = [f"epoch {row['epoch']}/{epochs}",
             f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"]  # fmt: skip
    if row.get("val_acc") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:,.0f} img/s",
              f"{row['seconds']:.1f} s"]  # fmt: skip
    return "  ".join(parts) + ("  *best" if best else "")


def summary_line(result: RunResult, epochs: int, has_val: bool) -> str:
    """The run's last log line: best metric, test accuracy, time, speed, folder."""
    name = "val acc" if has_val else "train acc"
    best = f"{100 * (result.best_metric or 0):.2f}% at epoch {result.best_epoch}/{epochs}"
    parts = [f"done: best {name} {best}"]
    if "test_acc" in result.final:
        parts.append(f"test acc {100 * result.final['test_acc']:.2f}%")
    parts += [f"wall time {format_duration(result.wall_time_s)}", f"{result.images_per_s:,.0f} img/s",
              f"run folder {result.run_dir}"]  # fmt: skip
    return "; ".join(parts)


def write_summary(result: RunResult, cfg, *, model_args: Mapping[str, Any] | None, has_val: bool,
                  train_seconds: float, precision: str, world_size: int = 1,
                  extra: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Writes ``summary.json`` into ``result.run_dir``.

    Args:
        result: the finished run.
        cfg: its ``TrainConfig`` (data source, epochs).
        model_args: the model's constructor record (``model.model_args``).
        has_val: the best metric is ``val_acc`` (else ``train_acc``).
        train_seconds: training time without evaluation.
        precision: ``Precision.describe()``.
        world_size: processes of a DDP run.
        extra: more keys for this kind of run (e.g. the cached head's).
    """
    write_json(RunFolder(result.run_dir).summary, {
        "run_dir": str(result.run_dir),
        "model": dict(model_args or {}),
        "data": cfg.data.source,
        "best_metric": result.best_metric,
        "best_metric_name": "val_acc" if has_val else "train_acc",
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "epochs": cfg.epochs,
        "test_acc": result.final.get("test_acc"),
        "test_loss": result.final.get("test_loss"),
        "wall_time_s": round(result.wall_time_s, 2),
        "train_time_s": round(train_seconds, 2),
        "images_per_s": round(result.images_per_s, 1),
        "precision": precision,
        "world_size": world_size,
        "stopped": result.final.get("stopped"),
        "final": result.final,
        **dict(extra or {}),
    })  # fmt: skip


def write_safetensors(path: str | Path, weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Writes ``weights`` as safetensors with reslab's metadata (atomically).

    Args:
        path: usually ``RunFolder.safetensors``.
        weights: a state dict.
        meta: ``classes``, ``preprocess`` and optionally ``model_args`` (stored as JSON text).
    """
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    header = {"format": "reslab", "classes": json.dumps(list(meta["classes"])),
              "preprocess": json.dumps(meta["preprocess"])}  # fmt: skip
    if meta.get("model_args") is not None:
        header["model_args"] = json.dumps(meta["model_args"])
    data = st_save(tensors, metadata=header)
    atomic_write_bytes(path, lambda f: f.write(data))
