"""The epoch loop: train, validate, log, checkpoint, stop cleanly.

``Trainer`` receives every object it uses already built (model, loaders, optimizer,
schedule, loggers, callbacks; ``build.py`` turns a config into them) and owns only the
run's progress: epoch, step, history, best metric. What its checkpoints hold is in
``checkpoint_state.py``; the files it leaves for people (summary, safetensors, log lines)
in ``artifacts.py``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..device import Precision
from ..files import load_checkpoint, save_checkpoint
from ..run_folder import RunFolder
from .artifacts import RunResult, epoch_line, summary_line, write_safetensors, write_summary
from .batch_size import batch_norm_layers, smallest_batch
from .callbacks import Callback
from .checkpoint_state import best_state, restore_training_state, training_state
from .distributed import DistInfo, all_reduce_sum, barrier
from .loggers import Loggers, MetricsFiles
from .progress import EpochProgress
from .signals import CheckpointWriteError, NonFiniteLossError, StopSignals, TrainingInterrupted
from .state import restore_rng_state
from .step import RunningStats, TrainStep, evaluate


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
                 loggers: Loggers, callbacks: Sequence[Callback], meta: dict[str, Any]):  # fmt: skip
        self.cfg = cfg
        self.model, self.train_model, self.train_step = model, train_model, step
        self.optimizer, self.scheduler = step.optimizer, step.scheduler
        self.scaler, self.ema = step.scaler, step.ema
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.precision, self.dist, self.run_dir = precision, dist, Path(run_dir)
        self.folder = RunFolder(self.run_dir)
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
        self.started = time.perf_counter()  # this session's start (wall time adds up over resumes)
        self._rng_to_restore: dict | None = None
        self.files = MetricsFiles(self.run_dir)

    # --------------------------------------------------------------- checkpoints
    def load_state(self, ckpt: dict[str, Any]) -> None:
        """Continues from a loaded ``last.pt`` (RNG states are restored when training starts)."""
        self._rng_to_restore = restore_training_state(self, ckpt)

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
            state = training_state(self, next_epoch, next_batch)
            self._write("checkpoints/last.pt", lambda: save_checkpoint(state, self.folder.last))

    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved as best: the EMA's when on."""
        return self.ema.module if self.ema is not None else self.model

    def _save_best(self, metrics: dict[str, Any]) -> None:
        state = best_state(self, metrics)
        self._write("checkpoints/best.pt", lambda: save_checkpoint(state, self.folder.best))

    def _non_finite(self, epoch: int, batch: int) -> None:
        last = self.folder.last
        kept = "no checkpoint was written yet"
        if last.exists():
            kept = f"the last good checkpoint is kept: {last}"
        where = f"epoch {epoch + 1}, before batch {batch} of {self.batches}"
        if batch == 0:  # found when saving the checkpoint that ends epoch ``epoch``
            where = f"at the end of epoch {epoch}"
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite ({where}, optimizer step {self.step}); "
            f"training stopped and {kept}. Likely causes, most likely first:\n"
            + "\n".join(f"  - {c}" for c in self._non_finite_causes())
        )

    def _non_finite_causes(self) -> list[str]:
        """What may have made the loss non-finite, from what this run knows about itself."""
        causes = []
        batch = smallest_batch(self.train_loader)
        if batch <= 3 and batch_norm_layers(self.model):
            causes.append(f"BatchNorm over batches of {batch} image(s): its batch statistics are "
                          "noise; use data.batch_size >= 16 or model.norm_layer=groupnorm")  # fmt: skip
        if self.precision.dtype == torch.float16:
            causes.append("fp16 overflow: activations beyond 65504 become inf; use precision=bf16 "
                          "(same speed where supported, fp32's range) or precision=fp32")  # fmt: skip
        warm = self.cfg.schedule.warmup_epochs
        causes.append(f"a learning rate too high for this model and batch (optim.lr={self.cfg.optim.lr}): "
                      "try a lower learning rate (`reslab lr-find` suggests one)"
                      + ("" if warm else ", a warmup (schedule.warmup_epochs=1)")
                      + ("" if self.cfg.clip_grad else " or gradient clipping (clip_grad=1.0)"))  # fmt: skip
        causes.append("bad data: images with NaN/inf pixels or labels out of range; "
                      f"`reslab check {self.cfg.data.source or 'DATA'}` looks for them")  # fmt: skip
        return causes

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
               f"saved {self.folder.last}. Resume with: "
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
                loss = self.train_step(x, y, epoch, b, update, self.stats)
                clock["images"] += len(y)
                self.epoch_seconds = seconds_before + time.perf_counter() - t_start
                if update:
                    self.step += 1
                batch_metrics = {"loss": loss, "images": len(y), "step": self.step, "update": update}
                for cb in self.callbacks:
                    cb.on_batch_end(self, epoch, b, batch_metrics)
                if update:
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
            val = evaluate(self.eval_model(), self.val_loader, self.precision,
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
            cb.on_epoch_end(self, epoch, row)
        self.stats = RunningStats(self.device)
        self.epoch_seconds = 0.0
        self._save_last(epoch + 1, 0)
        self.log(epoch_line(row, self.epochs, improved))
        return row

    def run(self) -> RunResult:
        """Trains from the current position to the last epoch (or an early stop)."""
        self.started = time.perf_counter()
        for cb in self.callbacks:
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
        if self.folder.best.exists():
            return load_checkpoint(self.folder.best, map_location=self.device)["model"]
        return self.eval_model().state_dict()

    def _finish(self) -> RunResult:
        wall = self.wall_offset + time.perf_counter() - self.started
        last = self.history[-1] if self.history else {}
        final: dict[str, Any] = dict(last)
        early = self.should_stop and len(self.history) < self.epochs
        final["stopped"] = "early_stop" if early else "completed"
        if self.dist.is_main:
            weights = self._best_weights()
            model = copy.deepcopy(self.eval_model())
            model.load_state_dict(weights)
            if self.test_loader is not None:
                test = evaluate(model, self.test_loader, self.precision)
                final["test_loss"], final["test_acc"] = test["loss"], test["acc"]
            write_safetensors(self.folder.safetensors, weights, self.meta)
        images_per_s = self.images / max(self.train_seconds, 1e-9)
        result = RunResult(self.run_dir, self.best_metric, self.best_epoch, list(self.history),
                           wall, images_per_s, final)  # fmt: skip
        if self.dist.is_main:
            write_summary(result, self.cfg, model_args=self.meta.get("model_args"),
                          has_val=self.val_loader is not None, train_seconds=self.train_seconds,
                          precision=self.precision.describe(), world_size=self.dist.world_size)
            self.loggers.log_metrics({k: final[k] for k in ("test_acc", "test_loss") if k in final},
                                     step=len(self.history))  # fmt: skip
            self.loggers.close("FINISHED")
            self.log(summary_line(result, self.epochs, self.val_loader is not None))
        barrier()
        return result
