r"""Accuracy sweep for the Fashion-MNIST headline recipes (docs/results/fashion-mnist.md).

Which recipe reaches 94% in the least CPU time is a question of two measurements: the test
accuracy a recipe reaches after E epochs (the same on any device, up to run-to-run noise)
and the CPU time per epoch (measured on the CPU itself). This script answers the first one
for many recipes at once, running jobs in parallel processes; on a GPU the whole grid takes
a few minutes. The wall times it records are the sweep device's, not the CPU's.

    python scripts/sweep_headline.py --out runs/sweep --device cuda --workers 8 --deadline 480
    python scripts/sweep_headline.py --out runs/sweep --only r20_e5 --device cpu   # one job

The second measurement and the figure that joins them:

    python scripts/sweep_headline.py --cpu-cost docs/results/data/fmnist_cpu_cost.json
    python scripts/sweep_headline.py --figure docs/results/data/fmnist_sweep_h100.json \
        docs/results/data/fmnist_cpu_cost.json docs/results/img/fmnist_fast_sweep.png
    python scripts/sweep_headline.py --figure-headline docs/results/data/fmnist_sweep_h100.json \
        runs/exp_quiet1/fmnist_best_timing/timing.json runs/exp_quiet1/tutorial_recipe_timing/timing.json \
        docs/results/img/fmnist_accuracy_vs_time.png \
        "best (wrn28_2)=docs/results/data/fmnist_best_cpu.json" \
        "fast=docs/results/data/fmnist_fast_cpu_seed0_fused.json+docs/results/data/fmnist_fast_cpu_seeds12_fused.json"
    # (each line LABEL=headline.json[+headline.json...]; the full list: run_experiments.sh figures)

Each job writes ``<out>/<job>.jsonl``: one line per epoch with test accuracy (plain and with
flip test-time augmentation), train loss and cumulative training seconds; ``<out>/sweep.json``
collects the last line and the accuracy curve of every job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Extra architectures tried here, built by the same ``ResNet`` class as every registered one:
# basic blocks, cifar stem, projection shortcuts; name = depth and the first stage's width
# (wrn16_2, also tried, is registered).
EXTRA_ARCHS = {
    "resnet8_32": dict(block="basic", layers=(1, 1, 1), widths=(32, 64, 128), shortcut="B"),
    "resnet14_32": dict(block="basic", layers=(2, 2, 2), widths=(32, 64, 128), shortcut="B"),
}

ROOT = Path(__file__).resolve().parent.parent
FAST = "fmnist_fast"
BEST = "fmnist_best"
TUTORIAL = "tutorial_recipe"


def _job(config, epochs, *overrides):
    # Jobs on the fast recipe name their net: the recipe's own net has changed before.
    return {"config": config, "overrides": [f"epochs={epochs}", *overrides]}


# name -> recipe; the long jobs first so that they start first.
JOBS = {
    "best_wrn28_2_e32": _job(BEST, 32),
    "tutorial_e10": _job(TUTORIAL, 10),
    "r20_e5": _job(FAST, 5, "model.name=resnet20"),
    "r20_e6": _job(FAST, 6, "model.name=resnet20"),
    "r20_e8": _job(FAST, 8, "model.name=resnet20"),
    "r20_e10": _job(FAST, 10, "model.name=resnet20"),
    "r20_e15": _job(FAST, 15, "model.name=resnet20"),
    "r20_e20": _job(FAST, 20, "model.name=resnet20"),
    "r20_bs256_e6": _job(FAST, 6, "model.name=resnet20", "data.batch_size=256", "optim.lr=0.4"),
    "r20_bs256_e8": _job(FAST, 8, "model.name=resnet20", "data.batch_size=256", "optim.lr=0.4"),
    "r20_bs512_e6": _job(FAST, 6, "model.name=resnet20", "data.batch_size=512", "optim.lr=0.8"),
    "r20_lr01_e6": _job(FAST, 6, "model.name=resnet20", "optim.lr=0.1"),
    "r20_lr04_e6": _job(FAST, 6, "model.name=resnet20", "optim.lr=0.4"),
    "r20_ema_e6": _job(FAST, 6, "model.name=resnet20", "ema=0.998"),
    "r20_ls0_e6": _job(FAST, 6, "model.name=resnet20", "label_smoothing=0.0"),
    "r8_32_e6": _job(FAST, 6, "model.name=resnet8_32"),
    "r8_32_e10": _job(FAST, 10, "model.name=resnet8_32"),
    "r14_32_e4": _job(FAST, 4, "model.name=resnet14_32"),
    "r14_32_e6": _job(FAST, 6, "model.name=resnet14_32"),
    "wrn16_2_e4": _job(FAST, 4, "model.name=wrn16_2"),
    "wrn16_2_e6": _job(FAST, 6, "model.name=wrn16_2"),
    "wrn16_4_e3": _job(FAST, 3, "model.name=wrn16_4"),
    "wrn16_4_e5": _job(FAST, 5, "model.name=wrn16_4"),
    "r32_e5": _job(FAST, 5, "model.name=resnet32"),
    "wrn28_2_e6": _job(FAST, 6, "model.name=wrn28_2"),
    "wrn16_2_e10": _job(FAST, 10, "model.name=wrn16_2"),
    "wrn16_2_e15": _job(FAST, 15, "model.name=wrn16_2"),
    "wrn28_2_e10": _job(FAST, 10, "model.name=wrn28_2"),
    "wrn28_2_e12": _job(FAST, 12, "model.name=wrn28_2"),
    "wrn16_4_e8": _job(FAST, 8, "model.name=wrn16_4"),
    "r14_32_e10": _job(FAST, 10, "model.name=resnet14_32"),
    **{f"wrn16_2_e12_s{s}": _job(FAST, 12, "model.name=wrn16_2", f"seed={s}") for s in (0, 1, 2)},
    **{f"wrn16_2_e15_s{s}": _job(FAST, 15, "model.name=wrn16_2", f"seed={s}") for s in (1, 2)},
}


def register_extra_archs() -> None:
    from reslab.models.registry import list_models
    from reslab.models.table import ModelSpec, register

    for name, arch in EXTRA_ARCHS.items():
        if name not in list_models():
            spec = ModelSpec(dict(arch, stem="cifar"), "cifar", "reslab sweep",
                             input_size=(3, 32, 32), num_classes=10, crop_pct=1.0)  # fmt: skip
            register(name, spec)


def run_one(name: str, out: Path, device: str, threads: int, data_dir: str | None) -> None:
    """Trains job ``name`` and appends a record per epoch to ``out/<name>.jsonl``."""
    import torch

    from reslab.config import load_config
    from reslab.data import load_dataset, make_loader
    from reslab.device import resolve_device
    from reslab.engine import Callback, fit
    from reslab.experiments.evaluation import accuracy_on

    register_extra_archs()
    job = JOBS[name]
    src = [f"data.source=fashion-mnist:{data_dir}"] if data_dir else []
    overrides = ["seed=0", *job["overrides"], *src, f"device={device}", f"threads={threads}",
                 f"out={out / 'runs' / name}", "overwrite=true", "eval_test=false"]  # fmt: skip
    cfg = load_config(job["config"], overrides=overrides)
    d = cfg.data
    bundle = load_dataset(d.source, val_fraction=d.val_fraction, seed=cfg.seed,
                          image_size=d.image_size, in_chans=cfg.model.in_chans or d.in_chans,
                          in_memory=d.in_memory, check=False, log=lambda *_: None)  # fmt: skip
    dev = resolve_device(cfg.device)
    test = make_loader(bundle.test, batch_size=500, train=False, preprocess=bundle.preprocess,
                       device=dev)  # fmt: skip
    path = out / f"{name}.jsonl"
    path.unlink(missing_ok=True)

    class Record(Callback):
        seconds = 0.0

        def on_epoch_end(self, trainer, epoch, metrics):
            self.seconds += float(metrics.get("seconds") or 0.0)
            ema = getattr(trainer, "ema", None)
            model = ema.module if ema is not None else trainer.model
            r = accuracy_on(model, test, trainer.precision, tta_flip=True)
            rec = {"job": name, "epoch": epoch + 1, "epochs": cfg.epochs,
                   "test_acc": r["acc_plain"], "test_acc_tta": r["acc"],
                   "train_loss": metrics.get("train_loss"), "train_seconds": self.seconds,
                   "images_per_s": metrics.get("images_per_s"), "device": str(dev),
                   "config": job["config"], "overrides": job["overrides"]}  # fmt: skip
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    torch.manual_seed(0)
    fit(cfg, callbacks=[Record()], data=bundle)


COST_MODELS = ("resnet20", "resnet32", "resnet8_32", "resnet14_32", "wrn16_2", "wrn28_2", "wrn16_4")


def cpu_cost(path: Path, batches: int, rounds: int) -> dict:
    """CPU seconds per Fashion-MNIST epoch of each net in ``COST_MODELS`` with the fast recipe.

    Every round times ``batches`` training steps of each net through ``fit`` (the
    ``reslab experiment headline --time-batches`` measurement), the nets interleaved so that
    a change in the machine's load hits all of them; the median round is kept.
    """
    import statistics

    from reslab.experiments.headline import measure_recipe

    register_extra_archs()
    times: dict[str, list[float]] = {m: [] for m in COST_MODELS}
    res = {}
    for r in range(rounds):
        for m in COST_MODELS:
            t = measure_recipe(FAST, batches=batches, overrides=[f"model.name={m}"],
                               out=f"/tmp/reslab_cost_{m}", log=lambda *_: None)  # fmt: skip
            times[m].append(t["epoch_seconds"])
            res["machine_line"] = t["machine_line"]
            print(f"round {r + 1}: {m:12s} {t['epoch_seconds']:6.1f} s/epoch", flush=True)
    res["threads"] = int(os.environ.get("OMP_NUM_THREADS", "0")) or "default"
    res["batches_per_round"] = batches
    res["models"] = {m: {"epoch_seconds": statistics.median(v), "rounds": v} for m, v in times.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return res


def figure(sweep: Path, cost: Path, png: Path) -> Path:
    """Final test accuracy of the fast recipe's schedules against estimated CPU minutes."""
    from reslab.experiments.plots import plot_accuracy_vs_cost

    jobs = json.loads(sweep.read_text())["jobs"]
    c = json.loads(cost.read_text())
    per_epoch = {m: v["epoch_seconds"] for m, v in c["models"].items()}
    acc: dict[tuple[str, int], list[float]] = {}
    for j in jobs.values():
        extra = [o for o in j["overrides"] if not o.startswith(("epochs=", "model.name=", "seed="))]
        if not j["config"].endswith("fmnist_fast.yaml") or extra or j["epoch"] != j["epochs"]:
            continue  # only the recipe as written, run to its end
        model = next(o.split("=")[1] for o in j["overrides"] if o.startswith("model.name="))
        acc.setdefault((model, j["epochs"]), []).append(100 * j["test_acc"])
    points: dict[str, list] = {}
    for (model, epochs), a in sorted(acc.items()):
        if model in per_epoch:
            label = f"{model} ({per_epoch[model]:.0f} s/epoch)"
            points.setdefault(label, []).append((epochs * per_epoch[model] / 60, sum(a) / len(a)))
    return plot_accuracy_vs_cost(
        points, png, target=94.0, budget=5.0,
        xlabel=f"CPU minutes = epochs x time per epoch measured here (threads: {c['threads']})",
        title="Fashion-MNIST, fast recipe: accuracy at the end of E epochs",
    )


def _measured_curve(spec: str) -> tuple[str, str, dict]:
    """``PATH[+PATH...]`` or ``LABEL=PATH[+PATH...]`` of ``headline.json`` files -> (recipe,
    label, curve): the mean over every seed in them of the test accuracy (without TTA) and
    of the cumulative training seconds, epoch by epoch."""
    name, _, paths = spec.rpartition("=")
    heads = [json.loads(Path(p).read_text()) for p in paths.split("+")]
    runs = [run for h in heads for run in h["runs"]]
    h = heads[0]
    recipe = Path(h["config"]).stem.replace("fmnist_", "")
    threads = h["resolved"].get("threads") or h["machine"]["cores"]
    seeds = sorted(run["seed"] for run in runs)
    who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"
    label = f"{name or recipe + ' (' + h['resolved']['model']['name'] + ')'}, {who}, {threads} thread(s): measured here"
    n = min(len(run["records"]) for run in runs)

    def mean(key):
        return [sum(key(run["records"][i]) for run in runs) / len(runs) for i in range(n)]

    curve = {"seconds": mean(lambda r: r["train_seconds"]),
             "accuracy": mean(lambda r: 100 * r.get("test_acc_plain", r["test_acc"]))}  # fmt: skip
    return recipe, label, curve


def figure_headline(sweep: Path, best: Path, tutorial: Path, png: Path, measured: list) -> Path:
    """The three recipes' test accuracy against CPU training time, on one log-scaled axis.

    ``measured`` are recipes trained on this CPU, drawn solid, each ``PATH[+PATH...]`` or
    ``LABEL=PATH[+PATH...]`` of ``headline.json`` files: one line per entry, the mean over
    its seeds. A recipe without one (the tutorial's does not fit a session) is drawn
    dotted: its accuracy per epoch from the sweep (another device) at the CPU seconds per
    epoch of its ``timing.json`` (measured here).
    """
    from reslab.experiments.plots import plot_accuracy_vs_time

    jobs = json.loads(sweep.read_text())["jobs"]
    curves, done = {}, set()
    for spec in measured:
        recipe, label, curve = _measured_curve(str(spec))
        done.add(recipe)
        curves[label] = curve
    for recipe, label, job, timing in (("best", "best (wrn28_2, 32 epochs)", "best_wrn28_2_e32", best),
                                       ("tutorial_recipe", "tutorial (resnet18 at 224 px, fp32)", "tutorial_e10", tutorial)):
        if recipe in done:
            continue
        per_epoch = json.loads(timing.read_text())["epoch_seconds"]
        j = jobs[job]
        curve = j.get("curve") or [[j["epoch"], j["test_acc"], j["test_acc_tta"]]]
        curves[f"{label}, GPU accuracy x CPU epoch time"] = {
            "seconds": [e * per_epoch for e, _, _ in curve],
            "accuracy": [100 * a for _, a, _ in curve],
            "extrapolated": True,
        }
    return plot_accuracy_vs_time(curves, png, target=94.0, log_x=True, ylim=(80.0, 95.5),
                                 title="Fashion-MNIST test accuracy against CPU training time")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per job")
    p.add_argument("--deadline", type=float, default=0, help="stop every job after S seconds")
    p.add_argument("--only", nargs="*", help="job names (default: all)")
    p.add_argument("--data", help="Fashion-MNIST folder (default: reslab's search path)")
    p.add_argument("--cpu-cost", type=Path, metavar="JSON",
                   help="instead: time each net's epoch on this CPU and write JSON")
    p.add_argument("--batches", type=int, default=30, help="--cpu-cost: steps timed per round")
    p.add_argument("--rounds", type=int, default=3, help="--cpu-cost: interleaved rounds")
    p.add_argument("--figure", nargs=3, type=Path, metavar=("SWEEP_JSON", "COST_JSON", "PNG"),
                   help="instead: draw accuracy against CPU minutes")
    p.add_argument("--figure-headline", nargs="+", metavar="PATH",
                   help="instead: draw the three recipes' accuracy against CPU time; paths: "
                        "SWEEP_JSON BEST_TIMING TUTORIAL_TIMING PNG, then one [LABEL=]HEADLINE[+HEADLINE...] "
                        "per line of recipes trained here (the mean over their seeds)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.cpu_cost:
        cpu_cost(a.cpu_cost, a.batches, a.rounds)
        return 0
    if a.figure:
        print(figure(*a.figure))
        return 0
    if a.figure_headline:
        if len(a.figure_headline) < 5:
            p.error("--figure-headline needs SWEEP_JSON BEST_TIMING TUTORIAL_TIMING PNG HEADLINE...")
        print(figure_headline(*map(Path, a.figure_headline[:4]), a.figure_headline[4:]))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    if a.one:
        run_one(a.one, a.out, a.device, a.threads, a.data)
        return 0
    names = a.only or list(JOBS)
    unknown = sorted(set(names) - set(JOBS))
    if unknown:
        p.error(f"unknown job(s) {unknown}; known: {sorted(JOBS)}")
    start = time.time()
    pending, running = list(names), {}
    while pending or running:
        while pending and len(running) < a.workers:
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "--one", name, "--out", str(a.out),
                   "--device", a.device, "--threads", str(a.threads)]  # fmt: skip
            if a.data:
                cmd += ["--data", a.data]
            log = open(a.out / f"{name}.log", "w")
            running[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})  # fmt: skip
            print(f"{time.time() - start:6.0f}s start {name}", flush=True)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{time.time() - start:6.0f}s done  {name} rc={proc.returncode}", flush=True)
                del running[name]
        if a.deadline and time.time() - start > a.deadline:
            for name, proc in running.items():
                proc.kill()
                print(f"{time.time() - start:6.0f}s killed {name} (deadline)", flush=True)
            break
        time.sleep(1)
    jobs = {}
    for name in names:
        f = a.out / f"{name}.jsonl"
        recs = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        if not recs:
            continue
        last = recs[-1]
        jobs[name] = {**last, "config": os.path.relpath(last["config"], ROOT),
                      "curve": [[r["epoch"], r["test_acc"], r["test_acc_tta"]] for r in recs]}  # fmt: skip
        print(f"{name:18s} epoch {last['epoch']:2d}/{last['epochs']:2d}  "
              f"test {100 * last['test_acc']:.2f}%  tta {100 * last['test_acc_tta']:.2f}%  "
              f"{last['train_seconds']:.0f} s")  # fmt: skip
    out = {"device": jobs and next(iter(jobs.values()))["device"], "command": " ".join(sys.argv),
           "jobs": jobs}  # fmt: skip
    (a.out / "sweep.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
