"""The config -> objects assembler: a ``TrainConfig`` becomes the ``Trainer``'s explicit
objects (run folder, data bundle, loaders, model, optimizer, schedule, scaler, EMA, step,
loggers, DDP wrapper), in the order that fails cheapest first: the run folder and a
resume's settings, then trackers, then data, then the model. Nothing is written into the
run folder before these checks pass.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .. import cpu_memory
from ..config import TrainConfig, check_resume, save_config
from ..data.splits import limit_split
from ..device import resolve_precision
from ..errors import ConfigError, DataError
from ..files import load_checkpoint, write_json
from ..models import fused as fused_bn
from ..run_folder import RunFolder, RunLock, RunLog
from .batch_size import batch_sizes, check_batch_norm_batch, smallest_batch
from .callbacks import EarlyStopping
from .cuda_graphs import compile_model
from .distributed import DistInfo, broadcast_object, wrap_ddp
from .ema import ModelEma
from .loggers import Loggers, check_trackers, make_loggers
from .optim import build_optimizer
from .schedule import build_schedule
from .state import seed_everything
from .step import TrainStep
from .trainer import Trainer


def load_data(cfg: TrainConfig, data, in_chans: int | None, log):
    """``data`` when given, else ``load_dataset`` with the ``data`` section's settings."""
    if data is not None:
        return data
    if not cfg.data.source:
        raise ConfigError("data.source is empty: pass --data (an image folder, a CSV manifest, or a "
                          "built-in such as fashion-mnist or digits).")  # fmt: skip
    from ..data import load_dataset

    return load_dataset(
        cfg.data.source, val_fraction=cfg.data.val_fraction, seed=cfg.seed,
        image_size=cfg.data.image_size, in_chans=in_chans, in_memory=cfg.data.in_memory,
        check=cfg.data.check, log=log,
    )  # fmt: skip


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    """``create_model`` with the ``model`` section's from-scratch options."""
    from ..models import create_model

    m = cfg.model
    kwargs: dict[str, Any] = {}
    # only arguments that differ from the architecture's defaults, so model_args stay short
    for key, default in (("drop_rate", 0.0), ("drop_path_rate", 0.0), ("zero_init_residual", False),
                         ("norm_layer", "batchnorm"), ("grad_checkpointing", False)):  # fmt: skip
        value = getattr(m, key)
        if value != default:
            kwargs[key] = value
    return create_model(m.name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _on_rank0(info: DistInfo, work) -> Any:
    """Runs ``work()`` on rank 0; every rank gets its result, or raises its ConfigError."""
    out: tuple[Any, str | None] = (None, None)
    if info.is_main:
        try:
            out = (work(), None)
        except ConfigError as e:
            out = (None, str(e))
    out = broadcast_object(out)
    if out[1] is not None:
        raise ConfigError(out[1])
    return out[0]


class TrainerBuilder:
    """Turns the config into the trainer's objects, cheapest checks first."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, device: torch.device, threads: int,
                 resume: bool):  # fmt: skip
        self.cfg, self.info, self.device, self.threads = cfg, info, device, threads
        self.batch = batch_sizes(cfg, info.world_size)
        self.lock: RunLock | None = None
        self.folder = self._open_folder(resume)
        self.run_dir = self.folder.path
        self.log = RunLog(self.folder.log, enabled=info.is_main)
        if self.ckpt is not None:
            self._announce_resume()
        self.precision = resolve_precision(device, cfg.precision)
        backend = "nccl" if device.type == "cuda" else "gloo"
        where = f"{info.world_size} processes ({backend}), " if info.enabled else ""
        self.log(f"precision: {self.precision.describe()}; {where}{threads} CPU thread(s) per process")
        if device.type == "cpu":
            self.log(cpu_memory.describe())
        self._warn_if_busy()

    def _warn_if_busy(self) -> None:
        # OpenMP threads spin-wait for each other; on cores other programs keep busy they
        # stall, and a 2-thread run can be several times slower than a 1-thread one.
        if self.device.type != "cpu" or not hasattr(os, "getloadavg") or self.threads < 2:
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        load = os.getloadavg()[0]
        if load > 1.5 * (cores or 1):
            self.log(f"warning: the CPU is busy (load {load:.1f} on {cores} cores); {self.threads} "
                     "threads will wait on each other. threads=1 is often faster on a shared machine.")  # fmt: skip

    def _open_folder(self, resume: bool) -> RunFolder:
        """Checks the folder (and a resume's settings) without writing, then locks and
        creates it: a refused run leaves the folder byte-for-byte as it was."""
        cfg = self.cfg
        name = cfg.model.name

        def check() -> str:
            from ..data.sources import check_out_not_inside

            folder = RunFolder(cfg.out) if cfg.out else RunFolder.default(name)
            if cfg.data.source:
                check_out_not_inside(cfg.data.source, folder.path)
            folder.check_writable(resume=resume, overwrite=cfg.overwrite)
            return str(folder.path)

        folder = RunFolder(_on_rank0(self.info, check))
        check_trackers(cfg.log)
        self.ckpt, self.resume_changes = None, []
        if resume:
            self.ckpt = load_checkpoint(folder.last, map_location="cpu")
            self.resume_changes = check_resume(self.ckpt.get("config", {}), cfg.to_dict(), str(folder.path))

        def create() -> None:
            self.lock = folder.lock() if folder.path.is_dir() else None
            folder.create()
            if self.lock is None:  # a new folder: lock it now that it exists
                self.lock = folder.lock()

        _on_rank0(self.info, create)
        return folder

    def close(self) -> None:
        """Releases the run folder's lock."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _announce_resume(self) -> None:
        ckpt = self.ckpt
        if self.resume_changes:
            self.log("resuming with changed settings: " + "; ".join(self.resume_changes))
        s = ckpt["sampler"]
        self.log(f"resuming {self.run_dir}: epoch {s['epoch'] + 1}, batch {s['batch']}/{s['batches']}, "
                 f"step {ckpt['step']}")  # fmt: skip

    def build(self, model, param_groups, callbacks, data, loss_fn=None) -> Trainer:
        cfg, info = self.cfg, self.info
        # ---- data
        in_chans = getattr(model, "in_chans", None) if model is not None else None
        bundle = load_data(cfg, data, in_chans or cfg.model.in_chans or cfg.data.in_chans, self.log)
        # after the data's checks: the first load on a machine compiles the kernel (~30 s)
        fused = fused_bn.enable_for(self.precision, self.log)
        if fused:
            self.log(fused)
        splits = {
            "train": limit_split(bundle.train, cfg.data.limit_train, cfg.seed),
            "val": limit_split(bundle.val, cfg.data.limit_val, cfg.seed + 1),
            "test": limit_split(bundle.test, cfg.data.limit_val, cfg.seed + 2),
        }
        if not cfg.eval_test:
            splits["test"] = None
        classes = list(bundle.classes)
        if splits["val"] is None and cfg.early_stop.patience:
            raise ConfigError("early_stop.patience needs a validation split, but the data has none; "
                              "set data.val_fraction > 0 or early_stop.patience=0.")  # fmt: skip
        # ---- model
        model = self._model(model, classes, bundle.in_chans)
        loaders = self._loaders(splits, bundle.preprocess)
        check_batch_norm_batch(model, smallest_batch(loaders["train"]), cfg.model.sync_bn,
                               self.info.world_size, self.log)  # fmt: skip
        # ---- optimisation
        step = self._step(model, param_groups, loaders["train"], splits["train"], len(classes), loss_fn)
        all_callbacks = list(callbacks)
        es = cfg.early_stop
        if es.patience:
            all_callbacks.append(EarlyStopping(es.patience, es.metric, es.min_delta))
        self._announce(bundle, splits, model, step, loaders["train"].sizes)
        loggers = Loggers([])
        if info.is_main:
            loggers = make_loggers(cfg.log, self.run_dir, cfg, self.log)
        meta = {"classes": classes, "preprocess": bundle.preprocess,
                "model_args": getattr(model, "model_args", None), "split_info": bundle.split_info,
                "val_total": len(splits["val"]) if splits["val"] is not None else None}  # fmt: skip
        if self.ckpt is not None and list(self.ckpt["classes"]) != classes:
            old = list(self.ckpt["classes"])
            raise DataError(
                f"cannot resume {self.run_dir}: the data now has {len(classes)} classes "
                f"{classes[:5]}..., the run was trained on {len(old)} classes {old[:5]}...; "
                "resume with the same data, or start a new run with another --out."
            )
        if info.is_main:
            save_config(cfg, self.folder.config)
            write_json(self.folder.classes, classes)
        trainer = Trainer(
            cfg, model=model, train_model=step.model, step=step, train_loader=loaders["train"],
            val_loader=loaders["val"], test_loader=loaders["test"], precision=self.precision,
            dist=info, run_dir=self.run_dir, log=self.log, loggers=loggers,
            callbacks=all_callbacks, meta=meta,
        )  # fmt: skip
        if self.ckpt is not None:
            trainer.load_state(self.ckpt)
        return trainer

    def _model(self, model: nn.Module | None, classes: list[str], in_chans: int) -> nn.Module:
        seed_everything(self.cfg.seed)
        if model is None:
            model = build_model(self.cfg, len(classes), in_chans)
        elif getattr(model, "num_classes", len(classes)) != len(classes):
            n = len(classes)
            raise DataError(
                f"the model has {model.num_classes} outputs but the data has {n} classes "
                f"({classes[:5]}...); call model.reset_classifier({n}) first."
            )
        model.to(self.device)
        if self.precision.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.info.is_main:
            # last.pt holds weights, optimizer state (1-2 copies) and EMA: about 4x the weights
            self.folder.check_free_space(4 * 4 * sum(p.numel() for p in model.parameters()))
        return model

    def _loaders(self, splits: dict, preprocess: dict) -> dict:
        from ..data import make_loader
        from ..data.loaders import progressive_sizes, worker_count

        cfg, info = self.cfg, self.info
        sizes_ = self.batch
        # workers capped at the cores once (one note); skipped files go to the run's log
        common = dict(preprocess=preprocess, seed=cfg.seed, device=self.device, decode=cfg.data.decode,
                      workers=worker_count(cfg.data.workers, self.log), log=self.log)  # fmt: skip
        shard = dict(rank=info.rank, world_size=info.world_size)
        out: dict[str, Any] = {"val": None, "test": None}
        ramp, sizes = cfg.data.progressive_resize, None
        if ramp is not None:
            sizes = progressive_sizes(preprocess["crop"], cfg.epochs, ramp.min_size,
                                      ramp.start_epoch, ramp.end_epoch, ramp.step)  # fmt: skip
        out["train"] = make_loader(
            splits["train"], batch_size=sizes_.micro, train=True, augment=cfg.data.augment,
            sampler=cfg.data.sampler, random_erasing=cfg.data.random_erasing, sizes=sizes,
            **shard, **common,
        )  # fmt: skip
        if len(out["train"]) == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is larger than the "
                f"{len(splits['train'])} training images; use a smaller batch."
            )
        if splits["val"] is not None and len(splits["val"]):
            out["val"] = make_loader(splits["val"], batch_size=sizes_.eval, train=False,
                                     **shard, **common)  # fmt: skip
        if splits["test"] is not None and len(splits["test"]) and info.is_main:
            out["test"] = make_loader(splits["test"], batch_size=sizes_.eval, train=False, **common)
        return out

    def _step(self, model: nn.Module, param_groups, loader, train_split,
              num_classes: int, loss_fn) -> TrainStep:  # fmt: skip
        from ..data import class_weights, mixup_cutmix

        cfg, device = self.cfg, self.device
        optimizer = build_optimizer(cfg.optim, model, param_groups)
        self.steps_per_epoch = self.batch.steps_per_epoch(len(loader))
        total = cfg.epochs * self.steps_per_epoch
        scheduler = build_schedule(optimizer, cfg.schedule, total, self.steps_per_epoch)
        scaler = torch.amp.GradScaler(device.type) if self.precision.needs_scaler else None
        ema = ModelEma(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
        weight = None
        if cfg.data.class_weights == "auto":
            weight = class_weights(train_split.labels, num_classes).to(device)
        train_model = wrap_ddp(model, self.info, device, cfg.model.sync_bn)
        if cfg.compile:
            self.log("compiling the model with torch.compile (the first steps take a while)")
            train_model = compile_model(train_model, cfg.compile_mode, device, self.log)
        return TrainStep(
            train_model, model, optimizer, scheduler, precision=self.precision,
            num_classes=num_classes, label_smoothing=cfg.label_smoothing, class_weight=weight,
            accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad, scaler=scaler, ema=ema,
            mixup=cfg.data.mixup, cutmix=cfg.data.cutmix, mix_fn=mixup_cutmix, seed=cfg.seed,
            rank=self.info.rank, loss_fn=loss_fn,
        )  # fmt: skip

    def _announce(self, bundle, splits: dict, model: nn.Module, step: TrainStep,
                  train_sizes: list[int] | None) -> None:
        cfg, groups = self.cfg, step.optimizer.param_groups
        decayed = sum(len(g["params"]) for g in groups if g["weight_decay"] > 0)
        plain = sum(len(g["params"]) for g in groups if g["weight_decay"] == 0)
        sizes = ", ".join(f"{k} {len(s)}" for k, s in splits.items() if s is not None)
        args = getattr(model, "model_args", None) or {}
        n_params = sum(p.numel() for p in model.parameters())
        self.log(f"data: {bundle.source} ({len(bundle.classes)} classes; {sizes}); "
                 f"input {bundle.preprocess['input_size']}")  # fmt: skip
        if train_sizes is not None:
            from ..data.loaders import describe_sizes

            self.log("progressive resizing: training images of "
                     + describe_sizes(train_sizes, bundle.preprocess["crop"]))
        self.log(f"model: {args.get('name', type(model).__name__)}, {n_params / 1e6:.2f}M parameters")
        o, steps = cfg.optim, self.steps_per_epoch
        self.log(
            f"optimizer: {o.name} lr {o.lr:g} wd {o.weight_decay:g} on {decayed} tensors, none on "
            f"{plain} norm/bias tensors; schedule {cfg.schedule.name} over {cfg.epochs * steps} steps "
            f"({steps}/epoch, global batch {cfg.data.batch_size})"
            + (f"; EMA decay {cfg.ema.decay}" if cfg.ema.enabled else "")
        )
        self.log(f"run folder: {self.run_dir}")
