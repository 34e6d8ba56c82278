"""Headline results: a config trained over seeds, test accuracy against wall-clock time.

``run_recipe`` trains a recipe (a packaged one such as ``fmnist_fast``, or any YAML file)
once per seed with ``fit``, records the test accuracy after every epoch together with the
cumulative *training* seconds (evaluation excluded: it is measurement, not training), and
reports the mean and spread over seeds and the time to reach a target accuracy.

``measure_recipe`` is for recipes too slow to finish here (the tutorial's resnet18 at
224 px): it trains a fixed number of batches with the same engine and extrapolates the
epoch time from the measured time per batch.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..models import fused as fused_bn
from .tables import describe_machine, machine_info, write_json


def time_to_target(records: Sequence[dict], target: float) -> float | None:
    """Training seconds until the test accuracy first reached ``target`` (None: never).

    Args:
        records: per-epoch dicts with ``test_acc`` (0..1) and cumulative ``train_seconds``.
        target: accuracy in 0..1.
    """
    for r in records:
        if r["test_acc"] >= target:
            return float(r["train_seconds"])
    return None


def _load(config, overrides):
    from ..config import load_config

    return load_config(config, overrides=list(overrides))


def run_recipe(
    config: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    overrides: Sequence[str] = (),
    target: float = 0.94,
    test_every: int = 1,
    tta_flip: bool = False,
    out: str | Path = "runs/headline",
    log=print,
) -> dict:
    """Trains ``config`` once per seed and summarises test accuracy against time.

    Args:
        config: a YAML recipe.
        seeds: one run per seed (``seed=<s>`` override).
        overrides: more ``key=value`` overrides applied to every run.
        target: accuracy (0..1) whose time-to-reach is reported.
        test_every: evaluate the test set every N epochs (the last epoch always).
        tta_flip: evaluate with flip test-time augmentation.
        out: results folder: ``headline.json`` and one run folder per seed.
        log: progress lines.
    Returns:
        ``{"config", "overrides", "machine", "runs": [{"seed", "records", "test_acc",
        "train_seconds", "wall_seconds", "time_to_target"}], "summary": {...}}``.
    """
    from ..device import resolve_device
    from ..engine.build import load_data

    if not seeds:
        raise ConfigError("run_recipe needs at least one seed, received none.")
    if not 0 < target <= 1:
        raise ConfigError(f"target={target} must be an accuracy in (0, 1], e.g. 0.94.")
    out = Path(out)
    base = _load(config, overrides)  # validate before any work
    d = base.data
    bundle = load_data(base, None, base.model.in_chans or d.in_chans, log)  # as fit loads it
    if bundle.test is None:
        raise ConfigError(f"{config}: data.source={d.source!r} has no test split to report.")
    device = resolve_device(base.device)
    runs = [_run_seed(config, overrides, seed, out, bundle, device, target=target, tta_flip=tta_flip,
                      test_every=test_every, log=log) for seed in seeds]  # fmt: skip
    res = {
        "config": str(config),
        "overrides": list(overrides),
        "resolved": base.to_dict(),
        "target": target,
        "tta_flip": tta_flip,
        "machine": machine_info(),
        "fused_bn_kernel": fused_bn.is_enabled(),  # on for bf16 channels_last CPU training
        "runs": runs,
        "summary": summarize_runs(runs),
    }
    write_json(out / "headline.json", res)
    return res


def _run_seed(config, overrides: Sequence[str], seed: int, out: Path, bundle, device, *, target: float,
              tta_flip: bool, test_every: int, log) -> dict:  # fmt: skip
    """One seed of ``run_recipe``: trains with the test-accuracy callback and returns the
    seed's entry of ``runs`` (its records also go to ``out/seed<s>_test.jsonl`` as they come)."""
    from ..data import make_loader
    from ..engine import fit
    from .evaluation import test_eval_callback

    cfg = _load(config, [*overrides, f"seed={seed}", f"out={out / f'seed{seed}'}", "overwrite=true",
                         "eval_test=false"])  # fmt: skip
    test_loader = make_loader(bundle.test, batch_size=512, train=False, preprocess=bundle.preprocess,
                              device=device)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"seed{seed}_test.jsonl"
    partial.unlink(missing_ok=True)
    cb = test_eval_callback(test_loader, tta_flip=tta_flip, every=test_every, records_path=partial)
    log(f"--- {config} seed {seed}")
    result = fit(cfg, callbacks=[cb], data=bundle)
    recs = cb.records
    return {
        "seed": seed,
        "records": recs,
        "test_acc": recs[-1]["test_acc"],
        "test_acc_plain": recs[-1]["test_acc_plain"],
        "train_seconds": recs[-1]["train_seconds"],
        "wall_seconds": result.wall_time_s,
        "images_per_s": result.images_per_s,
        "time_to_target": time_to_target(recs, target),
        "run_dir": str(result.run_dir),
    }  # fmt: skip


def summarize_runs(runs: Sequence[dict]) -> dict:
    """Mean and standard deviation over seeds; time-to-target is the mean over the seeds that
    reached it (None if any seed did not: a recipe "reaches" the target only if all do)."""
    accs = [r["test_acc"] for r in runs]
    plain = [r.get("test_acc_plain", r["test_acc"]) for r in runs]
    secs = [r["train_seconds"] for r in runs]
    walls = [r["wall_seconds"] for r in runs]
    ttt = [r["time_to_target"] for r in runs]
    return {
        "seeds": len(runs),
        "test_acc_mean": statistics.fmean(accs),
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "test_acc_plain_mean": statistics.fmean(plain),  # without TTA (= test_acc without it)
        "train_seconds_mean": statistics.fmean(secs),
        "wall_seconds_mean": statistics.fmean(walls),
        "time_to_target_mean": None if any(t is None for t in ttt) else statistics.fmean(ttt),
    }


def describe_result(res: dict) -> str:
    """One line for ``run_recipe``'s result: accuracy over the seeds, and the time to the
    target per seed, or which seeds never reached it."""
    s, runs, target = res["summary"], res["runs"], 100 * res["target"]
    tta = " with flip TTA" if res.get("tta_flip") else ""
    line = (f"test acc{tta} {100 * s['test_acc_mean']:.2f} ± {100 * s['test_acc_std']:.2f}% over "
            f"{s['seeds']} seed(s); {s['train_seconds_mean']:.0f} training seconds on average; ")  # fmt: skip
    missed = [r for r in runs if r["time_to_target"] is None]
    if missed:
        who = ", ".join(f"seed {r['seed']} ended at {100 * r['test_acc']:.2f}%" for r in missed)
        verdict = "reached by no seed" if len(missed) == len(runs) else "not reached by every seed"
        return line + f"{target:g}% {verdict} ({who})"
    each = ", ".join(f"{r['time_to_target']:.0f}" for r in runs)
    mean = s["time_to_target_mean"]
    return line + f"{target:g}% after {mean:.0f} s ({mean / 60:.1f} min) on average (per seed: {each} s)"


def measure_recipe(
    config: str | Path,
    *,
    batches: int = 20,
    overrides: Sequence[str] = (),
    out: str | Path = "runs/headline-timing",
    log=print,
) -> dict:
    """Times ``batches`` training steps of a recipe and extrapolates a full epoch and run.

    The steps run through ``fit`` itself (same model, optimizer, precision and loader), on a
    seeded random subset of ``batches * batch_size`` training images; the first step's
    one-off setup is included, so the estimate errs on the slow side.

    Args:
        config: a YAML recipe.
        batches: training steps to time (>= 2).
        overrides: ``key=value`` overrides.
        out: run folder of the timing run (``timing.json`` lands there too).
        log: progress lines.
    Returns:
        ``{"seconds_per_batch", "batches_per_epoch", "epoch_seconds", "run_seconds",
        "images_per_s", "machine", "machine_line", ...}``.
    """
    from ..engine import fit
    from ..engine.build import load_data

    if batches < 2:
        raise ConfigError(f"--time-batches must be at least 2, received {batches}.")
    base = _load(config, overrides)
    d = base.data
    bundle = load_data(base, None, base.model.in_chans or d.in_chans, log)  # as fit loads it
    n = batches * d.batch_size
    cfg = _load(config, [*overrides, "epochs=1", f"data.limit_train={n}", "data.limit_val=64",
                         "eval_test=false", f"out={out}", "overwrite=true"])  # fmt: skip
    result = fit(cfg, data=bundle)
    seconds = float(result.history[0]["seconds"])
    spb = seconds / batches
    per_epoch = math.ceil(len(bundle.train) / d.batch_size)
    info = machine_info()
    res = {
        "config": str(config),
        "overrides": list(overrides),
        "batches_timed": batches,
        "batch_size": d.batch_size,
        "seconds_per_batch": spb,
        "batches_per_epoch": per_epoch,
        "epoch_seconds": spb * per_epoch,
        "run_seconds": spb * per_epoch * base.epochs,
        "epochs": base.epochs,
        "images_per_s": d.batch_size / spb,
        "machine": info,
        "machine_line": describe_machine(info),
    }
    write_json(Path(out) / "timing.json", res)
    return res
