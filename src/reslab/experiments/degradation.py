"""The degradation experiment of He et al. 2015 (section 4.2, Figure 6).

Claim: a deeper *plain* network (no shortcuts) has a higher training error than a shallower
one, even though it could copy the shallow one and set its extra layers to the identity;
the same depths with shortcuts (ResNets) get better with depth. Paper, CIFAR-10 test error:
resnet20 8.75%, resnet56 6.97%; plain-56 worse than plain-20 in training and test error.

``run_degradation`` trains plain20, plain56, resnet20 and resnet56 with one recipe and one
budget, records training and test error per epoch, and measures per-layer gradient norms
at initialisation and after training (``gradients.py``) on one fixed real batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.splits import stratified_subset
from ..errors import ConfigError
from . import plots
from .gradients import conv_grad_norms, early_late_ratio, gradient_profile, spread
from .tables import describe_machine, machine_info, markdown_table, write_json

DEFAULT_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
PAPER_CIFAR10_TEST_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97}

# The paper's recipe (section 4.2) scaled to a short budget: SGD with momentum 0.9, lr 0.1,
# batch 128, flip + 4-pixel pad-and-crop; cosine instead of the 32k/48k-iteration steps
# because the budget is a few epochs, and weight decay 5e-4 (the paper's 1e-4 is tuned for
# 64k iterations). The same recipe for all four nets is what matters.
RECIPE = {
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "label_smoothing": 0.0,
}


def _check_args(models: Sequence[str], epochs: int, subset: int | None, test_subset: int | None,
                val_subset: int | None = None):
    from ..models import list_models

    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise ConfigError(
            f"degradation: unknown model(s) {unknown}; expected names from `reslab models`, "
            f"e.g. {', '.join(DEFAULT_MODELS)}."
        )
    if not models:
        raise ConfigError("degradation needs at least one model, e.g. --models plain20 plain56.")
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, received {epochs}.")
    for name, v in (("--subset", subset), ("--test-subset", test_subset), ("--val-subset", val_subset)):
        if v is not None and v < 10:
            raise ConfigError(f"{name} must be at least 10 images (one per class), received {v}.")


def train_one(
    name: str,
    source: str,
    *,
    epochs: int,
    out: Path,
    seed: int,
    batch_size: int,
    device: str,
    precision: str,
    in_chans: int,
    num_classes: int,
    test_loader_fn: Callable,
    bundle=None,
    subset: int | None = None,
    val_subset: int | None = None,
    recipe: dict = RECIPE,
    log=print,
) -> dict:
    """Trains one model with ``fit`` and the shared recipe; returns curves and the model."""
    from ..config import load_config
    from ..engine import fit
    from ..models import create_model
    from .evaluation import test_eval_callback

    overrides = {
        "data": {"source": source, "batch_size": batch_size, "limit_train": subset, "limit_val": val_subset},
        "model": {"name": name, "in_chans": in_chans},
        "epochs": epochs,
        "seed": seed,
        "device": device,
        "precision": precision,
        "out": str(out / name),
        "overwrite": True,
        "eval_test": False,  # the callback already measures test error after every epoch
        **recipe,
    }
    cfg = load_config(None, overrides=overrides)
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    cb = test_eval_callback(test_loader_fn(cfg))
    t0 = time.perf_counter()
    result = fit(cfg, model=model, callbacks=[cb], data=bundle)
    wall = time.perf_counter() - t0
    recs = cb.records
    return {
        "name": name,
        "model": cb.model,
        "run_dir": str(result.run_dir),
        "epoch": [r["epoch"] for r in recs],
        "train_error": [100 * (1 - r["train_acc"]) for r in recs],
        "test_error": [100 * (1 - r["test_acc"]) for r in recs],
        "train_seconds": recs[-1]["train_seconds"] if recs else wall,
        "wall_seconds": wall,
        "images_per_s": result.images_per_s,
    }


def _study_data(dataset: str, seed: int, test_subset: int | None, grad_batch: int, device: str, log):
    """The study's data: the bundle, its (subset) test split, a test-loader factory for
    ``train_one``, and one fixed real batch ``(x, y)`` for every gradient measurement (the
    first eval-loader batch of a seeded, class-balanced pick of training images)."""
    from ..data import load_dataset, make_loader
    from ..device import resolve_device

    bundle = load_dataset(dataset, seed=seed, log=log)
    if bundle.test is None:
        raise ConfigError(f"degradation needs a test split; {dataset!r} has none (add root/test/<class>/).")
    dev = resolve_device(device)
    test = bundle.test
    if test_subset is not None:
        test = test.subset(stratified_subset(test.labels, test_subset, seed), name="test")

    def test_loader_fn(cfg):
        return make_loader(
            test, batch_size=512, train=False, preprocess=bundle.preprocess, seed=seed, device=str(dev)
        )

    gidx = stratified_subset(bundle.train.labels, grad_batch, seed + 1)
    grad_batch_xy = next(iter(make_loader(
        bundle.train.subset(gidx), batch_size=grad_batch, train=False, preprocess=bundle.preprocess,
        seed=seed, device=str(dev),
    )))  # fmt: skip
    return bundle, test, test_loader_fn, grad_batch_xy


def run_degradation(
    dataset: str = "fashion-mnist",
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    epochs: int = 10,
    subset: int | None = None,
    test_subset: int | None = None,
    val_subset: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    grad_batch: int = 256,
    grad_seeds: Sequence[int] = (0, 1, 2),
    out: str | Path = "runs/degradation",
    log=print,
) -> dict:
    """Trains plain and residual nets of two depths with one recipe and budget.

    Args:
        dataset: any ``load_dataset`` source; ``fashion-mnist`` (default), ``cifar10`` when
            its files are available, ``digits`` for a seconds-long smoke run.
        models: architectures to compare (default plain20, plain56, resnet20, resnet56).
        epochs: training epochs for every model.
        subset: training images to use (class-balanced), None for all.
        test_subset: test images to evaluate each epoch, None for the whole test split.
        val_subset: validation images evaluated each epoch by ``fit``, None for all.
        batch_size: images per step (the paper: 128).
        seed: data order, augmentation and initialisation seed.
        device, precision: as in the run config (``auto`` picks bf16 + channels_last on
            CPUs with AMX/AVX512-BF16).
        grad_batch: images in the fixed batch used for the gradient-norm profiles.
        grad_seeds: initialisations averaged in the at-init profiles.
        out: output folder: ``degradation.json``, ``table.md``, PNG figures, run folders.
        log: where progress lines go.
    Returns:
        The results dict written to ``out/degradation.json``.
    """
    from ..models import count_params, create_model

    models = list(models)
    _check_args(models, epochs, subset, test_subset, val_subset)
    if not grad_seeds:
        raise ConfigError("degradation needs at least one gradient seed (grad_seeds).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle, test, test_loader_fn, (gx, gy) = _study_data(dataset, seed, test_subset, grad_batch, device, log)
    in_chans, num_classes = bundle.in_chans, len(bundle.classes)
    train_size = min(subset, len(bundle.train)) if subset else len(bundle.train)

    def builder(name):
        return lambda: create_model(name, num_classes=num_classes, in_chans=in_chans)

    grad_init = {m: gradient_profile(builder(m), gx, gy, seeds=tuple(grad_seeds)) for m in models}
    runs = []
    for name in models:
        log(f"--- {name}: {epochs} epochs on {train_size} images")
        r = train_one(
            name, dataset, epochs=epochs, out=out / "runs", seed=seed, batch_size=batch_size,
            device=device, precision=precision, in_chans=in_chans, num_classes=num_classes,
            test_loader_fn=test_loader_fn, bundle=bundle, subset=subset, val_subset=val_subset, log=log,
        )  # fmt: skip
        trained = r.pop("model")
        r["params"] = count_params(trained)
        # the same fixed batch as at initialisation, now through the trained weights
        r["grad_trained"] = [g.grad_norm for g in conv_grad_norms(trained, gx, gy)]
        runs.append(r)
        # written after every model, so a run stopped by a time limit keeps what it finished
        results = summarize(
            runs, grad_init, dataset=dataset, epochs=epochs, subset=subset, test_subset=test_subset,
            train_size=train_size, test_size=len(test), batch_size=batch_size, seed=seed,
        )  # fmt: skip
        write_outputs(results, out)
    return results


def summarize(runs: list[dict], grad_init: dict, **setup) -> dict:
    """Collects curves, the final table and gradient statistics into one JSON-able dict."""
    table = []
    for r in runs:
        table.append({
            "model": r["name"],
            "params": r.get("params"),
            "train_error": r["train_error"][-1],
            "test_error": r["test_error"][-1],
            "best_test_error": min(r["test_error"]),
            "train_seconds": r["train_seconds"],
            "paper_cifar10_test_error": PAPER_CIFAR10_TEST_ERROR.get(r["name"]),
            "grad_spread_init": spread(grad_init[r["name"]]["grad_norm"]),
            "grad_early_late_init": early_late_ratio(grad_init[r["name"]]["grad_norm"]),
        })  # fmt: skip
    return {
        "setup": {**setup, "recipe": RECIPE},
        "machine": machine_info(),
        "table": table,
        "curves": {r["name"]: {k: r[k] for k in ("epoch", "train_error", "test_error")} for r in runs},
        "grad_init": grad_init,
        "grad_trained": {r["name"]: r["grad_trained"] for r in runs if r.get("grad_trained")},
        "run_dirs": {r["name"]: r["run_dir"] for r in runs},
    }


def merge_results(parts: Sequence[dict]) -> dict:
    """Joins the results of runs that trained different models with the same setup (one
    process or machine per model, run side by side) into one comparison.

    Args:
        parts: results dicts (``degradation.json`` contents), in the order of the table.
    Returns:
        One results dict, as ``run_degradation`` would have written for all the models.
    Raises:
        ConfigError: when the setups differ (another dataset, budget or seed) or a model
            appears twice.
    """
    if not parts:
        raise ConfigError("nothing to merge: pass at least one degradation.json.")
    setup = parts[0]["setup"]
    names: list[str] = []
    for part in parts:
        if part["setup"] != setup:
            diff = sorted(k for k in set(setup) | set(part["setup"]) if setup.get(k) != part["setup"].get(k))
            raise ConfigError(f"cannot merge runs with different setups (they differ in {diff}); "
                              "rerun them with the same dataset, epochs, subsets, batch size and seed.")  # fmt: skip
        names += [row["model"] for row in part["table"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"cannot merge: {twice} trained in more than one run.")
    merged = {"setup": setup, "machine": parts[0]["machine"], "table": []}
    for key in ("curves", "grad_init", "grad_trained", "run_dirs"):
        merged[key] = {}
    for part in parts:
        merged["table"] += part["table"]
        for key in ("curves", "grad_init", "grad_trained", "run_dirs"):
            merged[key].update(part.get(key, {}))
    return merged


TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("params", "params", "{:,}"),
    ("train_error", "train err (%)", "{:.2f}"),
    ("test_error", "test err (%)", "{:.2f}"),
    ("best_test_error", "best test err (%)", "{:.2f}"),
    ("train_seconds", "train time (s)", "{:.0f}"),
    ("grad_early_late_init", "grad early/late at init", "{:.1f}"),
    ("paper_cifar10_test_error", "paper CIFAR-10 test err (%)", "{:.2f}"),
)


def write_outputs(results: dict, out: str | Path) -> dict[str, Path]:
    """Writes ``degradation.json``, ``table.md`` and the three figures into ``out``.

    Args:
        results: as returned by ``run_degradation`` (or read back from its JSON).
        out: folder.
    Returns:
        ``{"json", "table", "curves", "grad_init", "grad_trained"}`` -> written paths.
    """
    out = Path(out)
    s = results["setup"]
    budget = f"{s['dataset']}, {s['train_size']} train images, {s['epochs']} epochs"
    paths = {"json": write_json(out / "degradation.json", results)}
    table = markdown_table(results["table"], TABLE_COLUMNS)
    (out / "table.md").write_text(table + f"\nMachine: {describe_machine(results['machine'])}\n")
    paths["table"] = out / "table.md"
    paths["curves"] = plots.plot_error_curves(results["curves"], out / "degradation_curves.png", budget)
    paths["grad_init"] = plots.plot_grad_norms(
        {m: g["grad_norm"] for m, g in results["grad_init"].items()},
        out / "grad_norms_init.png",
        f"At initialisation ({len(next(iter(results['grad_init'].values()))['per_seed'])} seeds, one real batch)",
    )
    if results.get("grad_trained"):
        paths["grad_trained"] = plots.plot_grad_norms(
            results["grad_trained"], out / "grad_norms_trained.png", f"After training ({budget})"
        )
    return paths
