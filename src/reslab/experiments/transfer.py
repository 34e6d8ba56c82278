"""Transfer study: Fashion-MNIST weights against training from scratch on few-label digits.

Target task: scikit-learn's handwritten digits (always offline), written as a 28 px image
folder so a Fashion-MNIST model reads it like any user folder. Training sets keep 5, 20 or
all labelled images per class; validation and the fixed 20% test split are always whole.
For each size: every fine-tuning strategy (``linear``, ``full``, ``gradual``,
``discriminative``; see ``reslab.finetune``) from the pretrained weights, and the same
architecture trained from scratch. Accuracy is that of the best-validation checkpoint on
the test split, so the test set chooses nothing.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from . import plots
from .tables import machine_info, markdown_table, write_json

STRATEGIES = ("linear", "full", "gradual", "discriminative")


def batch_size_for(n_train: int, cap: int = 64) -> int:
    """The batch of every arm of one training-set size: fine-tuning's rule
    (``reslab.finetune.plan.batch_for_data``: at least 4 steps per epoch on tiny sets) with
    ``cap`` as the default, so scratch and pretrained arms take the same steps."""
    from ..finetune.plan import batch_for_data

    return batch_for_data(n_train, cap)


def epochs_for(n_train: int, batch: int, steps: int = 300, lo: int = 4, hi: int = 60) -> int:
    """Epochs giving about ``steps`` optimizer steps, clamped to [lo, hi]: a 50-image set
    needs more passes than a 1,000-image one to see a comparable number of updates."""
    per_epoch = max(1, n_train // batch)
    return int(min(hi, max(lo, math.ceil(steps / per_epoch))))


def _check(labels, strategies, seeds, epochs):
    from ..finetune import STRATEGIES as KNOWN

    bad = [s for s in strategies if s not in KNOWN]
    if bad:
        raise ConfigError(f"transfer: unknown strategies {bad}; expected some of {list(KNOWN)}.")
    bad = [n for n in labels if n is not None and n < 1]
    if bad:
        raise ConfigError(f"transfer: labels per class must be >= 1 (or 0 for all), received {bad}.")
    if not seeds:
        raise ConfigError("transfer needs at least one seed.")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"transfer: --epochs must be >= 1 (or omitted for automatic), received {epochs}.")


def run_transfer(
    weights: str,
    *,
    labels: Sequence[int | None] = (5, 20, None),
    strategies: Sequence[str] = STRATEGIES,
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    steps: int = 300,
    scratch_model: str | None = None,
    device: str = "auto",
    out: str | Path = "runs/transfer",
    log=print,
) -> dict:
    """Fine-tunes ``weights`` on digits with few labels, against the same net from scratch.

    Args:
        weights: pretrained source (``reslab:NAME``, a run folder, a weights file).
        labels: labelled training images per class; None keeps all (about 115 per class).
        strategies: fine-tuning strategies to compare.
        seeds: each seed draws another labelled subset and initialisation.
        epochs: training epochs for every arm; None picks ``epochs_for`` (about ``steps``
            optimizer steps, the same for every arm of one training-set size).
        steps: see ``epochs``.
        scratch_model: architecture trained from scratch (default: the weights' own).
        device: ``auto``, ``cpu`` or ``cuda``.
        out: results folder (``transfer.json``, ``table.md``, ``transfer.png``, runs, data).
        log: progress lines.
    Returns:
        ``{"rows": [{"init", "strategy", "labels_per_class", "n_train", "seed", "test_acc",
        "val_acc", "epochs", "batch_size", "seconds"}], "summary": [...], "machine": ...}``.
    """
    from ..data import write_digits_folder
    from ..models.pretrained import weights_info

    _check(labels, strategies, seeds, epochs)
    info = weights_info(weights) or {}  # fails early for unknown weights
    arch = scratch_model or (info.get("model_args") or {}).get("name") or info.get("architecture")
    if not arch:
        raise ConfigError(f"could not tell the architecture of {weights!r}; pass scratch_model=NAME.")
    out = Path(out)
    rows = []
    for seed in seeds:
        for n in labels:
            tag = f"{n or 'all'}-per-class-seed{seed}"
            folder = out / "data" / tag
            if not (folder / "train").is_dir():
                write_digits_folder(folder, per_class=n, seed=seed, size=28)
            n_train = sum(1 for p in (folder / "train").rglob("*.png"))
            bs = batch_size_for(n_train)
            ep = epochs or epochs_for(n_train, bs, steps)
            common = {"data.source": str(folder), "data.batch_size": bs, "epochs": ep, "seed": seed,
                      "device": device, "overwrite": True, "eval_test": True}  # fmt: skip
            arms = [("pretrained", s) for s in strategies] + [("scratch", "full")]
            for init, strategy in arms:
                log(f"--- {tag}: {init} {strategy}, {n_train} images, batch {bs}, {ep} epochs")
                run_dir = out / "runs" / tag / (f"{init}-{strategy}")
                result = _train_arm(init, strategy, {**common, "out": str(run_dir)}, weights, arch)
                rows.append({
                    "init": init,
                    "strategy": strategy,
                    "labels_per_class": n if n is not None else round(n_train / 10),
                    "all_labels": n is None,
                    "n_train": n_train,
                    "seed": seed,
                    "test_acc": 100 * float(result.final.get("test_acc", float("nan"))),
                    "val_acc": 100 * float(result.best_metric or 0.0),
                    "epochs": ep,
                    "batch_size": bs,
                    "seconds": float(result.wall_time_s),
                })  # fmt: skip
            # written after every training-set size, so a stopped study keeps what it finished
            res = {"weights": weights, "architecture": arch, "rows": rows, "summary": summarize(rows),
                   "machine": machine_info()}  # fmt: skip
            write_outputs(res, out)
    return res


def _train_arm(init: str, strategy: str, settings: dict, weights: str, arch: str):
    """One arm: ``finetune`` from ``weights`` with ``strategy``, or ``fit`` of ``arch`` from
    scratch, with the config ``settings`` shared by the arms of one training-set size."""
    from ..config import load_config
    from ..engine import fit
    from ..finetune import finetune

    if init == "pretrained":
        cfg = load_config(None, {**settings, "finetune.pretrained": weights, "finetune.strategy": strategy})
        return finetune(cfg)
    return fit(load_config(None, {**settings, "model.name": arch}))


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean (and std over seeds) test accuracy per (init, strategy, labels per class)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["labels_per_class"], r["init"], r["strategy"]), []).append(r)
    out = []
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "pretrained", kv[0][2]))
    for (n, init, strategy), rs in order:
        accs = [r["test_acc"] for r in rs]
        out.append({
            "labels_per_class": n,
            "n_train": rs[0]["n_train"],
            "init": init,
            "strategy": strategy,
            "test_acc": statistics.fmean(accs),
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "seeds": len(rs),
            "epochs": rs[0]["epochs"],
        })  # fmt: skip
    return out


def merge_results(parts: Sequence[dict]) -> dict:
    """Joins transfer studies of the same weights and architecture, the later ones taking
    precedence: an arm (init, strategy, labels per class, seed) rerun in a later part, e.g.
    after a fix, replaces the earlier result.

    Args:
        parts: results dicts (``transfer.json`` contents), oldest first.
    Returns:
        One results dict, as ``run_transfer`` writes, with ``merged_from`` (how many parts).
    Raises:
        ConfigError: when the parts fine-tuned other weights or another architecture.
    """
    if not parts:
        raise ConfigError("nothing to merge: pass at least one transfer.json.")
    first = parts[0]
    arms: dict[tuple, dict] = {}
    for part in parts:
        for key in ("weights", "architecture"):
            if part[key] != first[key]:
                raise ConfigError(f"cannot merge transfer studies with different {key}: "
                                  f"{first[key]!r} and {part[key]!r}.")  # fmt: skip
        for r in part["rows"]:
            arms[(r["init"], r["strategy"], r["labels_per_class"], r["all_labels"], r["seed"])] = r
    rows = list(arms.values())
    return {"weights": first["weights"], "architecture": first["architecture"], "rows": rows,
            "summary": summarize(rows), "machine": first["machine"], "merged_from": len(parts)}  # fmt: skip


TABLE_COLUMNS = (
    ("labels_per_class", "labels / class", "{}"),
    ("n_train", "train images", "{}"),
    ("init", "init", "{}"),
    ("strategy", "strategy", "{}"),
    ("epochs", "epochs", "{}"),
    ("test_acc", "test acc (%)", "{:.2f}"),
    ("test_acc_std", "± std", "{:.2f}"),
    ("seeds", "seeds", "{}"),
)


def write_outputs(res: dict, out: str | Path) -> dict[str, Path]:
    """Writes ``transfer.json``, ``table.md`` and ``transfer.png`` into ``out``."""
    out = Path(out)
    paths = {"json": write_json(out / "transfer.json", res)}
    (out / "table.md").write_text(markdown_table(res["summary"], TABLE_COLUMNS))
    paths["table"] = out / "table.md"
    paths["plot"] = plots.plot_accuracy_vs_labels(
        res["rows"], out / "transfer.png", f"digits (28 px): from {res['weights']} vs from scratch"
    )
    return paths
