"""``fit``: a ``TrainConfig`` in, a trained run folder out.

This is where the config becomes explicit objects (data bundle, loaders, model, optimizer,
schedule, scaler, EMA, loggers, DDP wrapper), in the order that fails cheapest first:
config and output folder, then trackers, then data, then the model. ``Trainer`` runs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError, DataError
from .callbacks import Callback, EarlyStopping
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 - re-exported for callers
from .distributed import (
    DistInfo, broadcast_object, cleanup_distributed, dist_from_env, init_distributed, wrap_ddp,
)  # fmt: skip
from .ema import ModelEma
from .loggers import Loggers, check_trackers, make_loggers
from .loop import TrainStep
from .optim import build_optimizer
from .precision import resolve_device, resolve_precision, set_cpu_threads
from .run_dir import RunLog, check_free_space, default_run_dir, prepare_run_dir, write_json
from .schedule import build_schedule
from .state import seed_everything
from .trainer import RunResult, Trainer


def _device_for(cfg: TrainConfig, info: DistInfo) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        if torch.cuda.device_count() <= info.local_rank:
            raise ConfigError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} GPU(s) "
                              "are visible; use --nproc_per_node at most the number of GPUs.")  # fmt: skip
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def limit_split(split, n: int | None, seed: int):
    """The first ``n`` images of a seeded shuffle (all of them when ``n`` is None or larger)."""
    if split is None or n is None or n >= len(split):
        return split
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.subset(order.sort().values)


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def load_data(cfg: TrainConfig, data, in_chans: int | None, log):
    """``data`` when given, else ``load_dataset`` with the ``data`` section's settings."""
    if data is not None:
        return data
    if not cfg.data.source:
        raise ConfigError("data.source is empty: pass --data (an image folder, a CSV manifest, or a "
                          "built-in such as fashion-mnist or digits).")  # fmt: skip
    from ..data import load_dataset

    return load_dataset(
        cfg.data.source, val_fraction=cfg.data.val_fraction, seed=cfg.seed, image_size=cfg.data.image_size,
        in_chans=in_chans, in_memory=cfg.data.in_memory, check=cfg.data.check, log=log,
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


class _GlobalSettings:
    """Sets threads and determinism for the run and puts the previous values back after."""

    def __init__(self, cfg: TrainConfig, device: torch.device, info: DistInfo):
        self.cfg, self.device, self.info = cfg, device, info

    def __enter__(self) -> "_GlobalSettings":
        self.prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.benchmark)  # fmt: skip
        threads = self.cfg.threads
        if threads is None and self.info.enabled and self.device.type == "cpu":
            # processes on one machine share its cores
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
            threads = max(1, len(os.sched_getaffinity(0)) // max(local, 1))
        self.threads = set_cpu_threads(threads)
        if self.cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.prev[0])
        torch.use_deterministic_algorithms(self.prev[1])
        torch.backends.cudnn.benchmark = self.prev[2]


def _run_dir(cfg: TrainConfig, info: DistInfo, resume: bool) -> Path:
    """Rank 0 picks and checks the folder; every rank gets the path or the same error."""
    out: tuple[str | None, str | None] = (None, None)
    if info.is_main:
        try:
            path = Path(cfg.out) if cfg.out else default_run_dir(cfg.model.name)
            out = (str(prepare_run_dir(path, resume=resume, overwrite=cfg.overwrite)), None)
        except ConfigError as e:
            out = (None, str(e))
    out = broadcast_object(out)
    if out[1] is not None:
        raise ConfigError(out[1])
    return Path(out[0])


def fit(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    data=None,
) -> RunResult:
    """Trains a model as ``cfg`` says and writes the run folder.

    Args:
        cfg: the resolved ``TrainConfig`` (``load_config``).
        model: a prebuilt model (e.g. fine-tuning's pretrained one); default: built from
            ``cfg.model`` with as many classes as the data has.
        param_groups: optimizer groups ``[{"params": [...], "lr_scale": 0.1, "name": ...}]``;
            each group's rate is the scheduled rate times ``lr_scale``; norm/bias tensors of
            every group get no weight decay. Default: one group of all parameters.
        callbacks: ``Callback`` objects (see ``reslab.engine.callbacks``).
        resume: continue the run in ``cfg.out`` from ``checkpoints/last.pt``, exactly.
        data: a prebuilt ``DataBundle`` (default: ``load_dataset(cfg.data.source, ...)``).
    Returns:
        A ``RunResult`` (also written as ``summary.json``).
    Raises:
        ConfigError/DataError before training for bad settings or data;
        ``NonFiniteLossError`` when the loss diverges; ``TrainingInterrupted`` after
        SIGINT/SIGTERM (a checkpoint has been written).
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"fit expects a TrainConfig (from reslab.config.load_config), received {type(cfg).__name__}.")
    info = dist_from_env()
    world_micro = info.world_size * cfg.accum_steps
    if cfg.data.batch_size % world_micro:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must be divisible by "
            f"processes x accum_steps = {info.world_size} x {cfg.accum_steps}; e.g. use "
            f"data.batch_size={max(world_micro, cfg.data.batch_size // world_micro * world_micro)}."
        )
    if resume and not cfg.out:
        raise ConfigError("resume=True needs cfg.out: the run folder to continue (--resume RUN_DIR).")
    device = _device_for(cfg, info)
    started_group = info.enabled and not torch.distributed.is_initialized()
    init_distributed(info, device)
    try:
        with _GlobalSettings(cfg, device, info) as settings:
            return _fit(cfg, info, device, settings.threads, model, param_groups, callbacks, resume, data)
    finally:
        if started_group:
            cleanup_distributed()


def _fit(cfg, info, device, threads, model, param_groups, callbacks, resume, data) -> RunResult:
    run_dir = _run_dir(cfg, info, resume)
    log = RunLog(run_dir / "log.txt", enabled=info.is_main)
    check_trackers(cfg.log)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
        changes = _config_changes(ckpt.get("config", {}), cfg.to_dict())
        changes = [c for c in changes if not c.startswith(("out:", "log:", "data.workers:", "tracking."))]
        if changes:
            log("warning: resuming with changed settings (the resume is exact only without changes): "
                + "; ".join(changes))  # fmt: skip
        s = ckpt["sampler"]
        log(f"resuming {run_dir}: epoch {s['epoch'] + 1}, batch {s['batch']}/{s['batches']}, step {ckpt['step']}")

    precision = resolve_precision(device, cfg.precision)
    where = f"{info.world_size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), " if info.enabled else ""
    log(f"precision: {precision.describe()}; {where}{threads} CPU thread(s) per process")

    # ---- data
    in_chans = getattr(model, "in_chans", None) if model is not None else (cfg.model.in_chans or cfg.data.in_chans)
    bundle = load_data(cfg, data, in_chans, log)
    train_split = limit_split(bundle.train, cfg.data.limit_train, cfg.seed)
    val_split = limit_split(bundle.val, cfg.data.limit_val, cfg.seed + 1)
    test_split = limit_split(bundle.test, cfg.data.limit_val, cfg.seed + 2) if cfg.eval_test else None
    classes = list(bundle.classes)
    if val_split is None and cfg.early_stop.patience:
        raise ConfigError("early_stop.patience needs a validation split, but the data has none; "
                          "set data.val_fraction > 0 or early_stop.patience=0.")  # fmt: skip

    # ---- model
    seed_everything(cfg.seed)
    if model is None:
        model = build_model(cfg, len(classes), bundle.in_chans)
    elif getattr(model, "num_classes", len(classes)) not in (len(classes),):
        raise DataError(f"the model has {model.num_classes} outputs but the data has {len(classes)} classes "
                        f"({classes[:5]}...); call model.reset_classifier({len(classes)}) first.")  # fmt: skip
    model_args = getattr(model, "model_args", None)
    model.to(device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    if info.is_main:
        # last.pt holds weights, optimizer state (1-2 copies) and EMA: about 4x the weights
        check_free_space(run_dir, 4 * 4 * n_params)

    # ---- loaders
    from ..data import make_loader

    micro = cfg.data.batch_size // (info.world_size * cfg.accum_steps)
    eval_bs = max(1, (cfg.data.eval_batch_size or 2 * cfg.data.batch_size) // info.world_size)
    common = dict(preprocess=bundle.preprocess, seed=cfg.seed, device=device, workers=cfg.data.workers)
    train_loader = make_loader(train_split, batch_size=micro, train=True, augment=cfg.data.augment,
                               sampler=cfg.data.sampler, rank=info.rank, world_size=info.world_size,
                               random_erasing=cfg.data.random_erasing, **common)  # fmt: skip
    if len(train_loader) == 0:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_split)} "
                          "training images; use a smaller batch.")  # fmt: skip
    val_loader = None
    if val_split is not None and len(val_split):
        val_loader = make_loader(val_split, batch_size=eval_bs, train=False, rank=info.rank,
                                 world_size=info.world_size, **common)  # fmt: skip
    test_loader = None
    if test_split is not None and len(test_split) and info.is_main:
        test_loader = make_loader(test_split, batch_size=max(eval_bs, 1), train=False, **common)

    # ---- optimisation
    optimizer = build_optimizer(cfg.optim, model, param_groups)
    steps_per_epoch = -(-len(train_loader) // cfg.accum_steps)
    scheduler = build_schedule(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    ema = ModelEma(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    weight = None
    if cfg.data.class_weights == "auto":
        from ..data import class_weights

        weight = class_weights(train_split.labels, len(classes)).to(device)
    train_model = wrap_ddp(model, info, device, cfg.model.sync_bn)
    if cfg.compile:
        log("compiling the model with torch.compile (the first steps take a while)")
        train_model = torch.compile(train_model)
    from ..data import mixup_cutmix

    step = TrainStep(train_model, model, optimizer, scheduler, precision=precision, num_classes=len(classes),
                     label_smoothing=cfg.label_smoothing, class_weight=weight, accum_steps=cfg.accum_steps,
                     clip_grad=cfg.clip_grad, scaler=scaler, ema=ema, mixup=cfg.data.mixup,
                     cutmix=cfg.data.cutmix, mix_fn=mixup_cutmix, seed=cfg.seed, rank=info.rank)  # fmt: skip

    all_callbacks = list(callbacks)
    if cfg.early_stop.patience:
        all_callbacks.append(EarlyStopping(cfg.early_stop.patience, cfg.early_stop.metric, cfg.early_stop.min_delta))

    decayed = sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] > 0)
    plain = sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] == 0)
    sizes = ", ".join(f"{s.name} {len(s)}" for s in (train_split, val_split, test_split) if s is not None)
    log(f"data: {bundle.source} ({len(classes)} classes; {sizes}); input {bundle.preprocess['input_size']}")
    log(f"model: {model_args.get('name') if model_args else type(model).__name__}, {n_params / 1e6:.2f}M parameters")
    log(f"optimizer: {cfg.optim.name} lr {cfg.optim.lr:g} wd {cfg.optim.weight_decay:g} on {decayed} tensors, "
        f"none on {plain} norm/bias tensors; schedule {cfg.schedule.name} over {cfg.epochs * steps_per_epoch} "
        f"steps ({steps_per_epoch}/epoch, global batch {cfg.data.batch_size})"
        + (f"; EMA decay {cfg.ema.decay}" if ema else ""))  # fmt: skip
    log(f"run folder: {run_dir}")

    loggers = make_loggers(cfg.log, run_dir, cfg, log) if info.is_main else Loggers([])
    meta = {"classes": classes, "preprocess": bundle.preprocess, "model_args": model_args,
            "split_info": bundle.split_info, "val_total": len(val_split) if val_split is not None else None}  # fmt: skip
    if info.is_main:
        from ..config import save_config

        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / "classes.json", classes)
    trainer = Trainer(cfg, model=model, train_model=train_model, step=step, train_loader=train_loader,
                      val_loader=val_loader, test_loader=test_loader, precision=precision, dist=info,
                      run_dir=run_dir, log=log, loggers=loggers, callbacks=all_callbacks, meta=meta)  # fmt: skip
    if ckpt is not None:
        trainer.load_state(ckpt)
    return trainer.fit()
