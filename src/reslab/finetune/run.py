"""Runs a fine-tuning plan: ``finetune(cfg)``, pretrained weights + your images -> a trained run folder.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config import TrainConfig, check_resume
from ..engine import Callback, RunResult, fit
from ..engine.distributed import dist_from_env
from ..engine.state import seed_everything
from ..errors import ConfigError
from ..files import load_checkpoint, write_json
from ..run_folder import RunFolder, RunLog
from .bn import apply_bn_policy, describe_bn
from .cached import fit_linear_cached
from .plan import DataFacts, FinetunePlan, WeightsFacts, plan_finetune, resolved_config
from .step_clip import StepClip
from .strategies import build_param_groups, describe, set_trainable, trainable_groups
from .unfreeze import Unfreezer

FINETUNE_RECORD = "finetune.json"  # the plan, its reasons and the weights load, next to config.yaml


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


def _model_kwargs(cfg: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Architecture options of the weights (norm layer) plus the run's regularisation."""
    saved = dict(info.get("model_args") or {})
    kwargs = {k: saved[k] for k in ("norm_layer", "block_drop_rate") if k in saved}
    for key, default in (("drop_rate", 0.0), ("drop_path_rate", 0.0), ("grad_checkpointing", False)):
        if getattr(cfg.model, key) != default:
            kwargs[key] = getattr(cfg.model, key)
    return kwargs


class _RecordFinetune(Callback):
    """Writes ``finetune.json`` (plan, reasons, what the weights load did) into the run folder."""

    def __init__(self, record: dict[str, Any]):
        self.record = record

    def on_fit_start(self, trainer) -> None:
        if trainer.dist.is_main:
            write_json(Path(trainer.run_dir) / FINETUNE_RECORD, self.record)


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


@dataclass
class FinetuneResult(RunResult):
    """``fit``'s ``RunResult`` plus the plan the run followed (``plan.reasons`` say why)."""

    plan: FinetunePlan | None = None


def _check_pretrained(cfg: TrainConfig) -> None:
    ft = cfg.finetune
    if ft is None or not ft.pretrained:
        raise ConfigError("fine-tuning needs pretrained weights: set finetune.pretrained (--pretrained), "
                          "e.g. reslab:resnet20_fashion_mnist, torchvision:resnet18.IMAGENET1K_V1, a "
                          "weights file or a reslab run folder.")  # fmt: skip


def _source_info(cfg: TrainConfig, resume: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What the weights are: the catalog's record, or on resume the run's own checkpoint.

    Returns:
        ``(info, stored config)``: the stored config is the checkpoint's (resume only),
        against which the resume's settings are checked.
    """
    if not resume:
        return _weights_info(cfg.finetune.pretrained), None  # unknown names fail here, before any work
    ckpt = load_checkpoint(RunFolder(cfg.out).last)
    info = {"preprocess": ckpt.get("preprocess"), "model_args": ckpt.get("model_args"),
            "architecture": (ckpt.get("model_args") or {}).get("name")}  # fmt: skip
    return info, ckpt.get("config") or {}


class _StartLog:
    """Prints the start-of-run lines at once and writes them to ``log.txt`` only once the
    run folder may be written (``open``), so a refused run leaves the folder untouched.

    Args:
        extra: another sink for every line (``finetune``'s ``log``), or None.
        enabled: this process writes (rank 0).
    """

    def __init__(self, extra: Callable[[str], None] | None, enabled: bool):
        self.run_log = RunLog(None, enabled=enabled)
        self.extra = extra
        self.pending: list[str] = []

    def __call__(self, msg: str) -> None:
        self.run_log(msg)
        if self.run_log.path is None and self.run_log.enabled:
            self.pending.append(msg)
        if self.extra is not None:
            self.extra(msg)

    def open(self, path: Path) -> None:
        """From now on lines go to ``path`` too, the ones said so far first."""
        self.run_log.path = Path(path)
        if self.run_log.enabled and self.pending:
            with open(path, "a") as f:
                f.write("".join(m + "\n" for m in self.pending))
        self.pending = []


def _record(cfg: TrainConfig, plan: FinetunePlan, arch: str, model: nn.Module, report, out: Path,
            resume: bool) -> dict[str, Any]:  # fmt: skip
    """``finetune.json``: the plan, its reasons and what loading the weights did."""
    record = {
        "pretrained": cfg.finetune.pretrained, "architecture": arch, "strategy": plan.strategy,
        "bn": plan.bn, "lr": plan.lr, "lr_decay": plan.lr_decay, "unfreeze_every": cfg.finetune.unfreeze_every,
        "cache_features": plan.cache_features, "step_clip": plan.step_clip, "batch_size": plan.batch_size,
        "images_per_class": plan.images_per_class, "reasons": plan.reasons,
        "lr_scales": {g["name"]: g["lr_scale"] for g in build_param_groups(model, plan.strategy, plan.lr_decay)},
        "weights": None if report is None else {
            "file": report.file, "layout": report.layout, "loaded": len(report.loaded),
            "skipped": report.skipped, "adapted": report.adapted, "notes": report.notes,
        },
    }  # fmt: skip
    prev = out / FINETUNE_RECORD
    if resume and prev.exists():  # the weights were loaded by the first run, not this one
        record["weights"] = json.loads(prev.read_text()).get("weights")
    return record


def _model_for_plan(cfg: TrainConfig, plan: FinetunePlan, arch: str, bundle, info: dict[str, Any],
                    source: str | None, say: Callable[[str], None]) -> tuple[nn.Module, Any]:  # fmt: skip
    """The pretrained model set up as the plan says: head for the task, BN policy, the
    first phase's trainable groups. Returns ``(model, load report or None)``."""
    ft = cfg.finetune
    seed_everything(cfg.seed)  # the fresh head's initialisation depends only on cfg.seed
    model, report, _ = prepare_model(
        arch, len(bundle.classes), bundle.in_chans, source, bn=plan.bn,
        classes=bundle.classes, model_kwargs=_model_kwargs(cfg, info), log=say,
    )  # fmt: skip
    set_trainable(model, trainable_groups(model, plan.strategy, 0, ft.unfreeze_every))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    say(f"strategy {describe(model, plan.strategy, plan.lr_decay, ft.unfreeze_every)}; "
        f"{trainable:,} of {total:,} parameters train now"
        + ("; features cached (backbone run once, no augmentation)" if plan.cache_features else ""))  # fmt: skip
    return model, report


def finetune(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    data=None,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tunes ``cfg.finetune.pretrained`` on ``cfg.data.source``.

    Args:
        cfg: a ``TrainConfig`` with a ``finetune`` section (``pretrained`` set); ``auto``
            values are chosen from the data (``plan.plan_finetune``) and printed.
        resume: continue the run in ``cfg.out`` exactly (uses its saved, resolved config
            when called through ``reslab finetune --resume``).
        callbacks: extra engine callbacks.
        data: a prebuilt ``DataBundle`` (default: loaded from ``cfg.data``, normalised as
            the weights were trained).
        log: extra sink for the start-of-run lines (they are always printed and written
            to ``log.txt``).
    Returns:
        A ``FinetuneResult``: the engine's ``RunResult`` plus the ``plan``; the run folder
        also holds ``finetune.json``.
    Raises:
        ConfigError / DataError / WeightsError before any training for bad settings, data
        or weights.
    """
    _check_pretrained(cfg)
    ft = cfg.finetune
    dist = dist_from_env()
    folder = RunFolder(cfg.out) if cfg.out else None
    if resume:
        if folder is None:
            raise ConfigError("resume needs the run folder (--resume RUN_DIR).")
        if dist.is_main:  # reads only; a folder without last.pt is refused before loading it
            folder.check_writable(resume=True, overwrite=cfg.overwrite)
    info, stored = _source_info(cfg, resume)
    arch = info["architecture"] if info.get("architecture") and not _user_set(cfg.model, "name") else cfg.model.name
    if not resume:
        folder = folder or RunFolder.default(arch)
        if dist.is_main:
            folder.check_writable(resume=False, overwrite=cfg.overwrite)  # reads only
    say = _StartLog(log, enabled=dist.is_main)
    say(f"fine-tuning {arch} from {ft.pretrained}" + (f" (resuming {folder.path})" if resume else ""))
    bundle = data if data is not None else _load_data(cfg, info.get("preprocess"), say)
    plan = _plan(cfg, bundle, info, dist.enabled, say)
    run_cfg = resolved_config(cfg, plan, arch=arch, image_size=bundle.preprocess["crop"], out=str(folder.path))
    if resume:  # before the first write: a refused resume leaves the folder byte-identical
        changes = check_resume(stored, run_cfg.to_dict(), str(folder.path))
        if changes and plan.cache_features:  # fit says it itself
            say("resuming with changed settings: " + "; ".join(changes))
    if dist.is_main:
        folder.create()
    say.open(folder.log)
    out = folder.path
    model, report = _model_for_plan(cfg, plan, arch, bundle, info, None if resume else ft.pretrained, say)
    record = _record(cfg, plan, arch, model, report, out, resume)
    if plan.cache_features:
        result = fit_linear_cached(run_cfg, model, bundle, log=say.run_log, resume=resume,
                                   extra_json={FINETUNE_RECORD: record})  # fmt: skip
    else:
        groups = build_param_groups(model, plan.strategy, plan.lr_decay)
        cbs = [Unfreezer(plan.strategy, ft.unfreeze_every), _RecordFinetune(record), *callbacks]
        if plan.step_clip > 0:
            cbs.append(StepClip(model, plan.step_clip))  # last, so the others' checkpoint keys stay
        result = fit(run_cfg, model=model, param_groups=groups, callbacks=cbs, resume=resume, data=bundle)
    return FinetuneResult(**vars(result), plan=plan)


def _plan(cfg: TrainConfig, bundle, info: dict[str, Any], distributed: bool, say: Callable[[str], None]):
    """The plan for this data and these weights, said line by line with its reasons."""
    if info.get("preprocess"):
        say(f"preprocess from the weights: input {bundle.preprocess['input_size']}, "
            f"mean {[round(m, 4) for m in bundle.preprocess['mean']]}, "
            f"std {[round(s, 4) for s in bundle.preprocess['std']]}")  # fmt: skip
    facts = DataFacts.from_bundle(bundle, cfg.data.limit_train)
    plan = plan_finetune(cfg, facts, WeightsFacts.from_info(cfg.finetune.pretrained, info),
                         on_cpu=_is_cpu(cfg.device), distributed=distributed)  # fmt: skip
    say(f"plan ({plan.images_per_class:g} images per class, {facts.n_train} training images):")
    for r in plan.reasons:
        say(f"  {r}")
    return plan


def _is_cpu(device: str) -> bool:
    if device == "auto":
        return not torch.cuda.is_available()
    return device == "cpu"
