"""The ``linear`` strategy with cached features: the same run folder as ``fit``, in seconds.

The backbone runs once over train/val with the eval transform (``features.py``); the head
trains on the cached (N, num_features) matrices; the best head (by validation accuracy,
as ``fit`` picks) goes back into the full model, which is evaluated on the test split and
saved exactly as ``reslab train`` saves a run: ``config.yaml``, ``classes.json``,
``metrics.jsonl``/``metrics.csv``, ``checkpoints/{last,best}.pt``, ``model.safetensors``,
``summary.json``, ``log.txt``, and the same trackers. A resume simply redoes the run (it
takes seconds), so ``last.pt`` is a finished-run checkpoint.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Callable

import torch
from torch import nn

from ..config import TrainConfig, save_config
from ..device import resolve_device, resolve_precision, set_cpu_threads
from ..engine import RunResult
from ..engine.loggers import MetricsFiles, make_loggers
from ..engine.state import seed_everything
from ..engine.step import evaluate
from ..files import atomic_write_bytes, save_checkpoint, write_json
from ..run_folder import RunFolder
from .features import extract_features, train_head


def _subset(split, n: int | None, seed: int):
    """The first ``n`` images of a seeded shuffle, as ``fit``'s ``data.limit_*`` does."""
    if split is None or n is None or n >= len(split):
        return split
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(order.sort().values)


def fit_linear_cached(
    cfg: TrainConfig, model: nn.Module, bundle, *, log: Callable[[str], None], resume: bool = False
) -> RunResult:
    """Trains ``model``'s head on cached backbone features and writes a run folder.

    Args:
        cfg: the resolved config (``cfg.out`` set; optimizer, lr, batch size, epochs, seed).
        model: the pretrained model with its fresh head and BN policy applied.
        bundle: the task's ``DataBundle``.
        log: prints and appends to ``log.txt``.
        resume: the folder already holds this run; it is redone from the start.
    Returns:
        A ``RunResult`` like ``fit``'s (test accuracy in ``final``).
    """
    from ..data import make_loader

    run_dir = RunFolder(cfg.out).prepare(resume=resume, overwrite=True).path
    prev_threads = torch.get_num_threads()
    threads = set_cpu_threads(cfg.threads)
    try:
        device = resolve_device(cfg.device)
        precision = resolve_precision(device, cfg.precision)
        log(f"precision: {precision.describe()}; {threads} CPU thread(s)")
        seed_everything(cfg.seed)
        model.to(device)
        if precision.channels_last:
            model.to(memory_format=torch.channels_last)
        splits = {
            "train": _subset(bundle.train, cfg.data.limit_train, cfg.seed),
            "val": _subset(bundle.val, cfg.data.limit_val, cfg.seed + 1),
            "test": _subset(bundle.test, cfg.data.limit_val, cfg.seed + 2) if cfg.eval_test else None,
        }
        eval_bs = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
        loaders = {
            k: make_loader(s, batch_size=eval_bs, train=False, preprocess=bundle.preprocess, seed=cfg.seed,
                           device=device, workers=cfg.data.workers)
            for k, s in splits.items() if s is not None and len(s)
        }  # fmt: skip
        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / "classes.json", list(bundle.classes))
        loggers = make_loggers(cfg.log, run_dir, cfg, log)

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
        best = {"acc": None, "state": None, "row": None}
        history: list[dict] = []
        files = MetricsFiles(run_dir)
        has_val = "val" in feats

        def on_epoch(row: dict) -> None:
            row["step"] = row["epoch"] * -(-len(feats["train"][1]) // cfg.data.batch_size)
            history.append(row)
            metric = row["val_acc"] if has_val else row["train_acc"]
            improved = best["acc"] is None or metric > best["acc"]
            if improved:
                best.update(acc=metric, state=copy.deepcopy(cpu_head.state_dict()), row=row)
            files.write(history)
            loggers.log_metrics(row, step=row["epoch"])
            parts = [f"epoch {row['epoch']}/{cfg.epochs}",
                     f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"]  # fmt: skip
            if has_val:
                parts.append(f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
            parts.append(f"lr {row['lr']:.3g}")
            log("  ".join(parts) + ("  *best" if improved else ""))

        t1 = time.perf_counter()
        train_head(
            cpu_head, feats["train"], feats.get("val"), epochs=cfg.epochs, lr=cfg.optim.lr,
            batch_size=cfg.data.batch_size, optimizer=cfg.optim.name, momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay, label_smoothing=cfg.label_smoothing,
            warmup_epochs=cfg.schedule.warmup_epochs, seed=cfg.seed, on_epoch=on_epoch,
        )  # fmt: skip
        t_head = time.perf_counter() - t1
        meta = {"classes": list(bundle.classes), "preprocess": bundle.preprocess, "config": cfg.to_dict()}
        args = getattr(model, "model_args", None)
        if args is not None:
            meta["model_args"] = args

        # last.pt: the final head; best.pt, model.safetensors and the test score: the best one
        _load_head(head, cpu_head.state_dict())
        save_checkpoint({"model": model.state_dict(), **meta, "epoch": cfg.epochs, "step": history[-1]["step"],
                         "metrics": {"history": history, "best_metric": best["acc"],
                                     "best_epoch": best["row"]["epoch"]}},
                        run_dir / "checkpoints" / "last.pt")  # fmt: skip
        _load_head(head, best["state"])
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_checkpoint({"model": weights, **meta, "epoch": best["row"]["epoch"], "step": best["row"]["step"],
                         "metrics": {k: v for k, v in best["row"].items() if isinstance(v, (int, float))}},
                        run_dir / "checkpoints" / "best.pt")  # fmt: skip
        _write_safetensors(run_dir / "model.safetensors", weights, meta)

        final = dict(history[-1])
        final["stopped"] = "completed"
        if "test" in loaders:
            test = evaluate(model, loaders["test"], precision)
            final["test_loss"], final["test_acc"] = test["loss"], test["acc"]
        wall = time.perf_counter() - t0
        n_train = len(feats["train"][1])
        images_per_s = n_train * cfg.epochs / max(t_feat + t_head, 1e-9)
        result = RunResult(run_dir, best["acc"], best["row"]["epoch"], history, wall, images_per_s, final)
        write_json(run_dir / "summary.json", {
            "run_dir": str(run_dir), "model": args or {}, "data": cfg.data.source,
            "best_metric": best["acc"], "best_metric_name": "val_acc" if has_val else "train_acc",
            "best_epoch": best["row"]["epoch"], "epochs_run": len(history), "epochs": cfg.epochs,
            "test_acc": final.get("test_acc"), "test_loss": final.get("test_loss"),
            "wall_time_s": round(wall, 2), "train_time_s": round(t_feat + t_head, 2),
            "images_per_s": round(images_per_s, 1), "precision": precision.describe(), "world_size": 1,
            "stopped": "completed", "final": final, "cached_features": True,
            "feature_seconds": round(t_feat, 2), "head_seconds": round(t_head, 2),
        })  # fmt: skip
        loggers.log_metrics({k: final[k] for k in ("test_acc", "test_loss") if k in final}, step=len(history))
        loggers.close("FINISHED")
        name = "val acc" if has_val else "train acc"
        line = f"done: best {name} {100 * best['acc']:.2f}% at epoch {best['row']['epoch']}/{cfg.epochs}"
        if "test_acc" in final:
            line += f"; test acc {100 * final['test_acc']:.2f}%"
        log(f"{line}; wall time {wall:.1f} s (features {t_feat:.1f} s, head {t_head:.1f} s); "
            f"run folder {run_dir}")  # fmt: skip
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _load_head(head: nn.Module, state: dict) -> None:
    with torch.no_grad():
        for k, v in head.state_dict().items():
            v.copy_(state[k].to(v.device, v.dtype))


def _write_safetensors(path, weights: dict, meta: dict) -> None:
    from safetensors.torch import save as st_save

    info = {"format": "reslab", "classes": json.dumps(meta["classes"]),
            "preprocess": json.dumps(meta["preprocess"])}  # fmt: skip
    if "model_args" in meta:
        info["model_args"] = json.dumps(meta["model_args"])
    data = st_save(weights, metadata=info)
    atomic_write_bytes(path, lambda f: f.write(data))
