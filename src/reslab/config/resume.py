"""Which settings a resume may change: the ones that do not change what was trained so far.

A checkpoint's weights, optimizer state and data order belong to its model, data, batch
size and recipe; resuming them under other values either crashes half-way (another
model's weights) or silently trains something that is neither run. The run length,
stopping, logging and machine settings may change (issue 17).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError

# Keys (or whole sections, ending in ".") a resume may change.
RESUMABLE = (
    "epochs",  # extend (or shorten) the run; the schedule is stretched to the new length
    "early_stop.",
    "log", "tracking.", "log_every",
    "out", "overwrite",
    "device", "threads", "compile", "compile_mode", "deterministic",
    "data.workers", "data.decode", "data.eval_batch_size", "data.check",
    "checkpoint_every_steps", "eval_test",
)  # fmt: skip


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _may_change(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def resume_changes(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Compares a run's stored config with the one a resume asks for.

    Args:
        stored: the checkpoint's ``config`` (``TrainConfig.to_dict()``).
        requested: the resume's ``TrainConfig.to_dict()``.
    Returns:
        ``(allowed, refused)``: ``"key: old -> new"`` lines for keys a resume may change,
        ``"key: stored old, requested new"`` lines for the others.
    """
    old, new = _flat(stored), _flat(requested)
    # a section that is None on one side (e.g. finetune) compares key by key with the other
    allowed, refused = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if _may_change(key):
            allowed.append(f"{key}: {a!r} -> {b!r}")
        else:
            refused.append(f"{key}: stored {a!r}, requested {b!r}")
    return allowed, refused


def check_resume(stored: Mapping[str, Any], requested: Mapping[str, Any], run: str) -> list[str]:
    """Refuses a resume that changes settings a resume may not change.

    Args:
        stored, requested: as for ``resume_changes``.
        run: the run folder, for the message.
    Returns:
        The allowed changes (for the log).
    Raises:
        ConfigError naming every differing key with both values, and what may change.
    """
    allowed, refused = resume_changes(stored, requested)
    if refused:
        may = ", ".join(r.rstrip(".") + ("" if not r.endswith(".") else ".*") for r in RESUMABLE)
        raise ConfigError(
            f"cannot resume {run} with different settings; the checkpoint was trained with other "
            "values for:\n  " + "\n  ".join(refused)
            + f"\nA resume may change only: {may}. Drop the other changes to continue the run, or "
            "start a new run with another --out to train with them. Nothing in the run folder "
            "was changed."
        )
    return allowed
