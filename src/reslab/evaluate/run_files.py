"""What the report reads from a run folder beyond the checkpoint: the epoch history, the
summary's durations and the command that reproduces the run."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: Path):
    """The parsed file, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_history(path: Path) -> list[dict]:
    """Rows of ``metrics.jsonl`` (one JSON object per epoch); unreadable lines are skipped."""
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def reproduce_command(run_dir: Path, summary: dict | None, config: dict) -> str:
    """The command that trains this run again: the recorded one, else ``reslab finetune``
    for a fine-tuned run (``reslab train`` would ignore the finetune keys and train from
    scratch) or ``reslab train``, from the run's config.yaml into a new folder."""
    for src in (summary or {}, config):
        cmd = src.get("command")
        if cmd:
            return cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
    verb = "finetune" if (config.get("finetune") or {}).get("pretrained") else "train"
    return f"reslab {verb} --config {run_dir / 'config.yaml'} --out {run_dir}-again"


def format_seconds(seconds: float) -> str:
    """``42.0 s``, ``3.5 min`` or ``2.1 h``: a duration in the unit that shows it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe_duration(summary: dict) -> str | None:
    """Training time (the optimizer's work) and wall time from summary.json, or None."""
    train, wall = summary.get("train_time_s"), summary.get("wall_time_s")
    if isinstance(train, (int, float)) and isinstance(wall, (int, float)):
        return f"{format_seconds(train)} training, {format_seconds(wall)} wall time"
    if isinstance(wall, (int, float)):
        return f"{format_seconds(wall)} wall time"
    return None
