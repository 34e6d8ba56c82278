"""``finetune(cfg)``: pretrained weights + your images -> a trained run folder.

Order of work, cheapest failure first: what the weights are (a name that does not exist
fails in milliseconds), the run folder, the data (normalised and sized as the weights
expect), the plan (strategy, BatchNorm policy, learning rate and batch size, chosen from
the data and printed with the reason), the model (head replaced for the task's classes,
first conv adapted to grey/colour), then training through ``reslab.engine.fit``: the same
run folder, checkpoints, exact resume, trackers and speed paths as ``reslab train``.
``linear`` with cached features takes a shortcut (``cached.py``) but writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from ..config import TrainConfig
from ..engine import Callback, RunResult, fit
from ..engine.distributed import dist_from_env
from ..engine.state import seed_everything
from ..errors import ConfigError
from ..files import load_checkpoint, write_json
from ..run_folder import RunFolder, RunLog
from .bn import apply_bn_policy, describe_bn
from .defaults import FinetunePlan, choose_plan
from .step_clip import StepClip, resolve_step_clip
from .strategies import (
    build_param_groups,
    describe,
    resolve_lr_decay,
    set_trainable,
    trainable_groups,
)
from .unfreeze import Unfreezer

MIN_BATCH = 8  # images per step below which even frozen-BN fine-tuning gets noisy gradients


def _weights_info(source: str) -> dict[str, Any]:
    from ..models.pretrained import weights_info

    return weights_info(source) or {}


def _user_set(section, field: str) -> bool:
    """Whether ``field`` was given in the YAML/overrides (pydantic's ``model_fields_set``)."""
    return field in section.model_fields_set


def _load_data(cfg: TrainConfig, preprocess: dict | None, log: Callable[[str], None]):
    """The task's data, sized and normalised as the weights expect (``preprocess``)."""
    from ..data import load_dataset

    if not cfg.data.source:
        raise ConfigError("data.source is empty: pass --data (an image folder, a CSV manifest, or a "
                          "built-in such as digits or fashion-mnist).")  # fmt: skip
    pre = preprocess or {}
    image_size = cfg.data.image_size or pre.get("crop")
    resize = pre.get("resize") if image_size and image_size == pre.get("crop") else None
    return load_dataset(
        cfg.data.source, val_fraction=cfg.data.val_fraction, seed=cfg.seed, image_size=image_size,
        in_chans=cfg.model.in_chans or cfg.data.in_chans, in_memory=cfg.data.in_memory,
        check=cfg.data.check, log=log, mean=pre.get("mean"), std=pre.get("std"), resize=resize,
    )  # fmt: skip


def _batch_size(cfg: TrainConfig, n_train: int) -> tuple[int, str | None]:
    """The user's batch size, or one small enough for a few steps per epoch on tiny data."""
    if _user_set(cfg.data, "batch_size"):
        return cfg.data.batch_size, None
    bs = cfg.data.batch_size
    quarter = max(n_train // 4, 1)
    if bs > quarter:
        bs = max(MIN_BATCH, 1 << (quarter.bit_length() - 1))  # largest power of two <= n/4
        bs -= bs % cfg.accum_steps
        return bs, (f"batch_size={bs} ({n_train} training images: at least 4 steps per epoch; "
                    f"the default {cfg.data.batch_size} would be one noisy step)")  # fmt: skip
    return bs, None


def _model_kwargs(cfg: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Architecture options of the weights (norm layer) plus the run's regularisation."""
    saved = dict(info.get("model_args") or {})
    kwargs = {k: saved[k] for k in ("norm_layer", "block_drop_rate") if k in saved}
    for key, default in (("drop_rate", 0.0), ("drop_path_rate", 0.0), ("grad_checkpointing", False)):
        if getattr(cfg.model, key) != default:
            kwargs[key] = getattr(cfg.model, key)
    return kwargs


def resolve_config(cfg: TrainConfig, plan: FinetunePlan, arch: str, batch_size: int,
                   image_size: int, cache: bool, run_dir: Path, *,
                   step_clip: float | None = None) -> TrainConfig:  # fmt: skip
    """The config with every ``auto`` replaced by its resolved value (saved with the run,
    so a resume or a rerun of ``config.yaml`` does exactly the same thing)."""
    ft = cfg.finetune
    decay = ft.lr_decay if plan.strategy in ("gradual", "discriminative") else None
    clip = ft.step_clip if step_clip is None else step_clip
    update = {
        "finetune": ft.model_copy(update={"strategy": plan.strategy, "bn": plan.bn, "lr_decay": decay,
                                          "cache_features": cache, "step_clip": clip}),  # fmt: skip
        "optim": cfg.optim.model_copy(update={"lr": plan.lr}),
        "data": cfg.data.model_copy(update={"batch_size": batch_size, "image_size": image_size}),
        "model": cfg.model.model_copy(update={"name": arch}),
        "out": str(run_dir),
    }
    return cfg.model_copy(update=update)


class _RecordFinetune(Callback):
    """Writes ``finetune.json`` (plan, reasons, what the weights load did) into the run folder."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_fit_start(self, trainer) -> None:
        if trainer.dist.is_main:
            write_json(Path(trainer.run_dir) / "finetune.json", self.record)


def prepare_model(
    arch: str,
    num_classes: int,
    in_chans: int,
    source: str | None,
    *,
    bn: str,
    classes: Sequence[str] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[nn.Module, Any, int]:
    """Builds ``arch`` for the task, loads ``source`` into it and applies the BN policy.

    The head is always the task's: when the weights' head has the same size but was
    trained for other classes (Fashion-MNIST's 10 garments -> 10 digits), loading it would
    start from confidently wrong logits, so it is re-initialised. It is kept only when the
    weights carry exactly the task's class names (continuing on more data of one task).

    Args:
        arch: a registered model name (the weights' architecture).
        num_classes, in_chans: the task's; the head is fresh, the first conv adapted.
        source: anything ``load_pretrained`` takes; None skips loading (resume: the
            checkpoint's weights are loaded by the engine).
        bn: ``train``, ``frozen`` or ``eval``.
        classes: the task's class names (to decide whether a same-size head is kept).
        model_kwargs: other ``create_model`` arguments.
        log: receives the load report and the BN line.
    Returns:
        ``(model, load_report or None, number of BN layers under the policy)``.
    """
    from ..models import create_model
    from ..models.pretrained import load_pretrained

    model = create_model(arch, num_classes=num_classes, in_chans=in_chans, **(model_kwargs or {}))
    report = None
    if source is not None:
        report = load_pretrained(model, source, log=None)
        theirs = list((report.info or {}).get("classes") or [])
        if report.head_loaded and (classes is None or theirs != list(classes)):
            model.reset_classifier(num_classes)
            why = f"the weights' classes {theirs[:3]}... are not the task's" if theirs else \
                "the weights do not name their classes"
            head = model.get_classifier()
            prefix = next(n for n, m in model.named_modules() if m is head)
            for k, _ in head.named_parameters():
                report.skipped[f"{prefix}.{k}"] = f"replaced by a fresh {num_classes}-class head ({why})"
        if log:
            log("pretrained: " + report.summary())
    count = apply_bn_policy(model, bn)
    if log:
        log(describe_bn(bn, count))
    return model, report, count


def finetune(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    data=None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Fine-tunes ``cfg.finetune.pretrained`` on ``cfg.data.source``.

    Args:
        cfg: a ``TrainConfig`` with a ``finetune`` section (``pretrained`` set); ``auto``
            values are chosen from the data (``defaults.choose_plan``) and printed.
        resume: continue the run in ``cfg.out`` exactly (uses its saved, resolved config
            when called through ``reslab finetune --resume``).
        callbacks: extra engine callbacks.
        data: a prebuilt ``DataBundle`` (default: loaded from ``cfg.data``, normalised as
            the weights were trained).
        log: extra sink for the start-of-run lines (they are always printed and written
            to ``log.txt``).
    Returns:
        The engine's ``RunResult``; the run folder also holds ``finetune.json``.
    Raises:
        ConfigError / DataError / WeightsError before any training for bad settings, data
        or weights.
    """
    ft = cfg.finetune
    if ft is None or not ft.pretrained:
        raise ConfigError("fine-tuning needs pretrained weights: set finetune.pretrained (--pretrained), "
                          "e.g. reslab:resnet20_fashion_mnist, torchvision:resnet18.IMAGENET1K_V1, a "
                          "weights file or a reslab run folder.")  # fmt: skip
    info_dist = dist_from_env()
    ckpt = None
    if resume:
        if not cfg.out:
            raise ConfigError("resume needs the run folder (--resume RUN_DIR).")
        ckpt = load_checkpoint(Path(cfg.out) / "checkpoints" / "last.pt")
        info = {"preprocess": ckpt.get("preprocess"), "model_args": ckpt.get("model_args"),
                "architecture": (ckpt.get("model_args") or {}).get("name")}  # fmt: skip
    else:
        info = _weights_info(ft.pretrained)  # unknown names fail here, before any work
    arch = cfg.model.name
    if info.get("architecture") and not _user_set(cfg.model, "name"):
        arch = info["architecture"]
    out = Path(cfg.out) if cfg.out else RunFolder.default(arch).path
    if info_dist.is_main:
        out = RunFolder(out).prepare(resume=resume, overwrite=cfg.overwrite).path
    run_log = RunLog(out / "log.txt", enabled=info_dist.is_main)

    def say(msg: str) -> None:
        run_log(msg)
        if log is not None:
            log(msg)

    say(f"fine-tuning {arch} from {ft.pretrained}" + (f" (resuming {out})" if resume else ""))
    bundle = data if data is not None else _load_data(cfg, info.get("preprocess"), say)
    if info.get("preprocess"):
        say(f"preprocess from the weights: input {bundle.preprocess['input_size']}, "
            f"mean {[round(m, 4) for m in bundle.preprocess['mean']]}, "
            f"std {[round(s, 4) for s in bundle.preprocess['std']]}")  # fmt: skip

    # ---- the plan: chosen from the data unless the user fixed it
    n_train = min(len(bundle.train), cfg.data.limit_train or len(bundle.train))
    batch_size, batch_why = _batch_size(cfg, n_train)
    plan = choose_plan(
        bundle.train.labels, len(bundle.classes), strategy=ft.strategy, bn=ft.bn,
        lr=cfg.optim.lr if _user_set(cfg.optim, "lr") else None, optimizer=cfg.optim.name,
        batch_size=batch_size,
    )  # fmt: skip
    if batch_why:
        plan.reasons.append(batch_why)
    if ft.lr_decay is not None and ft.lr_decay < 1 and plan.strategy in ("linear", "full"):
        plan.reasons.append(f"lr_decay={ft.lr_decay} ignored: it does nothing with strategy={plan.strategy}")
    if plan.strategy == "gradual" and info_dist.enabled:
        raise ConfigError("strategy=gradual changes which parameters train during the run, which "
                          "DistributedDataParallel does not allow; use strategy=discriminative "
                          "(layer-wise rates, everything trains) or run on one process.")  # fmt: skip
    layerwise = plan.strategy in ("gradual", "discriminative")
    lr_decay = resolve_lr_decay(plan.strategy, ft.lr_decay if layerwise else None)
    auto_cache = ft.cache_features == "auto" and _is_cpu(cfg.device)
    cache = plan.strategy == "linear" and (ft.cache_features is True or auto_cache)
    step_clip, clip_why = resolve_step_clip(ft.step_clip, plan.strategy, plan.bn, cfg.optim.name)
    if clip_why:
        plan.reasons.append(clip_why)
    if cache and cfg.data.progressive_resize is not None:
        plan.reasons.append("data.progressive_resize ignored: the features are cached once, at full "
                            "size (finetune.cache_features=false trains on resized images)")
    if ft.cache_features is True and plan.strategy != "linear":
        raise ConfigError(f"finetune.cache_features=true needs strategy=linear (the backbone must be "
                          f"frozen for features to stay fixed), but the strategy is {plan.strategy}.")  # fmt: skip
    say(f"plan ({plan.images_per_class:g} images per class, {n_train} training images):")
    for r in plan.reasons:
        say(f"  {r}")

    # ---- the model (seeded: the fresh head's initialisation depends only on cfg.seed)
    seed_everything(cfg.seed)
    model, report, _ = prepare_model(
        arch, len(bundle.classes), bundle.in_chans, None if resume else ft.pretrained, bn=plan.bn,
        classes=bundle.classes, model_kwargs=_model_kwargs(cfg, info), log=say,
    )  # fmt: skip
    set_trainable(model, trainable_groups(model, plan.strategy, 0, ft.unfreeze_every))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    say(f"strategy {describe(model, plan.strategy, lr_decay, ft.unfreeze_every)}; "
        f"{trainable:,} of {total:,} parameters train now"
        + ("; features cached (backbone run once, no augmentation)" if cache else ""))  # fmt: skip

    run_cfg = resolve_config(cfg, plan, arch, batch_size, bundle.preprocess["crop"], cache, out,
                             step_clip=step_clip)  # fmt: skip
    record = {
        "pretrained": ft.pretrained,
        "architecture": arch,
        "strategy": plan.strategy,
        "bn": plan.bn,
        "lr": plan.lr,
        "lr_decay": lr_decay,
        "unfreeze_every": ft.unfreeze_every,
        "cache_features": cache,
        "step_clip": step_clip,
        "batch_size": batch_size,
        "images_per_class": plan.images_per_class,
        "reasons": plan.reasons,
        "lr_scales": {g["name"]: g["lr_scale"] for g in build_param_groups(model, plan.strategy, lr_decay)},
        "weights": None if report is None else {
            "file": report.file, "layout": report.layout, "loaded": len(report.loaded),
            "skipped": report.skipped, "adapted": report.adapted, "notes": report.notes,
        },
    }
    if resume:
        prev = out / "finetune.json"
        if prev.exists():
            record["weights"] = json.loads(prev.read_text()).get("weights")
    if cache:
        from .cached import fit_linear_cached

        if info_dist.is_main:
            write_json(out / "finetune.json", record)
        return fit_linear_cached(run_cfg, model, bundle, log=run_log, resume=resume)
    groups = build_param_groups(model, plan.strategy, lr_decay)
    cbs = [Unfreezer(plan.strategy, ft.unfreeze_every), _RecordFinetune(record), *callbacks]
    if step_clip > 0:
        cbs.append(StepClip(model, step_clip))  # last, so the others' checkpoint keys stay
    return fit(run_cfg, model=model, param_groups=groups, callbacks=cbs, resume=resume, data=bundle)


def _is_cpu(device: str) -> bool:
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"
