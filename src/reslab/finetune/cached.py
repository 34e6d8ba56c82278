"""The ``linear`` strategy with cached features: the same run folder as ``fit``, in seconds.

The backbone runs once over train/val with the eval transform (``features.py``); the head
trains on the cached (N, num_features) matrices with the training step, optimizer and
schedule of ``reslab train``; the best head (by validation accuracy, as ``fit`` picks) goes
back into the full model, which is evaluated on the test split and saved exactly as
``reslab train`` saves a run, under the run folder's lock and through the engine's writers
(``RunFolder``, ``engine.artifacts``): ``config.yaml``, ``classes.json``,
``metrics.jsonl``/``metrics.csv``, ``checkpoints/{last,best}.pt``, ``model.safetensors``,
``summary.json``, ``log.txt`` (the same epoch and summary lines), and the same trackers. A
resume simply redoes the run (it takes seconds), so ``last.pt`` is a finished-run checkpoint.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .. import cpu_memory
from ..config import TrainConfig, save_config
from ..data.splits import limit_split
from ..device import Precision, resolve_device, resolve_precision, set_cpu_threads
from ..engine.artifacts import RunResult, epoch_line, summary_line, write_safetensors, write_summary
from ..engine.batch_size import batch_sizes
from ..engine.loggers import MetricsFiles, make_loggers
from ..engine.state import seed_everything
from ..engine.step import evaluate
from ..files import save_checkpoint, write_json
from ..run_folder import RunFolder
from .features import extract_features, train_head


class _BestHead:
    """Per-epoch bookkeeping: keeps the best head's weights, writes the metrics files and
    the trackers, and logs the epoch line."""

    def __init__(self, head: nn.Module, run: RunFolder, loggers, epochs: int, log: Callable[[str], None]):
        self.head, self.loggers, self.epochs, self.log = head, loggers, epochs, log
        self.files = MetricsFiles(run.path)
        self.history: list[dict] = []
        self.acc: float | None = None
        self.state: dict | None = None
        self.row: dict | None = None

    def __call__(self, row: dict) -> None:
        self.history.append(row)
        metric = row["val_acc"] if row["val_acc"] is not None else row["train_acc"]
        improved = self.acc is None or metric > self.acc
        if improved:
            self.acc, self.state, self.row = metric, copy.deepcopy(self.head.state_dict()), row
        self.files.write(self.history)
        self.loggers.log_metrics(row, step=row["epoch"])
        self.log(epoch_line(row, self.epochs, improved))


def _eval_loaders(cfg: TrainConfig, bundle, device: torch.device) -> dict[str, Any]:
    """Eval-transform loaders of train/val/test, limited as ``fit`` limits them."""
    from ..data import make_loader

    splits = {
        "train": limit_split(bundle.train, cfg.data.limit_train, cfg.seed),
        "val": limit_split(bundle.val, cfg.data.limit_val, cfg.seed + 1),
        "test": limit_split(bundle.test, cfg.data.limit_val, cfg.seed + 2) if cfg.eval_test else None,
    }
    eval_bs = batch_sizes(cfg).eval
    return {
        k: make_loader(s, batch_size=eval_bs, train=False, preprocess=bundle.preprocess, seed=cfg.seed,
                       device=device, workers=cfg.data.workers)
        for k, s in splits.items() if s is not None and len(s)
    }  # fmt: skip


def fit_linear_cached(
    cfg: TrainConfig,
    model: nn.Module,
    bundle,
    *,
    log: Callable[[str], None],
    resume: bool = False,
    extra_json: Mapping[str, Any] | None = None,
) -> RunResult:
    """Trains ``model``'s head on cached backbone features and writes a run folder.

    Args:
        cfg: the resolved config (``cfg.out`` set; optimizer, lr, batch size, epochs, seed).
        model: the pretrained model with its fresh head and BN policy applied.
        bundle: the task's ``DataBundle``.
        log: prints and appends to ``log.txt``.
        resume: the folder already holds this run; it is redone from the start.
        extra_json: more files for the run folder, ``{name: JSON value}`` (fine-tuning's
            ``finetune.json``), written under the lock like the others.
    Returns:
        A ``RunResult`` like ``fit``'s (test accuracy in ``final``).
    Raises:
        ConfigError when another process writes into the folder (its lock), or when the
        batch size does not split over ``accum_steps``.
    """
    batch_sizes(cfg)  # a batch that does not split fails here, before any work
    run = RunFolder(cfg.out).prepare(resume=resume, overwrite=True)
    prev_threads = torch.get_num_threads()
    with run.lock():
        try:
            for name, value in (extra_json or {}).items():
                write_json(run.path / name, value)
            return _train_and_save(cfg, model, bundle, run, log)
        finally:
            torch.set_num_threads(prev_threads)


def _train_and_save(cfg: TrainConfig, model: nn.Module, bundle, run: RunFolder,
                    log: Callable[[str], None]) -> RunResult:  # fmt: skip
    """``fit_linear_cached`` inside the lock: features, head, checkpoints, summary."""
    threads = set_cpu_threads(cfg.threads)
    cpu_memory.configure()  # as fit does: glibc keeps freed memory (no page faults per batch)
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    log(f"precision: {precision.describe()}; {threads} CPU thread(s)")
    if device.type == "cpu":
        log(cpu_memory.describe())
    seed_everything(cfg.seed)
    model.to(device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    loaders = _eval_loaders(cfg, bundle, device)
    save_config(cfg, run.config)
    write_json(run.classes, list(bundle.classes))
    loggers = make_loggers(cfg.log, run.path, cfg, log)

    t0 = time.perf_counter()
    # (N, num_features) float32 per split, from one eval-transform pass of the backbone
    feats = {k: extract_features(model, loaders[k], precision.autocast)
             for k in ("train", "val") if k in loaders}  # fmt: skip
    t_feat = time.perf_counter() - t0
    n_img = sum(len(v[1]) for v in feats.values())
    log(f"features: {', '.join(f'{k} {tuple(v[0].shape)}' for k, v in feats.items())} extracted once in "
        f"{t_feat:.1f} s ({n_img / max(t_feat, 1e-9):,.0f} img/s)")  # fmt: skip

    head = model.get_classifier()
    cpu_head = copy.deepcopy(head).float().cpu()
    best = _BestHead(cpu_head, run, loggers, cfg.epochs, log)
    t1 = time.perf_counter()
    train_head(cfg, cpu_head, feats["train"], feats.get("val"), on_epoch=best)
    t_head = time.perf_counter() - t1

    final = _save_heads(run, cfg, model, head, cpu_head, best, bundle)
    if "test" in loaders:
        test = evaluate(model, loaders["test"], precision)
        final["test_loss"], final["test_acc"] = test["loss"], test["acc"]
    times = {"wall": time.perf_counter() - t0, "features": t_feat, "head": t_head}
    result = _write_summary(run, cfg, model, best, final, precision, times, n_train=len(feats["train"][1]))
    loggers.log_metrics({k: final[k] for k in ("test_acc", "test_loss") if k in final}, step=len(best.history))
    loggers.close("FINISHED")
    log(f"time: features {t_feat:.1f} s (once), head {t_head:.1f} s ({cfg.epochs} epochs)")
    log(summary_line(result, cfg.epochs, has_val="val" in feats))
    return result


def _save_heads(run: RunFolder, cfg: TrainConfig, model: nn.Module, head: nn.Module, trained: nn.Module,
                best: _BestHead, bundle) -> dict[str, Any]:  # fmt: skip
    """``last.pt`` with the final head; ``best.pt`` and ``model.safetensors`` with the best
    one, which stays in ``model`` (for the test score). Returns the last epoch's row."""
    meta = {"classes": list(bundle.classes), "preprocess": bundle.preprocess, "config": cfg.to_dict()}
    args = getattr(model, "model_args", None)
    if args is not None:
        meta["model_args"] = args
    history = best.history
    _load_head(head, trained.state_dict())
    save_checkpoint({"model": model.state_dict(), **meta, "epoch": cfg.epochs, "step": history[-1]["step"],
                     "metrics": {"history": history, "best_metric": best.acc, "best_epoch": best.row["epoch"]}},
                    run.last)  # fmt: skip
    _load_head(head, best.state)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint({"model": weights, **meta, "epoch": best.row["epoch"], "step": best.row["step"],
                     "metrics": {k: v for k, v in best.row.items() if isinstance(v, (int, float))}},
                    run.best)  # fmt: skip
    write_safetensors(run.safetensors, weights, meta)
    return dict(history[-1], stopped="completed")


def _write_summary(run: RunFolder, cfg: TrainConfig, model: nn.Module, best: _BestHead, final: dict,
                   precision: Precision, times: dict[str, float], n_train: int) -> RunResult:  # fmt: skip
    """``summary.json`` through the engine's writer, plus the cached-feature timings."""
    train_s = times["features"] + times["head"]
    images_per_s = n_train * cfg.epochs / max(train_s, 1e-9)
    result = RunResult(run.path, best.acc, best.row["epoch"], best.history, times["wall"], images_per_s, final)
    write_summary(result, cfg, model_args=getattr(model, "model_args", None), has_val=best.row["val_acc"] is not None,
                  train_seconds=train_s, precision=precision.describe(),
                  extra={"cached_features": True, "feature_seconds": round(times["features"], 2),
                         "head_seconds": round(times["head"], 2)})  # fmt: skip
    return result


def _load_head(head: nn.Module, state: dict) -> None:
    with torch.no_grad():
        for k, v in head.state_dict().items():
            v.copy_(state[k].to(v.device, v.dtype))
