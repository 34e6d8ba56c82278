"""The epoch loop: train, validate, log, checkpoint, stop cleanly.

``Trainer`` receives every object it uses already built (model, loaders, optimizer,
schedule, loggers, callbacks; see ``training.py`` for how a config becomes them) and owns only
the run's progress: epoch, step, history, best metric. Its checkpoint holds everything an
exact resume needs: weights, optimizer/schedule/scaler/EMA state, RNG states, the position
inside the epoch and the running epoch totals.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..device import Precision
from ..files import atomic_write_bytes, save_checkpoint, write_json
from .distributed import DistInfo, all_reduce_sum, barrier
from .loggers import Loggers, MetricsFiles
from .progress import EpochProgress
from .signals import CheckpointWriteError, NonFiniteLossError, StopSignals, TrainingInterrupted
from .state import capture_rng_state, restore_rng_state
from .step import RunningStats, TrainStep, evaluate


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


def _fmt_time(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    return f"{s // 60}m{s % 60:02d}s"


class Trainer:
    """Runs the epochs of one training run.

    Args:
        cfg: the resolved ``TrainConfig`` (recipe scalars; saved with checkpoints).
        model: the bare model (``.model`` to callbacks; saved weights).
        train_model: what the step runs (``model`` wrapped by DDP and/or torch.compile).
        step: the ``TrainStep`` (owns optimizer, schedule, scaler, EMA updates).
        train_loader, val_loader, test_loader: loaders (val/test may be None); ``test_loader``
            is only used on rank 0 at the end.
        precision: the resolved precision.
        dist: this process's place in a DDP run.
        run_dir: the run folder; ``log``: prints and appends to ``log.txt``.
        loggers: trackers (rank 0) ; callbacks: ``Callback`` objects.
        meta: ``classes``, ``preprocess``, ``model_args``, ``split_info`` (saved with
            checkpoints) and ``val_total`` (the validation split's true size, for DDP).
    """

    def __init__(self, cfg, *, model: nn.Module, train_model: nn.Module, step: TrainStep, train_loader,
                 val_loader, test_loader, precision: Precision, dist: DistInfo, run_dir: Path, log,
                 loggers: Loggers, callbacks: Sequence[Any], meta: dict[str, Any]):  # fmt: skip
        self.cfg = cfg
        self.model, self.train_model, self.train_step = model, train_model, step
        self.optimizer, self.scheduler = step.optimizer, step.scheduler
        self.scaler, self.ema = step.scaler, step.ema
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.precision, self.dist, self.run_dir = precision, dist, Path(run_dir)
        self.log, self.loggers, self.callbacks = log, loggers, list(callbacks)
        self.meta = meta
        self.device = next(model.parameters()).device
        self.epochs = cfg.epochs
        self.batches = len(train_loader)
        self.accum = cfg.accum_steps
        # run progress
        self.epoch = 0  # 0-based epoch being (or about to be) trained
        self.start_batch = 0
        self.step = 0  # optimizer steps taken
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.should_stop = False
        self.stats = RunningStats(self.device)
        self.epoch_seconds = 0.0  # training seconds of the current epoch so far
        self.train_seconds = 0.0  # training seconds of the whole run (no eval)
        self.images = 0  # training images seen by all processes
        self.wall_offset = 0.0  # wall seconds of earlier sessions (resume)
        self._rng_to_restore: dict | None = None
        self.files = MetricsFiles(self.run_dir)

    # --------------------------------------------------------------- checkpoints
    def _callback_key(self, i: int, cb: Any) -> str:
        return f"{i}:{type(cb).__name__}"

    def state(self, next_epoch: int, next_batch: int) -> dict[str, Any]:
        """The full training state; the run continues at batch ``next_batch`` of ``next_epoch``."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "classes": list(self.meta["classes"]),
            "preprocess": self.meta["preprocess"],
            "config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": int(next_epoch),
            "step": int(self.step),
            "sampler": {"epoch": int(next_epoch), "batch": int(next_batch), "batches": self.batches,
                        "seed": int(self.cfg.seed), "world_size": self.dist.world_size},  # fmt: skip
            "rng": capture_rng_state(),
            "callbacks": {
                self._callback_key(i, cb): cb.state_dict()
                for i, cb in enumerate(self.callbacks)
                if hasattr(cb, "state_dict")
            },
            "metrics": {
                "history": self.history,
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "running": self.stats.state_dict(),
                "epoch_seconds": self.epoch_seconds,
                "train_seconds": self.train_seconds,
                "images": self.images,
                "wall_seconds": self.wall_offset + (time.perf_counter() - self._t0),
            },
            "split_info": json.loads(json.dumps(self.meta.get("split_info") or {}, default=str)),
        }
        if self.meta.get("model_args") is not None:
            state["model_args"] = self.meta["model_args"]
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Restores everything ``state`` saved (RNG states right before training resumes)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        saved = ckpt.get("callbacks", {})
        for i, cb in enumerate(self.callbacks):
            key = self._callback_key(i, cb)
            if key in saved and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved[key])
        m = ckpt["metrics"]
        self.history = list(m["history"])
        self.best_metric, self.best_epoch = m["best_metric"], m["best_epoch"]
        self.stats.load_state_dict(m["running"])
        self.epoch_seconds = float(m["epoch_seconds"])
        self.train_seconds = float(m["train_seconds"])
        self.images, self.wall_offset = int(m["images"]), float(m["wall_seconds"])
        self.step = int(ckpt["step"])
        self.epoch, self.start_batch = int(ckpt["sampler"]["epoch"]), int(ckpt["sampler"]["batch"])
        if int(ckpt["sampler"].get("batches", self.batches)) != self.batches:
            self.log(f"warning: the epoch now has {self.batches} batches, the checkpoint "
                     f"{ckpt['sampler']['batches']}; the resume is not exact.")  # fmt: skip
        self._rng_to_restore = ckpt["rng"]

    def _write(self, what: str, write) -> None:
        """Runs ``write()``; an OSError (disk full, permissions) becomes a clear stop."""
        try:
            write()
        except OSError as e:
            raise CheckpointWriteError(
                f"could not write {what} in {self.run_dir}: {e.strerror or e}. Every write is atomic, "
                f"so the previous checkpoint is intact. Free some disk space (or fix permissions) "
                f"and continue with: reslab train --resume {self.run_dir}"
            ) from None

    def _weights_finite(self) -> bool:
        # the last update of a window can overflow after its loss was finite
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])
        return bool(torch.isfinite(torch.stack(norms)).all()) if norms else True

    def _save_last(self, next_epoch: int, next_batch: int) -> None:
        # nothing non-finite is ever written: the previous checkpoint stays the good one
        if not self.stats.finite() or not self._weights_finite():
            self._non_finite(next_epoch, next_batch)
        if self.dist.is_main:
            path = self.run_dir / "checkpoints" / "last.pt"
            state = self.state(next_epoch, next_batch)
            self._write("checkpoints/last.pt", lambda: save_checkpoint(state, path))

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _save_best(self, metrics: dict[str, Any]) -> None:
        state = {
            "model": self._eval_model().state_dict(),
            "classes": list(self.meta["classes"]),
            "preprocess": self.meta["preprocess"],
            "config": self.cfg.to_dict(),
            "epoch": metrics["epoch"],
            "step": self.step,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        }
        if self.meta.get("model_args") is not None:
            state["model_args"] = self.meta["model_args"]
        path = self.run_dir / "checkpoints" / "best.pt"
        self._write("checkpoints/best.pt", lambda: save_checkpoint(state, path))

    def _non_finite(self, epoch: int, batch: int) -> None:
        last = self.run_dir / "checkpoints" / "last.pt"
        kept = "no checkpoint was written yet"
        if last.exists():
            kept = f"the last good checkpoint is kept: {last}"
        where = f"epoch {epoch + 1}, before batch {batch} of {self.batches}"
        if batch == 0:  # found when saving the checkpoint that ends epoch ``epoch``
            where = f"at the end of epoch {epoch}"
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite ({where}, optimizer step {self.step}); "
            f"training stopped and {kept}. Usual fixes: "
            f"a lower learning rate (now optim.lr={self.cfg.optim.lr}), a longer warmup "
            "(schedule.warmup_epochs=1), gradient clipping (clip_grad=1.0), or precision=fp32."
        )

    # --------------------------------------------------------------- the loop
    def _sync_flags(self, signals: StopSignals) -> tuple[bool, bool]:
        """(stop requested, loss non-finite) agreed by every process (one small all-reduce)."""
        flags = torch.tensor(
            [float(signals.received is not None), float(not torch.isfinite(self.stats.totals[0]))],
            device=self.device,
        )
        if self.dist.enabled:
            all_reduce_sum(flags)
        stop, bad = flags.tolist()
        return stop > 0, bad > 0

    def _interrupt(self, signals: StopSignals, epoch: int, batch: int) -> None:
        self._save_last(epoch, batch)
        signum = signals.received or 15
        name = StopSignals.name(signum)
        self.loggers.close("KILLED")
        command = "finetune" if getattr(self.cfg, "finetune", None) is not None else "train"
        msg = (f"received {name} at epoch {epoch + 1}/{self.epochs}, batch {batch}/{self.batches}; "
               f"saved {self.run_dir / 'checkpoints' / 'last.pt'}. Resume with: "
               f"reslab {command} --resume {self.run_dir}")  # fmt: skip
        self.log(msg)
        raise TrainingInterrupted(signum, msg)

    def _train_epoch(self, epoch: int, start: int, signals: StopSignals) -> None:
        loader = self.train_loader
        loader.set_epoch(epoch)
        self.train_model.train()
        t_start = time.perf_counter()
        seconds_before = self.epoch_seconds
        clock = {"start": t_start, "last_sync": t_start, "images": 0}
        with EpochProgress(self.batches, epoch, self.epochs, self.dist.is_main, start) as bar:
            for b, (x, y) in enumerate(loader.iter_from(start), start=start):
                update = (b + 1) % self.accum == 0 or b + 1 == self.batches
                self.train_step(x, y, epoch, b, update, self.stats)
                clock["images"] += len(y)
                self.epoch_seconds = seconds_before + time.perf_counter() - t_start
                if update:
                    self.step += 1
                    self._after_step(epoch, b + 1, signals, bar, clock)
        self.epoch_seconds = seconds_before + time.perf_counter() - t_start

    def _after_step(self, epoch: int, done: int, signals: StopSignals, bar: EpochProgress,
                    clock: dict) -> None:  # fmt: skip
        """Progress, stop requests, NaN checks and mid-epoch checkpoints after an optimizer
        step; ``done`` batches of the epoch are finished."""
        now = time.perf_counter()
        # Host syncs only every log_every steps; a lone process with a live bar also
        # refreshes it each second (the ranks of a DDP run must sync at the same steps).
        due = self.step % self.cfg.log_every == 0 or (
            bar.active and not self.dist.enabled and now - clock["last_sync"] > 1.0
        )
        if due or (self.dist.enabled and signals.received):
            clock["last_sync"] = now
            stop, bad = self._sync_flags(signals)
            if bad:
                self._non_finite(epoch, done)
            if bar.active:
                r = self.stats.read()
                rate = clock["images"] * self.dist.world_size / max(now - clock["start"], 1e-9)
                bar.update(done, r["loss"], r["acc"], self._lr(), rate)
            if stop:
                self._interrupt(signals, epoch, done)
        elif not self.dist.enabled and signals.received:
            self._interrupt(signals, epoch, done)
        every = self.cfg.checkpoint_every_steps
        if every and self.step % every == 0 and done < self.batches:
            self._save_last(epoch, done)
            if self.dist.is_main and not bar.active:
                where = f"epoch {epoch + 1}, batch {done}/{self.batches}, step {self.step}"
                self.log(f"checkpoint: {where}")

    def _lr(self) -> float:
        g = self.optimizer.param_groups[0]
        return float(g["lr"]) / float(g.get("lr_scale", 1.0) or 1.0)

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        train = self.stats.read(reduce=self.dist.enabled)
        if not math.isfinite(train["loss"]):
            self._non_finite(epoch, self.batches)
        self.images += int(train["count"])
        self.train_seconds += self.epoch_seconds
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "val_loss": None,
            "val_acc": None,
            "lr": self._lr(),
            "seconds": round(self.epoch_seconds, 3),
            "images_per_s": round(train["count"] / max(self.epoch_seconds, 1e-9), 1),
            "step": self.step,
        }
        if self.val_loader is not None:
            val = evaluate(self._eval_model(), self.val_loader, self.precision,
                           total=self.meta.get("val_total"), rank=self.dist.rank,
                           world_size=self.dist.world_size)  # fmt: skip
            if not math.isfinite(val["loss"]):
                self._non_finite(epoch, self.batches)
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
        metric = row["val_acc"] if row["val_acc"] is not None else row["train_acc"]
        improved = self.best_metric is None or metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, epoch + 1
        self.history.append(row)
        if self.dist.is_main:
            if improved:
                self._save_best(row)
            self._write("metrics.jsonl/metrics.csv", lambda: self.files.write(self.history))
            self.loggers.log_metrics(row, step=epoch + 1)
        for cb in self.callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(self, epoch, row)
        self.stats = RunningStats(self.device)
        self.epoch_seconds = 0.0
        self._save_last(epoch + 1, 0)
        self.log(self._epoch_line(row, improved))
        return row

    def _epoch_line(self, row: dict[str, Any], best: bool) -> str:
        parts = [f"epoch {row['epoch']}/{self.epochs}",
                 f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"]  # fmt: skip
        if row["val_acc"] is not None:
            parts.append(f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
        parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:,.0f} img/s",
                  f"{row['seconds']:.1f} s"]  # fmt: skip
        return "  ".join(parts) + ("  *best" if best else "")

    def fit(self) -> RunResult:
        """Trains from the current position to the last epoch (or an early stop)."""
        self._t0 = time.perf_counter()
        for cb in self.callbacks:
            if hasattr(cb, "on_fit_start"):
                cb.on_fit_start(self)
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        status = "FINISHED"
        try:
            with StopSignals() as signals:
                epoch, start = self.epoch, self.start_batch
                while epoch < self.epochs and not self.should_stop:
                    self.epoch = epoch
                    if start == 0:
                        for cb in self.callbacks:
                            if hasattr(cb, "on_epoch_start"):
                                cb.on_epoch_start(self, epoch)
                    self._train_epoch(epoch, start, signals)
                    self._end_epoch(epoch)
                    epoch, start = epoch + 1, 0
                    stop = signals.received is not None
                    if self.dist.enabled:
                        stop = self._sync_flags(signals)[0]
                    if stop and epoch < self.epochs:  # arrived during validation
                        self._interrupt(signals, epoch, 0)
        except NonFiniteLossError:
            status = "FAILED"
            self.loggers.close(status)
            raise
        return self._finish()

    # --------------------------------------------------------------- the end
    def _best_weights(self) -> dict[str, torch.Tensor]:
        best = self.run_dir / "checkpoints" / "best.pt"
        if best.exists():
            from ..files import load_checkpoint

            return load_checkpoint(best, map_location=self.device)["model"]
        return self._eval_model().state_dict()

    def _finish(self) -> RunResult:
        wall = self.wall_offset + time.perf_counter() - self._t0
        last = self.history[-1] if self.history else {}
        final: dict[str, Any] = dict(last)
        early = self.should_stop and len(self.history) < self.epochs
        final["stopped"] = "early_stop" if early else "completed"
        if self.dist.is_main:
            weights = self._best_weights()
            model = copy.deepcopy(self._eval_model())
            model.load_state_dict(weights)
            if self.test_loader is not None:
                test = evaluate(model, self.test_loader, self.precision)
                final["test_loss"], final["test_acc"] = test["loss"], test["acc"]
            self._write_safetensors(weights)
        images_per_s = self.images / max(self.train_seconds, 1e-9)
        result = RunResult(self.run_dir, self.best_metric, self.best_epoch, list(self.history),
                           wall, images_per_s, final)  # fmt: skip
        if self.dist.is_main:
            self._write_summary(result)
            self.loggers.log_metrics({k: final[k] for k in ("test_acc", "test_loss") if k in final},
                                     step=len(self.history))  # fmt: skip
            self.loggers.close("FINISHED")
            self.log(self._summary_line(result))
        barrier()
        return result

    def _write_safetensors(self, weights: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save as st_save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
        meta = {"format": "reslab", "classes": json.dumps(list(self.meta["classes"])),
                "preprocess": json.dumps(self.meta["preprocess"])}  # fmt: skip
        if self.meta.get("model_args") is not None:
            meta["model_args"] = json.dumps(self.meta["model_args"])
        data = st_save(tensors, metadata=meta)
        atomic_write_bytes(self.run_dir / "model.safetensors", lambda f: f.write(data))

    def _write_summary(self, r: RunResult) -> None:
        write_json(self.run_dir / "summary.json", {
            "run_dir": str(r.run_dir),
            "model": self.meta.get("model_args", {}) or {},
            "data": self.cfg.data.source,
            "best_metric": r.best_metric,
            "best_metric_name": "val_acc" if self.val_loader is not None else "train_acc",
            "best_epoch": r.best_epoch,
            "epochs_run": len(r.history),
            "epochs": self.epochs,
            "test_acc": r.final.get("test_acc"),
            "test_loss": r.final.get("test_loss"),
            "wall_time_s": round(r.wall_time_s, 2),
            "train_time_s": round(self.train_seconds, 2),
            "images_per_s": round(r.images_per_s, 1),
            "precision": self.precision.describe(),
            "world_size": self.dist.world_size,
            "stopped": r.final.get("stopped"),
            "final": r.final,
        })  # fmt: skip

    def _summary_line(self, r: RunResult) -> str:
        name = "val acc" if self.val_loader is not None else "train acc"
        best = f"{100 * (r.best_metric or 0):.2f}% at epoch {r.best_epoch}/{self.epochs}"
        parts = [f"done: best {name} {best}"]
        if "test_acc" in r.final:
            parts.append(f"test acc {100 * r.final['test_acc']:.2f}%")
        parts += [f"wall time {_fmt_time(r.wall_time_s)}", f"{r.images_per_s:,.0f} img/s",
                  f"run folder {r.run_dir}"]  # fmt: skip
        return "; ".join(parts)
